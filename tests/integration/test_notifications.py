"""Notifications and tenant settings (issue 14) through the HTTP API, with execution in the same process,
against a real SecantusDB process, NATS JetStream and webhook receivers on 127.0.0.1.

Each test has its own database and NATS prefix (its streams are deleted at its end), and two tenants:
``dev`` (the app's development key) and ``other``, to check isolation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.conftest import OTHER_TENANT, Api, running_api
from tests.support.waiting import wait_until

from schedsvc import names
from schedsvc.bus import NatsRunBus
from schedsvc.client import verify_notification
from schedsvc.config import Settings
from schedsvc.domain.models import RunMessage
from schedsvc.domain.notifications import run_failed
from schedsvc.domain.timing import MissedFire
from schedsvc.execution.notifications import NotificationReporter
from schedsvc.store.retention import RunRetention
from schedsvc.store.runs import MongoRunStore
from schedsvc.store.tenants import webhook_secret_text
from schedsvc.testing import Reply, WebhookReceiver
from schedsvc.wiring import Adapters, timing_service


@dataclasses.dataclass
class Env(Api):
    """The API app (with execution) and the webhook receiver its jobs and notifications call."""

    receiver: WebhookReceiver

    async def secret(self, tenant: str = "dev") -> str:
        doc = await self.db[names.TENANTS].find_one({"_id": tenant})
        return webhook_secret_text(doc["signingSecrets"][0]["secret"])

    async def create_job(self, path: str, *, max_attempts: int = 1, **extra: Any) -> str:
        body = {
            "name": f"job-{path.strip('/')}-{time.monotonic_ns()}",
            "schedule": extra.pop("schedule", {"kind": "interval", "seconds": 3600}),
            "target": {"kind": "http", "url": self.receiver.url(path)},
            "retry": {"maxAttempts": max_attempts, "minBackoffSeconds": 0.1, "maxBackoffSeconds": 0.2},
            **extra,
        }
        r = await self.client.post("/jobs", json=body, headers=self.headers)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def run_now(self, job_id: str) -> str:
        r = await self.client.post(f"/jobs/{job_id}/run", headers=self.headers)
        assert r.status_code == 202, r.text
        return str(r.json()["runId"])

    async def final_run(self, rid: str) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            r = await self.client.get(f"/runs/{rid}", headers=self.headers)
            run = r.json() if r.status_code == 200 else None
            return run if run and run["status"] in ("succeeded", "failed") else None

        return await wait_until(check)  # type: ignore[no-any-return]


async def calls_settle(receiver: WebhookReceiver, route: str, count: int, quiet: float = 1.5) -> None:
    """Wait for ``count`` calls to ``route``, then make sure no further one arrives for ``quiet`` seconds."""
    await wait_until(lambda: asyncio.sleep(0, len(receiver.calls_to(route)) >= count))
    await asyncio.sleep(quiet)
    assert len(receiver.calls_to(route)) == count, [c.body for c in receiver.calls_to(route)]


@pytest.fixture
async def env(settings: Settings) -> AsyncIterator[Env]:
    roles = frozenset({"api", "execution"})
    async with (
        WebhookReceiver() as receiver,
        running_api(settings, roles, run_ack_wait_seconds=5.0, run_retention_max_days=60) as api,
    ):
        yield Env(**vars(api), receiver=receiver)


async def test_a_run_that_fails_for_good_is_notified_once_signed(env: Env) -> None:
    env.receiver.routes["/down"] = lambda c, n: Reply(500, b"down")
    job_id = await env.create_job("/down", max_attempts=3, notify={"url": env.receiver.url("/notify")})
    rid = await env.run_now(job_id)
    run = await env.final_run(rid)
    assert run["status"] == "failed" and run["attempts"] == 3

    await calls_settle(env.receiver, "/notify", 1)  # once for the run, not once per attempt
    [call] = env.receiver.calls_to("/notify")
    assert call.method == "POST" and call.headers["content-type"] == "application/json"
    notification = verify_notification(call.headers, call.body, [await env.secret()])
    assert notification.type == "run.failed"
    assert (notification.job_id, notification.run_id, notification.attempts) == (job_id, rid, 3)
    assert notification.http_status == 500 and notification.error == "HTTP 500"
    assert notification.scheduled_at == datetime.fromisoformat(run["scheduledAt"])
    with pytest.raises(Exception, match="signature"):
        verify_notification(call.headers, call.body, [await env.secret(OTHER_TENANT)])
    metrics = (await env.client.get("/metrics")).text
    assert 'schedsvc_notifications_total{outcome="sent",type="run.failed"}' in metrics


async def test_a_recovery_is_notified_once_and_retention_follows_the_tenant(env: Env) -> None:
    r = await env.client.patch("/tenant/settings", json={"runRetentionDays": 3}, headers=env.headers)
    assert r.status_code == 200, r.text
    healthy = False
    env.receiver.routes["/flaky"] = lambda c, n: Reply(200) if healthy else Reply(503)
    job_id = await env.create_job("/flaky", notify={"url": env.receiver.url("/notify")})

    failed = await env.final_run(await env.run_now(job_id))
    assert failed["status"] == "failed"
    await calls_settle(env.receiver, "/notify", 1, quiet=0.2)
    healthy = True
    recovered_rid = await env.run_now(job_id)
    assert (await env.final_run(recovered_rid))["status"] == "succeeded"
    await calls_settle(env.receiver, "/notify", 2, quiet=0.2)
    assert (await env.final_run(await env.run_now(job_id)))["status"] == "succeeded"
    await calls_settle(env.receiver, "/notify", 2)  # still recovered: nothing more to say

    secret = await env.secret()
    events = [verify_notification(c.headers, c.body, [secret]) for c in env.receiver.calls_to("/notify")]
    assert [e.type for e in events] == ["run.failed", "job.recovered"]
    assert events[1].run_id == recovered_rid and events[1].job_id == job_id

    # The tenant's retention, not the deployment's 30 days, decides when its runs expire.
    doc = await env.db[names.RUNS].find_one({"_id": recovered_rid})
    assert doc["expireAt"] - doc["finishedAt"] == timedelta(days=3)


async def test_a_recovery_whose_worker_died_before_reporting_is_reported_by_the_redelivery(env: Env) -> None:
    """The worker that recorded the first success after a failure cleared the job's failing mark and died
    before reporting; JetStream delivers the success's message again. That redelivery reports the
    recovery (once: a further repeat is dropped by its event id), not silence."""
    job_id = await env.create_job("/ok", notify={"url": env.receiver.url("/notify")})
    rid = await env.run_now(job_id)
    assert (await env.final_run(rid))["status"] == "succeeded"  # not failing yet: nothing to report
    scheduled_ms = int(rid.rpartition(":")[2])
    scheduled = datetime.fromtimestamp(scheduled_ms / 1000, UTC)

    # What the dying worker left: a failure before this fire marked the job failing, and this success's
    # conditional write cleared the mark; the report never happened.
    ledger = MongoRunStore(env.db, RunRetention(None, env.settings))
    await ledger.mark_job_failing(job_id, scheduled - timedelta(minutes=5))
    assert await ledger.clear_job_failing(job_id, scheduled)
    await calls_settle(env.receiver, "/notify", 0, quiet=0.5)

    job = await env.db[names.JOBS].find_one({"_id": job_id})
    message = RunMessage(job_id, "dev", scheduled_ms, scheduled_ms, "manual", 0)
    bus = await NatsRunBus.connect(env.settings)
    try:
        for attempt in ("a", "b"):  # two redeliveries (new message ids, as a crash before the ack gives)
            await bus.publish_runs([message], [job["partition"]], [f"{rid}:redelivered-{attempt}"])
    finally:
        await bus.close()
    await calls_settle(env.receiver, "/notify", 1)
    [call] = env.receiver.calls_to("/notify")
    event = verify_notification(call.headers, call.body, [await env.secret()])
    assert (event.type, event.job_id, event.run_id) == ("job.recovered", job_id, rid)

    # A newer failure is not hidden by a late repeat of the older success.
    await ledger.mark_job_failing(job_id, scheduled + timedelta(minutes=5))
    assert not await ledger.clear_job_failing(job_id, scheduled)


async def test_a_failing_notification_target_does_not_change_the_run(env: Env) -> None:
    env.receiver.routes["/down"] = lambda c, n: Reply(500, b"down")
    env.receiver.routes["/notify"] = lambda c, n: Reply(hang=True)  # never answers
    job_id = await env.create_job("/down", max_attempts=2, notify={"url": env.receiver.url("/notify")})
    started = time.monotonic()
    first = await env.final_run(await env.run_now(job_id))
    second = await env.final_run(await env.run_now(job_id))
    assert time.monotonic() - started < 10  # neither waited for the hanging notification target
    assert [first["status"], first["attempts"], second["status"], second["attempts"]] == ["failed", 2, "failed", 2]
    assert len(env.receiver.calls_to("/down")) == 4
    r = await env.client.get(f"/jobs/{job_id}", headers=env.headers)
    assert r.json()["lastRunStatus"] == "failed"
    await wait_until(lambda: asyncio.sleep(0, len(env.receiver.calls_to("/notify")) >= 2))


async def test_missed_fires_are_notified_once_per_recording_to_the_tenant_default(env: Env) -> None:
    r = await env.client.patch(
        "/tenant/settings", json={"notify": {"url": env.receiver.url("/default")}}, headers=env.headers
    )
    assert r.status_code == 200, r.text
    job_id = await env.create_job("/target")  # no notify of its own: the tenant's default applies
    # The timing module's store, as a timing replica (another process) builds it.
    bus = await NatsRunBus.connect(env.settings)
    try:
        timing = (await Adapters.over(env.settings, env.db, bus)).timing
        base = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
        fires = [MissedFire(job_id, "dev", base + i * 60_000) for i in range(3)]
        assert await timing.record_missed(fires, datetime.now(UTC)) == 3
        # Recorded again (a replica re-planning the same fires): nothing new, nothing reported.
        assert await timing.record_missed(fires, datetime.now(UTC)) == 0
    finally:
        await bus.close()
    await calls_settle(env.receiver, "/default", 1)

    [call] = env.receiver.calls_to("/default")
    notification = verify_notification(call.headers, call.body, [await env.secret()])
    assert notification.type == "fires.missed" and notification.job_id == job_id
    assert notification.missed_count == 3
    assert notification.first_missed_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert notification.last_missed_at == datetime(2026, 1, 1, 0, 2, tzinfo=UTC)
    runs = (await env.client.get("/runs", params={"status": "missed"}, headers=env.headers)).json()["items"]
    assert len(runs) == 3


async def test_tenant_settings_are_the_callers_own(env: Env) -> None:
    r = await env.client.get("/tenant/settings", headers=env.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "notify": None,
        "runRetentionDays": 30,
        "runRetentionIsDefault": True,
        "maxRunRetentionDays": 60,
    }
    change = {"notify": {"url": "https://oncall.example.com/hook", "headers": {"X-Team": "ops"}}, "runRetentionDays": 7}
    r = await env.client.patch("/tenant/settings", json=change, headers=env.headers)
    assert r.status_code == 200, r.text
    mine = {**change, "runRetentionIsDefault": False, "maxRunRetentionDays": 60}
    assert r.json() == mine
    assert (await env.client.get("/tenant/settings", headers=env.headers)).json() == mine

    # The other tenant sees and changes only its own.
    theirs = (await env.client.get("/tenant/settings", headers=env.other)).json()
    assert theirs["notify"] is None and theirs["runRetentionDays"] == 30
    r = await env.client.patch("/tenant/settings", json={"runRetentionDays": 2}, headers=env.other)
    assert r.status_code == 200 and r.json()["runRetentionDays"] == 2
    assert (await env.client.get("/tenant/settings", headers=env.headers)).json() == mine

    # null returns a field to its default; an absent field stays as it is.
    r = await env.client.patch("/tenant/settings", json={"runRetentionDays": None}, headers=env.headers)
    assert r.json()["runRetentionDays"] == 30 and r.json()["notify"] == change["notify"]
    r = await env.client.patch("/tenant/settings", json={"notify": None}, headers=env.headers)
    assert r.json()["notify"] is None
    assert (await env.client.get("/tenant/settings")).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"runRetentionDays": 61}, "runRetentionDays"),
        ({"runRetentionDays": 0}, "runRetentionDays"),
        ({"notify": {"url": "http://169.254.169.254/latest"}}, "notify.url"),
        ({"notify": {"url": "http://10.1.2.3/hook"}}, "notify.url"),
        ({"notify": {"url": "https://ok.example.com", "headers": {"webhook-signature": "x"}}}, "notify.headers"),
        ({"notify": {"url": "ftp://example.com"}}, "notify.url"),
    ],
)
async def test_tenant_settings_refuse_what_the_policy_refuses(env: Env, body: dict[str, Any], field: str) -> None:
    r = await env.client.patch("/tenant/settings", json=body, headers=env.headers)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["errors"][0]["field"].startswith(field), problem
    assert (await env.client.get("/tenant/settings", headers=env.headers)).json()["runRetentionDays"] == 30


async def test_a_jobs_notify_is_stored_returned_changed_and_removed(env: Env) -> None:
    notify = {"url": "https://oncall.example.com/hook", "headers": {}}
    job_id = await env.create_job("/x", notify=notify)
    job = (await env.client.get(f"/jobs/{job_id}", headers=env.headers)).json()
    assert job["notify"] == notify
    listed = (await env.client.get("/jobs", headers=env.headers)).json()["items"]
    assert [j["notify"] for j in listed] == [notify]

    refused = await env.client.patch(
        f"/jobs/{job_id}", json={"notify": {"url": "http://169.254.169.254/"}}, headers=env.headers
    )
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "notify.url", refused.text
    r = await env.client.post(
        "/jobs",
        json={
            "name": "refused",
            "schedule": {"kind": "interval", "seconds": 60},
            "target": {"kind": "http", "url": "https://hooks.example.com/run"},
            "notify": {"url": "http://192.168.0.10/hook"},
        },
        headers=env.headers,
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "notify.url", r.text

    other = {"url": "https://other.example.com/hook", "headers": {"X-Team": "ops"}}
    r = await env.client.patch(f"/jobs/{job_id}", json={"notify": other}, headers=env.headers)
    assert r.status_code == 200 and r.json()["notify"] == other
    r = await env.client.patch(f"/jobs/{job_id}", json={"name": "renamed"}, headers=env.headers)
    assert r.json()["notify"] == other  # untouched by a change of another field
    r = await env.client.patch(f"/jobs/{job_id}", json={"notify": None}, headers=env.headers)
    assert r.status_code == 200 and r.json()["notify"] is None
    assert (await env.client.get(f"/jobs/{job_id}", headers=env.headers)).json()["notify"] is None


async def test_a_repeated_report_is_sent_once_to_the_jobs_own_target(env: Env) -> None:
    """A worker that crashed after reporting a failure and before recording it reports it again on the
    redelivery: the stream drops the repeat. The job's own target wins over the tenant's default."""
    r = await env.client.patch(
        "/tenant/settings", json={"notify": {"url": env.receiver.url("/default")}}, headers=env.headers
    )
    assert r.status_code == 200, r.text
    job_id = await env.create_job("/target", notify={"url": env.receiver.url("/own")})
    bus = await NatsRunBus.connect(env.settings)
    try:
        reporter = NotificationReporter(bus)
        for _ in range(2):
            await reporter.report(
                run_failed("dev", job_id, 1000, attempts=2, error="HTTP 502", http_status=502, now=datetime.now(UTC))
            )
    finally:
        await bus.close()
    await calls_settle(env.receiver, "/own", 1)
    assert env.receiver.calls_to("/default") == []
    [call] = env.receiver.calls_to("/own")
    assert verify_notification(call.headers, call.body, [await env.secret()]).id == f"{job_id}:1000:failed:2"


async def test_fires_missed_during_a_full_stop_are_notified_through_the_timing_module(env: Env) -> None:
    """The timing module records the fires missed while no replica ran (catch-up ``skip``) and reports them
    as one event; the execution module of another process sends it to the job's target."""
    now = datetime.now(UTC).replace(microsecond=0)
    anchor = now - timedelta(seconds=350)  # fires at -250 s, -150 s, -50 s missed or run; the next 50 s ahead
    job_id = await env.create_job(
        "/target",
        schedule={"kind": "interval", "seconds": 100, "anchor": anchor.isoformat()},
        catchup={"policy": "skip", "windowSeconds": 3600},
        notify={"url": env.receiver.url("/own")},
    )
    await env.db[names.JOBS].update_one({"_id": job_id}, {"$set": {"nextRun": anchor}})  # as if stopped since
    bus = await NatsRunBus.connect(env.settings)
    service = timing_service(await Adapters.over(env.settings, env.db, bus))
    try:
        await service.start()
        await calls_settle(env.receiver, "/own", 1)
    finally:
        await service.stop()
        await bus.close()
    [call] = env.receiver.calls_to("/own")
    notification = verify_notification(call.headers, call.body, [await env.secret()])
    missed = [r["scheduledAt"] async for r in env.db[names.RUNS].find({"jobId": job_id, "status": "missed"})]
    assert len(missed) >= 2  # -250 s, -150 s (a fire within the misfire grace runs instead)
    assert (notification.type, notification.job_id, notification.missed_count) == ("fires.missed", job_id, len(missed))
    assert (notification.first_missed_at, notification.last_missed_at) == (min(missed), max(missed))
