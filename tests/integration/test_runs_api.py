"""Run semantics and run history through the HTTP API, against a real SecantusDB process and NATS.

Covers the ``once`` bounds (issue 14, bug 1), the tenant-wide run history (``GET /runs``,
``GET /runs/{runId}``) and retrying dead letters by filter (``POST /runs/retry``), with two tenants to
check isolation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
from litestar.testing import AsyncTestClient
from nats.js.api import DiscardPolicy
from tests.conftest import DEV_KEY, Api

from schedsvc import names
from schedsvc.api import create_app
from schedsvc.config import Settings
from schedsvc.domain.models import RunMessage, RunStatus, run_id
from schedsvc.domain.runs import AttemptRecord, RunEnd
from schedsvc.domain.wire import RunRetryFilter
from schedsvc.job_service.runs import MAX_RETRIES_ON_DEMAND
from schedsvc.names import Names
from schedsvc.store import connect
from schedsvc.store.replies import request_hash
from schedsvc.store.retention import RunRetention
from schedsvc.store.runs import MongoRunStore
from schedsvc.testing import delete_run_streams


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def job_body(name: str, schedule: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "schedule": schedule, "target": {"kind": "http", "url": "https://hooks.example.com/run"}}


# -- bug 1: a once schedule honours startAt/endAt ------------------------------------------------------


async def test_once_outside_its_bounds_is_refused_like_an_at_in_the_past(api: Api) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    at = now + timedelta(seconds=40)
    ended = {"kind": "once", "at": iso(at), "startAt": iso(now), "endAt": iso(now + timedelta(seconds=10))}
    not_started = {"kind": "once", "at": iso(at), "startAt": iso(at + timedelta(seconds=1))}
    for schedule in (ended, not_started):
        r = await api.client.post("/jobs", json=job_body("late", schedule), headers=api.headers)
        assert r.status_code == 422, r.text
        problem = r.json()
        assert [e["field"] for e in problem["errors"]] == ["schedule"], problem
        assert "no fire" in problem["detail"] + " ".join(e["message"] for e in problem["errors"])
    assert (await api.client.get("/jobs", headers=api.headers)).json()["items"] == []

    inside = {"kind": "once", "at": iso(at), "startAt": iso(at), "endAt": iso(at)}
    r = await api.client.post("/jobs", json=job_body("inside", inside), headers=api.headers)
    assert r.status_code == 201, r.text
    job = r.json()
    assert datetime.fromisoformat(job["nextRun"]) == at
    # A change that moves `at` outside the bounds is refused too, and leaves the job as it was.
    r = await api.client.patch(f"/jobs/{job['id']}", json={"schedule": ended}, headers=api.headers)
    assert r.status_code == 422, r.text
    assert (await api.client.get(f"/jobs/{job['id']}", headers=api.headers)).json() == job


async def test_preview_of_a_once_outside_its_bounds_has_no_fire(api: Api) -> None:
    at = datetime(2031, 1, 1, tzinfo=UTC)
    body = {
        "schedule": {"kind": "once", "at": iso(at), "endAt": iso(at - timedelta(days=1))},
        "after": iso(at - timedelta(days=30)),
    }
    r = await api.client.post("/schedules/preview", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["fires"] == []
    body["schedule"]["endAt"] = iso(at)
    r = await api.client.post("/schedules/preview", json=body)
    assert r.json()["fires"] == ["2031-01-01T00:00:00Z"]


# -- run history: GET /runs and GET /runs/{runId} ------------------------------------------------------


async def record_run(
    api: Api, tenant: str, job_id: str, scheduled: datetime, outcome: str, trigger: str = "scheduled"
) -> str:
    """A run written the way execution writes it (claims, failed attempts, final status)."""
    return await write_run(api.db, api.settings, tenant, job_id, scheduled, outcome, trigger)


async def write_run(
    db: Any, settings: Settings, tenant: str, job_id: str, scheduled: datetime, outcome: str, trigger: str = "scheduled"
) -> str:
    """:func:`record_run` into any database: ``running``, ``retrying`` (queued for its second attempt, due
    in 5 s) or a final status; returns the run id."""
    store = MongoRunStore(db, RunRetention(None, settings))
    ms = int(scheduled.timestamp() * 1000)
    message = RunMessage(job_id, tenant, ms, ms, trigger, 1)
    now = datetime.now(UTC)
    attempt = await store.claim_attempt(message, 0, now, now + timedelta(seconds=30))
    assert attempt == 1
    failed = AttemptRecord(now, now + timedelta(milliseconds=120), 500, "HTTP 500", "boom", 1, "http_status")
    if outcome == "running":
        return run_id(job_id, ms)
    if outcome == "succeeded":
        ok = AttemptRecord(now, now + timedelta(milliseconds=80), 200, None, "ok", 1)
        await store.finish(message, RunEnd(RunStatus.SUCCEEDED, ok), now)
    elif outcome == "retrying":
        await store.record_retry(run_id(job_id, ms), 1, failed, now + timedelta(seconds=5))
    else:
        await store.finish(message, RunEnd(RunStatus(outcome), failed), now)
    return run_id(job_id, ms)


async def all_pages(api: Api, params: dict[str, Any], headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = await api.client.get(
            "/runs", params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers or api.headers
        )
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["nextCursor"]
        if cursor is None:
            return items


async def three_jobs(api: Api) -> tuple[str, str, str]:
    """The ids of jobs ``a`` and ``b`` of the ``dev`` tenant and of a job ``a`` of the other tenant."""

    async def create(name: str, headers: dict[str, str]) -> str:
        r = await api.client.post("/jobs", json=job_body(name, {"kind": "interval", "seconds": 60}), headers=headers)
        return str(r.json()["id"])

    return await create("a", api.headers), await create("b", api.headers), await create("a", api.other)


async def test_tenant_run_history_filters_pages_and_outlives_the_job(api: Api) -> None:
    a, b, theirs = await three_jobs(api)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    mine = []
    for i, outcome in enumerate(["succeeded", "failed", "succeeded", "retrying", "failed"]):
        mine.append(await record_run(api, "dev", a, t0 + timedelta(minutes=i), outcome))
        # Job b fires at the same instants: the cursor must separate runs that share one.
        mine.append(await record_run(api, "dev", b, t0 + timedelta(minutes=i), "succeeded", trigger="catchup"))
    other = await record_run(api, "other", theirs, t0, "failed")

    # Newest first, across jobs, one tenant's only, and the same whatever the page size.
    newest_first = sorted(mine, key=lambda rid: (int(rid.split(":")[1]), rid), reverse=True)
    for limit in (1, 3, 50):
        assert [r["id"] for r in await all_pages(api, {"limit": limit})] == newest_first
    assert [r["id"] for r in await all_pages(api, {}, api.other)] == [other]

    failed = await all_pages(api, {"status": "failed"})
    assert [r["id"] for r in failed] == [mine[8], mine[2]]
    assert {r["error"] for r in failed} == {"HTTP 500"}
    [attempt] = failed[0]["attemptHistory"]
    assert attempt["number"] == 1 and attempt["httpStatus"] == 500 and attempt["errorClass"] == "http_status"
    assert attempt["durationMs"] == 120 and attempt["responseSnippet"] == "boom"
    both = await all_pages(api, {"status": ["failed", "queued"]})
    assert [r["id"] for r in both] == [mine[8], mine[6], mine[2]]
    retrying = both[1]
    assert retrying["status"] == "queued" and retrying["nextAttemptAt"] is not None
    assert retrying["attemptHistory"][0]["nextRetryAt"] == retrying["nextAttemptAt"]
    assert [r["id"] for r in await all_pages(api, {"job": b, "trigger": "catchup"})] == mine[1::2][::-1]
    assert {r["jobId"] for r in await all_pages(api, {"job": b})} == {b}
    assert {r["trigger"] for r in await all_pages(api, {"trigger": "catchup"})} == {"catchup"}
    window = {"from": iso(t0 + timedelta(minutes=1)), "to": iso(t0 + timedelta(minutes=3))}
    assert sorted(r["id"] for r in await all_pages(api, window)) == sorted(mine[2:6])
    assert await all_pages(api, {"job": theirs}) == []  # another tenant's job: nothing, not an error

    # One run by id, with its attempts; another tenant's run is not found, as a missing one.
    r = await api.client.get(f"/runs/{mine[2]}", headers=api.headers)
    assert r.status_code == 200 and r.json()["status"] == "failed" and len(r.json()["attemptHistory"]) == 1
    for rid, headers in ((other, api.headers), (mine[2], api.other), (f"{a}:1", api.headers)):
        r = await api.client.get(f"/runs/{rid}", headers=headers)
        assert r.status_code == 404, r.text
        assert r.headers["content-type"].startswith("application/problem+json")

    # Deleting the job keeps its runs, by id and in the tenant-wide list, until retention.
    assert (await api.client.delete(f"/jobs/{a}", headers=api.headers)).status_code == 204
    assert (await api.client.get(f"/runs/{mine[2]}", headers=api.headers)).status_code == 200
    assert [r["id"] for r in await all_pages(api, {"job": a})] == [mine[8], mine[6], mine[4], mine[2], mine[0]]


async def test_run_history_refuses_bad_queries(api: Api) -> None:
    for params in (
        {"colour": "blue"},
        {"status": "sleeping"},
        {"trigger": "cron"},
        {"limit": 0},
        {"limit": 501},
        {"cursor": "!!"},
        {"cursor": "eyJiZWZvcmUiOjF9"},  # a job-history cursor ({"before":1}): no run id
        {"cursor": "eyJiZWZvcmUiOjEwMDAwMDAwMDAwMDAwMDAwMDAwLCJpZCI6IngifQ"},  # out of range
        {"from": "2026-11-01T00:00:00"},  # no offset
        {"to": "yesterday"},
    ):
        r = await api.client.get("/runs", params=params, headers=api.headers)
        assert r.status_code == 400, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await api.client.get("/runs")
    assert r.status_code == 401


async def test_nats_reached_after_start_up_completes_the_service(settings: Settings, tmp_path: Any) -> None:
    """Started while NATS is down, the API process is live and not ready; once NATS appears it connects
    (with backoff), becomes ready and queues runs (merged from the hostile-input work onto main's wiring)."""
    from schedsvc import embedded

    port = embedded.free_port()
    settings = dataclasses.replace(
        settings, nats_url=f"nats://127.0.0.1:{port}", roles=frozenset({"api"}), dev_mode=True, dev_api_key=DEV_KEY
    )
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    nats_server = embedded.nats(tmp_path / "nats", port=port)
    try:
        async with AsyncTestClient(create_app(settings)) as client:
            assert (await client.get("/health/ready")).status_code == 503
            r = await client.post("/jobs", json=job_body("later", {"kind": "interval", "seconds": 60}), headers=headers)
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            assert (await client.post(f"/jobs/{job_id}/run", headers=headers)).status_code == 503
            await asyncio.to_thread(nats_server.start)
            deadline = time.monotonic() + 30
            while (await client.get("/health/ready")).status_code != 200:
                assert time.monotonic() < deadline, "not ready 30 s after NATS came up"
                await asyncio.sleep(0.2)
            r = await client.post(f"/jobs/{job_id}/run", headers=headers)
            assert r.status_code == 202, r.text
    finally:
        await asyncio.to_thread(nats_server.stop)
        mongo = connect(settings)
        await mongo.drop_database(settings.database)
        await mongo.close()


# -- dead letters: POST /runs/retry ---------------------------------------------------------------------------


async def published_retries(settings: Settings) -> list[str]:
    """Message ids of the run stream (what the API handed to execution)."""
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        stream = Names(settings.prefix).run_stream
        info = await js.stream_info(stream)
        ids = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1 if info.state.messages else 0):
            ids.append((await js.get_msg(stream, seq)).headers["Nats-Msg-Id"])  # type: ignore[index]
        return ids
    finally:
        await nc.close()


async def test_failed_runs_are_retried_by_filter_in_bounded_idempotent_batches_per_tenant(api: Api) -> None:
    a, b, theirs = await three_jobs(api)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    failed_a = [await record_run(api, "dev", a, t0 + timedelta(minutes=i), "failed") for i in range(3)]
    await record_run(api, "dev", a, t0 + timedelta(minutes=3), "succeeded")
    failed_b = await record_run(api, "dev", b, t0, "failed", trigger="catchup")
    exhausted = await record_run(api, "dev", b, t0 + timedelta(minutes=1), "failed")
    await api.db[names.RUNS].update_one({"_id": exhausted}, {"$set": {"retriesOnDemand": MAX_RETRIES_ON_DEMAND}})
    failed_theirs = [await record_run(api, "other", theirs, t0 + timedelta(minutes=i), "failed") for i in range(2)]

    async def retry(body: dict[str, Any], headers: dict[str, str], key: str | None = None) -> dict[str, Any]:
        extra = {"Idempotency-Key": key} if key else {}
        r = await api.client.post("/runs/retry", json=body, headers=headers | extra)
        assert r.status_code == 200, r.text
        report: dict[str, Any] = r.json()
        assert (
            report["matched"]
            == report["retried"] + report["refused"]
            == len(report["retriedRuns"]) + len(report["refusals"])
        )
        return report

    async def status_of(rid: str, headers: dict[str, str]) -> tuple[str, int]:
        run = (await api.client.get(f"/runs/{rid}", headers=headers)).json()
        return run["status"], run["retriesOnDemand"]

    try:
        # Another tenant's filter, even naming this tenant's job, never touches this tenant's runs.
        assert (await retry({"job": a}, api.other))["matched"] == 0
        report = await retry({}, api.other)
        assert report["retriedRuns"] == failed_theirs[::-1]
        assert [await status_of(rid, api.headers) for rid in failed_a] == [("failed", 0)] * 3

        # Bounded batches, newest first, continued with the cursor; each retried run is queued once.
        first = await retry({"job": a, "limit": 2}, api.headers, key="batch-1")
        assert first["retriedRuns"] == [failed_a[2], failed_a[1]] and first["nextCursor"] is not None
        replay = await api.client.post(
            "/runs/retry", json={"job": a, "limit": 2}, headers=api.headers | {"Idempotency-Key": "batch-1"}
        )
        assert replay.status_code == 200 and replay.json() == first
        assert replay.headers["idempotent-replayed"] == "true"
        reused = await api.client.post(
            "/runs/retry", json={"job": a, "limit": 3}, headers=api.headers | {"Idempotency-Key": "batch-1"}
        )
        assert reused.status_code == 422 and reused.json()["errors"][0]["field"] == "Idempotency-Key"
        # A repeat while the first request is still being performed is a 409 (repeat later), not a 422.
        await api.db[names.IDEMPOTENCY].insert_one(
            {
                "_id": {"tenant": "dev", "op": "retryRuns", "key": "busy"},
                "requestHash": request_hash(RunRetryFilter(job=a)),
                "reply": None,
                "pendingUntil": datetime.now(UTC) + timedelta(minutes=1),
            }
        )
        busy = await api.client.post("/runs/retry", json={"job": a}, headers=api.headers | {"Idempotency-Key": "busy"})
        assert busy.status_code == 409 and busy.json()["errors"][0]["field"] == "Idempotency-Key", busy.text
        second = await retry({"job": a, "limit": 2, "cursor": first["nextCursor"]}, api.headers)
        assert second["retriedRuns"] == [failed_a[0]] and second["nextCursor"] is None
        assert [await status_of(rid, api.headers) for rid in failed_a] == [("queued", 1)] * 3
        # A repeat without a key finds them queued, no longer failed: nothing is retried twice.
        assert (await retry({"job": a}, api.headers))["matched"] == 0

        # Refusals say why; the rest of the batch is retried regardless.
        report = await retry({"job": b}, api.headers)
        assert report["retriedRuns"] == [failed_b]
        assert [(r["runId"], r["reason"]) for r in report["refusals"]] == [(exhausted, "exhausted")]
        assert (await api.client.delete(f"/jobs/{b}", headers=api.headers)).status_code == 204
        await api.db[names.RUNS].update_one({"_id": failed_b}, {"$set": {"status": "failed"}})
        report = await retry({"trigger": "catchup"}, api.headers)
        assert [(r["runId"], r["reason"]) for r in report["refusals"]] == [(failed_b, "job_deleted")]
        assert await status_of(failed_b, api.headers) == ("failed", 1)

        # Exactly one message per retry reached the run stream, with the retry's own id; none for refusals.
        retried = [*failed_theirs, *failed_a, failed_b]
        published = await published_retries(api.settings)
        assert sorted(i.rsplit(":", 1)[0] for i in published) == sorted(f"{rid}:retry1" for rid in retried)

        # Bad filters are 422 problems naming the field, before anything is retried.
        for body, field in (
            ({"limit": 0}, "limit"),
            ({"limit": 101}, "limit"),
            ({"status": "failed"}, "status"),
            ({"from": "2026-11-01T00:00:00"}, "from"),
            ({"trigger": "cron"}, "trigger"),
            ({"cursor": "!!"}, "cursor"),
        ):
            r = await api.client.post("/runs/retry", json=body, headers=api.headers)
            assert r.status_code == 422, (body, r.text)
            assert field in [e["field"] for e in r.json()["errors"]], (body, r.text)
        assert (await api.client.post("/runs/retry", json={})).status_code == 401
    finally:
        await delete_run_streams(api.settings)


async def test_a_retry_whose_publish_fails_part_way_keeps_what_was_queued_and_gives_the_rest_back(api: Api) -> None:
    """The run stream takes one message and refuses the rest (a real JetStream limit, discard new): the
    batch answers 503, the run whose message was stored stays retried, the others are failed again with
    their retry given back, and a later retry of those queues a message of its own for each."""
    a = (
        await api.client.post("/jobs", json=job_body("a", {"kind": "interval", "seconds": 60}), headers=api.headers)
    ).json()["id"]
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    failed = [await record_run(api, "dev", a, t0 + timedelta(minutes=i), "failed") for i in range(3)]

    async def status_of(rid: str) -> tuple[str, int]:
        run = (await api.client.get(f"/runs/{rid}", headers=api.headers)).json()
        return run["status"], run["retriesOnDemand"]

    nc = await nats.connect(api.settings.nats_url)
    js = nc.jetstream()
    stream = Names(api.settings.prefix).run_stream
    try:
        info = await js.stream_info(stream)
        limited = dataclasses.replace(info.config, max_msgs=info.state.messages + 1, discard=DiscardPolicy.NEW)
        await js.update_stream(limited)

        r = await api.client.post("/runs/retry", json={"job": a}, headers=api.headers)
        assert r.status_code == 503, r.text
        statuses = {rid: await status_of(rid) for rid in failed}
        [queued] = [rid for rid, status in statuses.items() if status == ("queued", 1)]
        given_back = [rid for rid in failed if rid != queued]
        assert [statuses[rid] for rid in given_back] == [("failed", 0)] * 2
        [stored] = await published_retries(api.settings)
        assert stored.startswith(f"{queued}:retry1:")

        # One by one, the same: nothing stored, the run is failed again, its retry not spent.
        r = await api.client.post(f"/runs/{given_back[0]}/retry", headers=api.headers)
        assert r.status_code == 503, r.text
        assert await status_of(given_back[0]) == ("failed", 0)

        await js.update_stream(dataclasses.replace(limited, max_msgs=-1, discard=DiscardPolicy.OLD))
        r = await api.client.post(f"/runs/{given_back[0]}/retry", headers=api.headers)
        assert r.status_code == 202, r.text
        r = await api.client.post("/runs/retry", json={"job": a}, headers=api.headers)
        assert r.status_code == 200 and r.json()["retriedRuns"] == given_back[1:], r.text
        assert [await status_of(rid) for rid in failed] == [("queued", 1)] * 3
        # Each reopen has a message of its own: none was dropped as a duplicate of another.
        published = await published_retries(api.settings)
        assert sorted(i.split(":retry")[0] for i in published) == sorted(failed)

        # A reopen undone after its message was stored (its ack lost on the way) and made again has the same
        # retry count; its message is still a new one, not dropped as a duplicate of the first.
        undone = {"status": "failed", "retriesOnDemand": 0, "attemptLimit": None}
        await api.db[names.RUNS].update_one({"_id": queued}, {"$set": undone})
        assert (await api.client.post(f"/runs/{queued}/retry", headers=api.headers)).status_code == 202
        again = [i for i in await published_retries(api.settings) if i.startswith(f"{queued}:retry1:")]
        assert len(again) == 2, again
    finally:
        await nc.close()
        await delete_run_streams(api.settings)
