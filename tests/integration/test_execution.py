"""Execution against real sockets: JetStream, a MongoDB-wire server and an HTTP target on 127.0.0.1.

Jobs and tenants are written straight into the database (per docs/design/data-model.md) and fires are
published with ``bus.publish_runs``, so these tests depend on neither the API nor the timing module.
Every connection goes to 127.0.0.0/8 only; every stream a test creates is deleted at its end.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import io
import ipaddress
import itertools
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import nats
import pytest
from bson import ObjectId
from litestar.testing import AsyncTestClient
from tests.support.waiting import WAIT, wait_until

from schedsvc import names
from schedsvc.api import create_app
from schedsvc.bus import NatsRunBus
from schedsvc.bus.nats import DEDUP_WINDOW_SECONDS
from schedsvc.config import Settings
from schedsvc.domain.errors import InvalidCursorError
from schedsvc.domain.models import HttpTarget, NatsTarget, RetryPolicy, RunMessage, run_id
from schedsvc.execution import ExecutionService
from schedsvc.job_service.runs import MAX_RETRIES_ON_DEMAND
from schedsvc.names import Names
from schedsvc.observability.logging import JsonFormatter
from schedsvc.store import MongoTenantStore, connect, database
from schedsvc.store.retention import RunRetention
from schedsvc.store.run_history import MongoRunHistory
from schedsvc.store.runs import MongoRunStore
from schedsvc.testing import Call, Reply, WebhookReceiver, delete_run_streams, drop_database
from schedsvc.wiring import Adapters, execution_service

TENANT = "acme"


@pytest.fixture
async def server() -> AsyncIterator[WebhookReceiver]:
    s = WebhookReceiver()
    await s.start()
    yield s
    await s.close()


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Short ack deadline so redeliveries happen within a test."""
    return dataclasses.replace(settings, run_ack_wait_seconds=2.0, max_concurrent_runs=8)


@pytest.fixture
async def bus(fast: Settings) -> AsyncIterator[NatsRunBus]:
    bus = await NatsRunBus.connect(fast)
    await bus.ensure_streams()
    yield bus
    await bus.close()
    await delete_run_streams(fast)


@pytest.fixture
async def services(
    fast: Settings, mongo_db: Any, bus: NatsRunBus
) -> AsyncIterator[Callable[..., Awaitable[ExecutionService]]]:
    started: list[ExecutionService] = []

    async def start(settings: Settings | None = None, **kwargs: Any) -> ExecutionService:
        service = execution_service(await Adapters.over(settings or fast, mongo_db, bus), **kwargs)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


def secret_text() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


async def add_tenant(db: Any, name: str = TENANT, secrets_: list[str] | None = None, **extra: Any) -> list[str]:
    texts = secrets_ or [secret_text()]
    now = datetime.now(UTC)
    await db[names.TENANTS].insert_one(
        {
            "_id": name,
            "createdAt": now,
            "signingSecrets": [{"id": f"s{i}", "secret": s, "createdAt": now} for i, s in enumerate(texts)],
            **extra,
        }
    )
    return texts


async def add_job(
    db: Any,
    target: HttpTarget | NatsTarget,
    *,
    retry: RetryPolicy | None = None,
    overlap: str = "allow",
    tenant: str = TENANT,
    status: str = "active",
) -> str:
    job_id = str(ObjectId())
    now = datetime.now(UTC)
    await db[names.JOBS].insert_one(
        {
            "_id": job_id,
            "tenant": tenant,
            "name": f"job-{job_id}",
            "schedule": {
                "kind": "interval",
                "seconds": 60,
                "anchor": now,
                "startAt": None,
                "endAt": None,
                "jitterSeconds": 0,
            },
            "target": msgspec.to_builtins(target),
            "retry": msgspec.to_builtins(retry or RetryPolicy(max_attempts=1)),
            "catchup": {"policy": "latest", "windowSeconds": 3600},
            "overlap": overlap,
            "tags": [],
            "metadata": {},
            "status": status,
            "nextRun": None,
            "resumedAt": None,
            "lastRun": None,
            "lastRunStatus": None,
            "partition": 0,
            "createdAt": now,
            "updatedAt": now,
            "version": 7,
        }
    )
    return job_id


async def fire(bus: NatsRunBus, job_id: str, scheduled_ms: int | None = None, trigger: str = "scheduled") -> str:
    ms = scheduled_ms if scheduled_ms is not None else int(time.time() * 1000)
    await bus.publish_runs([RunMessage(job_id, TENANT, ms, ms, trigger, 1)], [0])
    return run_id(job_id, ms)


async def run_doc(db: Any, rid: str) -> dict[str, Any] | None:
    return await db[names.RUNS].find_one({"_id": rid})


async def final_run(db: Any, rid: str, timeout: float = WAIT) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        doc = await run_doc(db, rid)
        final = ("succeeded", "failed", "skipped", "missed")
        return doc if doc is not None and doc["status"] in final else None

    return await wait_until(check, timeout)


async def job_after_run(db: Any, job_id: str) -> dict[str, Any]:
    """The job document once a run has set its lastRun (written just after the run's final status)."""

    async def check() -> dict[str, Any] | None:
        job = await db[names.JOBS].find_one({"_id": job_id})
        return job if job is not None and job.get("lastRunStatus") is not None else None

    return await wait_until(check)


async def consumer_settled(bus_settings: Settings) -> bool:
    """No message of the run stream is waiting or unacknowledged."""
    nc = await nats.connect(bus_settings.nats_url)
    try:
        n = Names(bus_settings.prefix)
        info = await nc.jetstream().consumer_info(n.run_stream, n.worker_consumer)
        return info.num_pending == 0 and info.num_ack_pending == 0
    finally:
        await nc.close()


async def dead_letters(bus_settings: Settings) -> list[tuple[dict[str, str], bytes]]:
    nc = await nats.connect(bus_settings.nats_url)
    try:
        js = nc.jetstream()
        n = Names(bus_settings.prefix)
        info = await js.stream_info(n.dead_letter_stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            if info.state.messages == 0:
                break
            raw = await js.get_msg(n.dead_letter_stream, seq)
            out.append((dict(raw.headers or {}), raw.data or b""))
        return out
    finally:
        await nc.close()


def reference_verify(shared: list[str], headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification written from the spec, independent of schedsvc.execution.signing."""
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    wanted = {
        base64.b64encode(hmac.new(base64.b64decode(s), content, hashlib.sha256).digest()).decode() for s in shared
    }
    offered = {e.split(",", 1)[1] for e in headers["webhook-signature"].split(" ") if e.startswith("v1,")}
    return bool(wanted & offered)


# -- tests ------------------------------------------------------------------------------------------------


async def test_success_is_signed_identified_and_recorded(mongo_db, bus, services, server, fast) -> None:  # type: ignore[no-untyped-def]
    old, new = secret_text(), secret_text()
    await add_tenant(mongo_db, secrets_=[new, old])
    server.routes["/hook"] = lambda c, n: Reply(201, b'{"accepted":true}')
    job_id = await add_job(
        mongo_db,
        HttpTarget(url=server.url("/hook?x=1"), method="POST", headers={"X-Custom": "yes"}, body={"hello": "world"}),
    )
    await services()
    scheduled_ms = int(time.time() * 1000) - 1500
    rid = await fire(bus, job_id, scheduled_ms)

    doc = await final_run(mongo_db, rid)
    assert doc["status"] == "succeeded", doc
    assert doc["attempts"] == 1 and doc["httpStatus"] == 201
    assert doc["responseSnippet"] == '{"accepted":true}'
    assert doc["jobId"] == job_id and doc["tenant"] == TENANT and doc["trigger"] == "scheduled"
    assert doc["durationMs"] >= 0 and doc["finishedAt"] >= doc["startedAt"]
    retention = timedelta(days=fast.run_retention_days)
    assert abs(doc["expireAt"] - (doc["finishedAt"] + retention)) < timedelta(seconds=1)

    [call] = server.calls
    assert call.method == "POST" and call.path == "/hook?x=1"
    assert json.loads(call.body) == {"hello": "world"}
    h = call.headers
    assert h["content-type"] == "application/json"
    assert h["x-custom"] == "yes"
    assert h["host"] == f"127.0.0.1:{server.port}"
    assert h["idempotency-key"] == rid == f"{job_id}:{scheduled_ms}"
    assert h["x-schedsvc-job-id"] == job_id
    assert h["x-schedsvc-attempt"] == "1"
    assert datetime.fromisoformat(h["x-schedsvc-scheduled-time"].replace("Z", "+00:00")) == datetime.fromtimestamp(
        scheduled_ms / 1000, tz=UTC
    )
    assert h["webhook-id"] == rid
    assert abs(int(h["webhook-timestamp"]) - time.time()) < 30
    assert len(h["webhook-signature"].split(" ")) == 2
    assert reference_verify([old], h, call.body) and reference_verify([new], h, call.body)
    assert not reference_verify([secret_text()], h, call.body)

    job = await job_after_run(mongo_db, job_id)
    assert job["lastRunStatus"] == "succeeded"
    assert job["lastRun"] == datetime.fromtimestamp(scheduled_ms / 1000, tz=UTC)
    assert job["version"] == 7  # the API's ETag is untouched
    await wait_until(lambda: consumer_settled(fast))


async def test_retries_with_backoff_then_dead_letter(mongo_db, bus, services, server, fast) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    server.routes["/fail"] = lambda c, n: Reply(500, b"boom")
    retry = RetryPolicy(max_attempts=3, min_backoff_seconds=0.3, max_backoff_seconds=0.6)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/fail")), retry=retry)
    await services()
    rid = await fire(bus, job_id)

    doc = await final_run(mongo_db, rid)
    assert doc["status"] == "failed" and doc["attempts"] == 3
    assert doc["httpStatus"] == 500 and doc["error"] == "HTTP 500" and doc["responseSnippet"] == "boom"
    calls = server.calls_to("/fail")
    assert [c.headers["x-schedsvc-attempt"] for c in calls] == ["1", "2", "3"]
    assert {c.headers["idempotency-key"] for c in calls} == {rid}
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    # Each retry waits within [0.3, 0.6] (the ceiling 0.3 * 2**n is capped at max); the upper bound here
    # leaves room for a busy machine, the lower one is the backoff's.
    assert all(0.28 <= g <= 5.0 for g in gaps), gaps

    letters = await wait_until(lambda: dead_letters(fast))
    [(headers, payload)] = letters
    assert headers["Schedsvc-Run-Id"] == rid
    assert headers["Schedsvc-Job-Id"] == job_id
    assert headers["Schedsvc-Attempts"] == "3"
    assert headers["Schedsvc-Error"] == "HTTP 500"
    assert msgspec.msgpack.decode(payload, type=RunMessage).job_id == job_id
    job = await job_after_run(mongo_db, job_id)
    assert job["lastRunStatus"] == "failed"
    await wait_until(lambda: consumer_settled(fast))


async def test_a_retry_that_succeeds(mongo_db, bus, services, server) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    server.routes["/flaky"] = lambda c, n: Reply(503) if n == 0 else Reply(200, b"fine")
    retry = RetryPolicy(max_attempts=5, min_backoff_seconds=0.1, max_backoff_seconds=0.2)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/flaky")), retry=retry)
    await services()
    doc = await final_run(mongo_db, await fire(bus, job_id))
    assert doc["status"] == "succeeded" and doc["attempts"] == 2 and doc["httpStatus"] == 200
    assert doc["error"] is None
    assert len(server.calls) == 2


async def test_a_retry_due_after_the_run_stream_would_drop_its_message_still_runs(  # type: ignore[no-untyped-def]
    mongo_db, server, fast
) -> None:
    """The run stream drops a message at its age limit, delivered or not; a retry may be due later than
    that (backoff and event age allow days). Its message comes back before the drop and is handed back as
    a fresh copy, so the retry runs. Here the stream keeps messages 20 s and the retry is due after 30 s."""
    short = dataclasses.replace(fast, run_stream_max_age_seconds=20)
    bus = await NatsRunBus.connect(short)
    service = None
    try:
        await bus.ensure_streams()
        await add_tenant(mongo_db)
        server.routes["/later"] = lambda c, n: Reply(503) if n == 0 else Reply(200, b"fine")
        retry = RetryPolicy(max_attempts=2, min_backoff_seconds=30, max_backoff_seconds=30)
        job_id = await add_job(mongo_db, HttpTarget(url=server.url("/later")), retry=retry)
        service = execution_service(await Adapters.over(short, mongo_db, bus))
        await service.start()
        doc = await final_run(mongo_db, await fire(bus, job_id), timeout=90)
        assert doc["status"] == "succeeded" and doc["attempts"] == 2
        assert len(server.calls) == 2
        assert server.calls[1].at - server.calls[0].at >= 29  # the retry kept its backoff
    finally:
        if service is not None:
            await service.stop()
        await bus.close()
        await delete_run_streams(short)


async def test_every_attempt_is_kept_in_the_run_history(mongo_db, bus, services, server, fast) -> None:  # type: ignore[no-untyped-def]
    """Each attempt: start, end, duration, HTTP status or error class and message, the first bytes of the
    response, and when the next retry was due (issue 14, run history)."""
    await add_tenant(mongo_db)

    def answers(call: Call, n: int) -> Reply:
        if n == 0:
            return Reply(503, b"busy: try later " + b"x" * 600)
        if n == 1:
            return Reply(hang=True)  # the call times out
        return Reply(200, b"done")

    server.routes["/history"] = answers
    retry = RetryPolicy(max_attempts=3, min_backoff_seconds=0.2, max_backoff_seconds=0.4)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/history"), timeout_seconds=0.5), retry=retry)
    await services()
    rid = await fire(bus, job_id)
    assert (await final_run(mongo_db, rid))["status"] == "succeeded"

    history = MongoRunHistory(mongo_db, RunRetention(None, fast))
    run = await history.get(TENANT, rid)
    assert run is not None and run.attempts == 3 and run.http_status == 200
    first, second, third = run.attempt_history
    assert [a.number for a in run.attempt_history] == [1, 2, 3]
    assert first.http_status == 503 and first.error_class == "http_status" and first.error == "HTTP 503"
    assert first.response_snippet is not None and first.response_snippet.startswith("busy: try later")
    assert len(first.response_snippet) == 256  # bounded per attempt
    assert second.http_status is None and second.error_class == "timeout" and "timed out" in (second.error or "")
    assert third.http_status == 200 and third.error_class is None and third.error is None
    assert third.response_snippet == "done" and third.next_retry_at is None
    for attempt, following in ((first, second), (second, third)):
        assert attempt.finished_at is not None and attempt.next_retry_at is not None
        assert attempt.started_at <= attempt.finished_at <= attempt.next_retry_at <= following.started_at
        measured = (attempt.finished_at - attempt.started_at).total_seconds() * 1000
        assert abs((attempt.duration_ms or 0) - measured) <= 1  # stored instants are whole milliseconds
        assert attempt.next_retry_at - attempt.finished_at >= timedelta(seconds=0.19)  # the policy's backoff
    assert second.duration_ms is not None and second.duration_ms >= 450
    assert await history.get("other", rid) is None  # another tenant sees nothing


async def test_success_statuses_override_2xx(mongo_db, bus, services, server) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    server.routes["/gone"] = lambda c, n: Reply(410)
    server.routes["/ok"] = lambda c, n: Reply(200)
    gone = await add_job(mongo_db, HttpTarget(url=server.url("/gone"), success_statuses=[410]))
    ok = await add_job(mongo_db, HttpTarget(url=server.url("/ok"), success_statuses=[204]))
    await services()
    assert (await final_run(mongo_db, await fire(bus, gone)))["status"] == "succeeded"
    assert (await final_run(mongo_db, await fire(bus, ok)))["status"] == "failed"


async def test_overlap_skip_and_allow(mongo_db, bus, services, server) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    server.routes["/slow"] = lambda c, n: Reply(hang=True) if n == 0 else Reply()
    skip = await add_job(mongo_db, HttpTarget(url=server.url("/slow")), overlap="skip")
    await services()
    base = int(time.time() * 1000)
    first = await fire(bus, skip, base - 2000)
    await asyncio.wait_for(server.arrived.wait(), WAIT)
    second = await fire(bus, skip, base - 1000)
    skipped = await final_run(mongo_db, second)
    assert skipped["status"] == "skipped" and skipped["attempts"] == 0
    assert "still running" in skipped["error"]

    async def last_run_status() -> str | None:
        return (await mongo_db[names.JOBS].find_one({"_id": skip}))["lastRunStatus"]

    assert await wait_until(last_run_status) == "skipped"
    server.release.set()
    assert (await final_run(mongo_db, first))["status"] == "succeeded"
    job = await mongo_db[names.JOBS].find_one({"_id": skip})
    # The earlier fire finished last, but lastRun only moves forward.
    assert job["lastRunStatus"] == "skipped"
    assert len(server.calls_to("/slow")) == 1

    # allow: both fires of a job call the target while one of them still hangs.
    server.release.clear()
    server.routes["/both"] = lambda c, n: Reply(hang=True) if n == 0 else Reply()
    allow = await add_job(mongo_db, HttpTarget(url=server.url("/both")), overlap="allow")
    a = await fire(bus, allow, base - 2000)
    b = await fire(bus, allow, base - 1000)
    await wait_until(lambda: asyncio.sleep(0, len(server.calls_to("/both")) == 2))
    server.release.set()
    assert (await final_run(mongo_db, a))["status"] == "succeeded"
    assert (await final_run(mongo_db, b))["status"] == "succeeded"


async def test_overlap_skip_with_a_backlog_runs_only_the_earliest_fire(mongo_db, bus, services, server) -> None:  # type: ignore[no-untyped-def]
    """Fires of a skip job delivered together (after an outage, a catch-up): only one calls the target."""
    await add_tenant(mongo_db)
    server.routes["/backlog"] = lambda c, n: Reply(hang=True)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/backlog")), overlap="skip")
    await services()
    base = int(time.time() * 1000) - 10_000
    messages = [RunMessage(job_id, TENANT, base + i * 1000, base + i * 1000, "catchup", 1) for i in range(6)]
    await bus.publish_runs(messages, [0] * len(messages))
    rids = [run_id(job_id, m.scheduled_ms) for m in messages]

    async def five_skipped() -> bool:
        return await mongo_db[names.RUNS].count_documents({"jobId": job_id, "status": "skipped"}) == 5

    await wait_until(five_skipped)
    await asyncio.wait_for(server.arrived.wait(), WAIT)
    [call] = server.calls_to("/backlog")
    runner = call.headers["idempotency-key"]
    assert runner in rids
    for rid in rids:
        doc = await run_doc(mongo_db, rid)
        assert doc["status"] == ("running" if rid == runner else "skipped")
        assert doc["attempts"] == (1 if rid == runner else 0)
    server.release.set()
    assert (await final_run(mongo_db, runner))["status"] == "succeeded"


@pytest.mark.parametrize("replicas", [1, 2])
async def test_overlap_buffer_one_starts_one_waiting_fire_after_the_running_one(  # type: ignore[no-untyped-def]
    mongo_db, bus, services, server, replicas
) -> None:
    """Overlap ``bufferOne`` (issue 14): of the fires delivered while a call runs, exactly one waits and
    starts as soon as the call ends; the others are skipped; the target never sees two calls of the job at
    once. The running call (4 s) outlasts the ack deadline (2 s), so the waiting fire's own message comes
    back meanwhile and must go on waiting, neither running nor skipped."""
    await add_tenant(mongo_db)
    server.routes["/one-waits"] = lambda c, n: Reply(delay=4.0 if n == 0 else 1.0)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/one-waits")), overlap="bufferOne")
    for _ in range(replicas):  # two execution replicas share the consumer: the fires go to both
        await services()
    base = int(time.time() * 1000)
    first = await fire(bus, job_id, base - 4000)
    await asyncio.wait_for(server.arrived.wait(), WAIT)
    later = [await fire(bus, job_id, base - 3000 + i * 1000) for i in range(3)]
    finals = {rid: await final_run(mongo_db, rid) for rid in [first, *later]}
    assert finals[first]["status"] == "succeeded"
    assert sorted(finals[rid]["status"] for rid in later) == ["skipped", "skipped", "succeeded"]
    [waited] = [rid for rid in later if finals[rid]["status"] == "succeeded"]
    for rid in later:
        if rid != waited:
            assert finals[rid]["attempts"] == 0 and "waits behind it" in finals[rid]["error"], finals[rid]
    calls = server.calls_to("/one-waits")
    assert [c.idempotency_key for c in calls] == [first, waited]
    # Never two at once: the waiting fire's call began after the first one was answered (4 s), and at
    # once (woken by the first fire's outcome, not by its own message coming back a lease later).
    gap = calls[1].at - calls[0].at
    assert 4.0 <= gap < 5.0, gap
    # The slot is free once the waiting fire is final: the next fire runs at once.
    following = await fire(bus, job_id, base + 1000)
    assert (await final_run(mongo_db, following))["status"] == "succeeded"

    async def slot_freed() -> bool:  # freed just after the run's final status is written
        return await mongo_db[names.RUNS].find_one({"_id": f"{job_id}:running"}) is None

    await wait_until(slot_freed)


async def test_overlap_skip_holds_the_slot_across_retries(mongo_db, bus, services, server) -> None:  # type: ignore[no-untyped-def]
    """A fire holds its job's slot from its first attempt to its final outcome (issue 14, bug 2): a newer
    fire delivered while the first waits for its retry is skipped, and the target never sees two calls
    of the job at once."""
    await add_tenant(mongo_db)

    def flaky(call: Call, n: int) -> Reply:
        return Reply(503) if n == 0 else Reply(200, delay=0.3)

    server.routes["/once-at-a-time"] = flaky
    retry = RetryPolicy(max_attempts=3, min_backoff_seconds=2.0, max_backoff_seconds=2.0)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/once-at-a-time")), retry=retry, overlap="skip")
    await services()
    base = int(time.time() * 1000)
    first = await fire(bus, job_id, base - 2000)

    async def waiting_for_retry() -> bool:
        doc = await run_doc(mongo_db, first)
        return doc is not None and doc["status"] == "queued" and doc["attempts"] == 1

    await wait_until(waiting_for_retry)
    second = await fire(bus, job_id, base - 1000)
    skipped = await final_run(mongo_db, second)
    assert skipped["status"] == "skipped" and skipped["attempts"] == 0, skipped
    assert "still running" in skipped["error"]
    done = await final_run(mongo_db, first)
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    calls = server.calls_to("/once-at-a-time")
    assert {c.headers["idempotency-key"] for c in calls} == {first}
    # The slot is free again once the fire is final: the next fire runs.
    third = await fire(bus, job_id, base)
    assert (await final_run(mongo_db, third))["status"] == "succeeded"


async def test_total_timeout(mongo_db, bus, services, server) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    server.routes["/hang"] = lambda c, n: Reply(hang=True)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/hang"), timeout_seconds=0.5))
    await services()
    started = time.monotonic()
    doc = await final_run(mongo_db, await fire(bus, job_id))
    assert doc["status"] == "failed"
    assert "timed out" in doc["error"]
    assert doc["httpStatus"] is None
    assert time.monotonic() - started < 10


async def test_a_run_longer_than_the_ack_deadline_is_not_redelivered(mongo_db, bus, services, server, fast) -> None:  # type: ignore[no-untyped-def]
    """The ack deadline is 2 s; the target takes 5 s. The worker extends the deadline while it waits."""
    await add_tenant(mongo_db)
    server.routes["/slow"] = lambda c, n: Reply(200, b"late", delay=5.0)
    retry = RetryPolicy(max_attempts=3, min_backoff_seconds=0.1, max_backoff_seconds=0.2)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/slow"), timeout_seconds=30), retry=retry)
    await services()
    doc = await final_run(mongo_db, await fire(bus, job_id))
    assert doc["status"] == "succeeded" and doc["attempts"] == 1 and doc["durationMs"] >= 4900
    await wait_until(lambda: consumer_settled(fast))
    await asyncio.sleep(fast.run_ack_wait_seconds + 0.5)
    assert len(server.calls) == 1


async def test_a_slow_outcome_write_does_not_let_another_worker_call_again(  # type: ignore[no-untyped-def]
    mongo_db, bus, services, server, fast, monkeypatch
) -> None:
    """Recording the outcome takes longer than the ack deadline (2 s), with a second worker waiting.

    The claim must stay alive until the outcome is written and acknowledged; otherwise the message is
    redelivered, the other worker claims attempt 2 and calls the target a second time.
    """
    real_finish = MongoRunStore.finish

    async def slow_finish(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        await asyncio.sleep(fast.run_ack_wait_seconds * 2.5)  # the database is slow, not broken
        return await real_finish(self, *args, **kwargs)

    monkeypatch.setattr(MongoRunStore, "finish", slow_finish)
    await add_tenant(mongo_db)
    server.routes["/once"] = lambda c, n: Reply(200, b"ok")
    retry = RetryPolicy(max_attempts=3, min_backoff_seconds=0.1, max_backoff_seconds=0.2)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/once")), retry=retry)
    await services()
    await services()
    doc = await final_run(mongo_db, await fire(bus, job_id))
    assert doc["status"] == "succeeded"
    assert doc["attempts"] == 1
    await wait_until(lambda: consumer_settled(fast))
    assert len(server.calls_to("/once")) == 1


async def test_connect_failure_is_recorded(mongo_db, bus, services) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    closed = WebhookReceiver()
    await closed.start()
    url = closed.url("/nobody")
    await closed.close()
    job_id = await add_job(mongo_db, HttpTarget(url=url))
    await services()
    doc = await final_run(mongo_db, await fire(bus, job_id))
    assert doc["status"] == "failed" and "ConnectError" in doc["error"]


async def test_response_read_cap(mongo_db, bus, services, server, fast) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    capped = dataclasses.replace(fast, response_read_cap_bytes=4096, response_snippet_bytes=100)
    huge = 50 * 1024 * 1024
    server.routes["/huge"] = lambda c, n: Reply(200, stream_bytes=huge)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/huge"), timeout_seconds=20))
    await services(capped)
    doc = await final_run(mongo_db, await fire(bus, job_id))
    assert doc["status"] == "succeeded"
    assert doc["responseSnippet"] == "a" * 100
    # The worker hung up long before the body ended (socket buffers hold a few MB at most).
    assert server.streamed < huge // 2


async def test_redirects_are_followed_and_limited(mongo_db, bus, services, server) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    server.routes["/r1"] = lambda c, n: Reply(307, b"", {"Location": "/r2"})
    server.routes["/r2"] = lambda c, n: Reply(303, b"", {"Location": server.url("/final")})
    server.routes["/final"] = lambda c, n: Reply(200, b"done")
    server.routes["/loop"] = lambda c, n: Reply(302, b"", {"Location": "/loop"})
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/r1"), body="payload"))
    looping = await add_job(mongo_db, HttpTarget(url=server.url("/loop")))
    await services()

    doc = await final_run(mongo_db, await fire(bus, job_id))
    assert doc["status"] == "succeeded" and doc["responseSnippet"] == "done"
    [r1], [r2], [final] = server.calls_to("/r1"), server.calls_to("/r2"), server.calls_to("/final")
    assert r2.method == "POST" and r2.body == b"payload"  # 307 keeps method and body
    assert final.method == "GET" and final.body == b""  # 303 switches to GET
    assert final.headers["idempotency-key"] == r1.headers["idempotency-key"]

    doc = await final_run(mongo_db, await fire(bus, looping))
    assert doc["status"] == "failed" and "too many redirects" in doc["error"]
    assert len(server.calls_to("/loop")) == 6  # the first request and five redirects


async def test_address_policy_refuses_loopback_unless_allow_listed(mongo_db, bus, services, server, fast) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    strict = dataclasses.replace(fast, target_allow_networks=())
    retry = RetryPolicy(max_attempts=3, min_backoff_seconds=0.1, max_backoff_seconds=0.1)
    by_ip = await add_job(mongo_db, HttpTarget(url=server.url("/a")), retry=retry)
    by_name = await add_job(mongo_db, HttpTarget(url=server.url("/b", host="localhost")), retry=retry)
    service = await services(strict)

    doc = await final_run(mongo_db, await fire(bus, by_ip))
    assert doc["status"] == "failed" and doc["attempts"] == 1  # a refusal is not retried
    assert "loopback" in doc["error"] and "127.0.0.1" in doc["error"]
    doc = await final_run(mongo_db, await fire(bus, by_name))
    assert doc["status"] == "failed" and "loopback" in doc["error"] and "localhost" in doc["error"]
    assert server.calls == []
    await service.stop()

    # The allow-list makes the exception: the same name now reaches the server, Host kept as the name.
    await services(fast)
    doc = await final_run(mongo_db, await fire(bus, by_name, int(time.time() * 1000) + 1))
    assert doc["status"] == "succeeded"
    [call] = server.calls
    assert call.headers["host"] == f"localhost:{server.port}"


async def test_redirect_hops_are_rechecked(mongo_db, bus, services, server, fast) -> None:  # type: ignore[no-untyped-def]
    """Only 127.0.0.1 is allowed; a redirect to 127.0.0.2 (also loopback) is refused before connecting."""
    await add_tenant(mongo_db)
    narrow = dataclasses.replace(fast, target_allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    server.routes["/jump"] = lambda c, n: Reply(302, b"", {"Location": f"http://127.0.0.2:{server.port}/inside"})
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/jump")))
    await services(narrow)
    doc = await final_run(mongo_db, await fire(bus, job_id))
    assert doc["status"] == "failed" and "127.0.0.2" in doc["error"] and "loopback" in doc["error"]
    assert [c.path for c in server.calls] == ["/jump"]


async def test_nats_target_publishes_with_identity_headers(mongo_db, bus, services, fast) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    subject = f"tenant.{TENANT}.{fast.prefix}.ping"
    nc = await nats.connect(fast.nats_url)
    sub = await nc.subscribe(subject)
    await nc.flush()  # the subscription is registered before anything is published
    try:
        job_id = await add_job(mongo_db, NatsTarget(subject=subject, payload={"n": 1}, headers={"X-Mine": "1"}))
        reserved = await add_job(mongo_db, NatsTarget(subject=f"{fast.prefix}.runs.0", payload="x"))
        await services()
        rid = await fire(bus, job_id)
        msg = await sub.next_msg(timeout=WAIT)
        assert json.loads(msg.data) == {"n": 1}
        assert msg.headers is not None
        assert msg.headers["Idempotency-Key"] == rid
        assert msg.headers["X-Schedsvc-Attempt"] == "1"
        assert msg.headers["X-Schedsvc-Job-Id"] == job_id
        assert msg.headers["X-Mine"] == "1"
        assert (await final_run(mongo_db, rid))["status"] == "succeeded"

        doc = await final_run(mongo_db, await fire(bus, reserved))
        assert doc["status"] == "failed" and "reserved" in doc["error"]
    finally:
        await nc.close()


async def test_deleted_job_is_dropped(mongo_db, bus, services, server, fast) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/x")))
    await mongo_db[names.JOBS].delete_one({"_id": job_id})
    await services()
    rid = await fire(bus, job_id)
    await wait_until(lambda: consumer_settled(fast))
    assert await run_doc(mongo_db, rid) is None
    assert server.calls == []


async def test_a_run_waiting_for_a_retry_when_its_job_is_deleted_ends_skipped(mongo_db, bus, services, server) -> None:  # type: ignore[no-untyped-def]
    """Not left queued for ever: its retry's delivery records it skipped (and the call is not made)."""
    await add_tenant(mongo_db)
    server.routes["/fails"] = lambda c, n: Reply(503)
    retry = RetryPolicy(max_attempts=3, min_backoff_seconds=1.0, max_backoff_seconds=1.0)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/fails")), retry=retry)
    await services()
    rid = await fire(bus, job_id)

    async def waiting_for_retry() -> bool:
        doc = await run_doc(mongo_db, rid)
        return doc is not None and doc["status"] == "queued" and doc["attempts"] == 1

    await wait_until(waiting_for_retry)
    await mongo_db[names.JOBS].delete_one({"_id": job_id})
    doc = await final_run(mongo_db, rid)
    assert doc["status"] == "skipped" and doc["error"] == "the job no longer exists", doc
    assert doc["attempts"] == 1 and len(server.calls) == 1


async def test_a_job_stored_with_an_unreadable_target_fails_its_run(mongo_db, bus, services, server, fast) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/x")))
    await mongo_db[names.JOBS].update_one({"_id": job_id}, {"$set": {"target": {"kind": "carrier-pigeon"}}})
    await services()
    doc = await final_run(mongo_db, await fire(bus, job_id))
    assert doc["status"] == "failed" and "stored definition is invalid" in doc["error"]
    [(headers, _)] = await wait_until(lambda: dead_letters(fast))
    assert headers["Schedsvc-Job-Id"] == job_id
    assert server.calls == []


async def test_paused_job_skips_scheduled_fires_but_runs_manual_ones(mongo_db, bus, services, server) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/p")), status="paused")
    await services()
    base = int(time.time() * 1000)
    assert (await final_run(mongo_db, await fire(bus, job_id, base - 10)))["status"] == "skipped"
    manual = await fire(bus, job_id, base, trigger="manual")
    doc = await final_run(mongo_db, manual)
    assert doc["status"] == "succeeded" and doc["trigger"] == "manual"
    assert len(server.calls) == 1


async def test_a_stored_target_the_policy_refuses_fails_without_a_call(mongo_db, bus, services, server, fast) -> None:  # type: ignore[no-untyped-def]
    """The API refuses these at create time; a job stored behind its back meets the same policy before
    every call (here a lowercase service header and a header value with CRLF)."""
    await add_tenant(mongo_db)
    retry = RetryPolicy(max_attempts=3, min_backoff_seconds=0.1, max_backoff_seconds=0.1)
    await services()
    for headers in ({"host": "evil"}, {"X-A": "a\r\nX-B: b"}):
        job_id = await add_job(mongo_db, HttpTarget(url=server.url("/x"), headers=headers), retry=retry)
        doc = await final_run(mongo_db, await fire(bus, job_id))
        assert doc["status"] == "failed" and doc["attempts"] == 1 and "target refused" in doc["error"], doc
    assert server.calls == []


async def test_a_poison_run_is_failed_and_dead_lettered_not_looped(mongo_db, bus, services, server, fast) -> None:  # type: ignore[no-untyped-def]
    """A deeply nested body (stored behind the API's back; 600 levels once made every delivery fail the same way,
    redelivered every 5 s for ever): now the run fails once, with the reason, and is dead-lettered."""
    await add_tenant(mongo_db)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/x")))
    deep: Any = 1
    for _ in range(90):  # MongoDB stores at most 100 levels
        deep = {"a": deep}
    await mongo_db[names.JOBS].update_one({"_id": job_id}, {"$set": {"target.body": deep}})
    # The worker's log lines carry the job and run ids (formatted as they are written, in the run's task).
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("schedsvc.execution.worker").addHandler(handler)
    try:
        await services()
        rid = await fire(bus, job_id)
        doc = await final_run(mongo_db, rid)
    finally:
        logging.getLogger("schedsvc.execution.worker").removeHandler(handler)
    assert doc["status"] == "failed" and "nested deeper" in doc["error"]
    entries = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert any("dead-lettered" in e["msg"] and e["jobId"] == job_id and e["runId"] == rid for e in entries), entries
    [(headers, _)] = await wait_until(lambda: dead_letters(fast))
    assert headers["Schedsvc-Job-Id"] == job_id
    await wait_until(lambda: consumer_settled(fast))  # acknowledged: no further deliveries
    assert server.calls == []


@pytest.mark.parametrize("dies_at", ["ack", "job update"])
async def test_a_redelivered_finished_run_does_not_call_again(  # type: ignore[no-untyped-def]
    mongo_db, bus, services, server, fast, monkeypatch, dies_at
) -> None:
    """The worker dies after the run was recorded but before its ack (before or after it updated the
    job's lastRun): the redelivery completes what is missing and acks, without calling the target."""
    from schedsvc.bus import JetStreamRunDelivery

    await add_tenant(mongo_db)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/once")))
    owner, name = (JetStreamRunDelivery, "ack") if dies_at == "ack" else (MongoRunStore, "update_job_last_run")
    real = getattr(owner, name)
    stuck = asyncio.Event()

    async def dies_here(*args: Any) -> None:
        stuck.set()
        await asyncio.Event().wait()  # never returns: the worker is "killed" here

    monkeypatch.setattr(owner, name, dies_here)
    first = await services(shutdown_grace_seconds=0.0)
    rid = await fire(bus, job_id)
    await asyncio.wait_for(stuck.wait(), WAIT)
    assert (await run_doc(mongo_db, rid))["status"] == "succeeded"
    await first.stop()  # cancels the stuck task

    monkeypatch.setattr(owner, name, real)
    await services()
    await wait_until(lambda: consumer_settled(fast))  # redelivered, then acked
    assert len(server.calls) == 1
    assert (await run_doc(mongo_db, rid))["attempts"] == 1
    assert (await job_after_run(mongo_db, job_id))["lastRunStatus"] == "succeeded"


@pytest.mark.parametrize("dies_at", ["hand_over_job_slot", "publish_runs"])
async def test_a_waiting_fire_survives_the_holder_s_worker_dying(  # type: ignore[no-untyped-def]
    mongo_db, bus, services, server, fast, monkeypatch, dies_at
) -> None:
    """Overlap ``bufferOne``: the worker of the running fire dies after recording its outcome, before
    handing the slot over (the redelivery of its finished run hands it over) or before waking the waiting
    fire (the waiting fire's own message comes back and finds the slot its own). Either way the waiting
    fire runs, once, and nothing else calls the target."""
    await add_tenant(mongo_db)
    server.routes["/crash"] = lambda c, n: Reply(delay=1.0)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/crash")), overlap="bufferOne")
    owner = MongoRunStore if dies_at == "hand_over_job_slot" else NatsRunBus
    real = getattr(owner, dies_at)
    publish = NatsRunBus.publish_runs  # the test's own publishes take the real method
    stuck = asyncio.Event()

    async def dies_here(*args: Any, **kwargs: Any) -> None:
        stuck.set()
        await asyncio.Event().wait()  # never returns: the worker is "killed" here

    async def send(scheduled_ms: int) -> str:
        await publish(bus, [RunMessage(job_id, TENANT, scheduled_ms, scheduled_ms, "scheduled", 1)], [0])
        return run_id(job_id, scheduled_ms)

    monkeypatch.setattr(owner, dies_at, dies_here)
    first = await services(shutdown_grace_seconds=0.0)
    base = int(time.time() * 1000)
    running = await send(base - 2000)
    await asyncio.wait_for(server.arrived.wait(), WAIT)
    waiting = await send(base - 1000)
    await asyncio.wait_for(stuck.wait(), WAIT)
    assert (await run_doc(mongo_db, running))["status"] == "succeeded"
    assert await run_doc(mongo_db, waiting) is None  # still waiting
    await first.stop()  # cancels the stuck task

    monkeypatch.setattr(owner, dies_at, real)
    await services()
    assert (await final_run(mongo_db, waiting))["status"] == "succeeded"
    assert [c.idempotency_key for c in server.calls_to("/crash")] == [running, waiting]


def spawn_worker(settings: Settings) -> subprocess.Popen[bytes]:
    """A separate ``python -m schedsvc.execution`` process configured by ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDSVC_")} | settings.to_env()
    return subprocess.Popen(
        [sys.executable, "-m", "schedsvc.execution"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@pytest.mark.slow
@pytest.mark.parametrize("max_attempts", [3, 1])
async def test_worker_killed_mid_call(mongo_db, bus, services, server, fast, max_attempts) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL a worker process while the target works: the interrupted attempt counts, and the run is
    retried (or, with no attempts left, failed) by another worker after the ack deadline."""
    await add_tenant(mongo_db)
    server.routes["/kill"] = lambda c, n: Reply(hang=True) if n == 0 else Reply(200, b"second")
    retry = RetryPolicy(max_attempts=max_attempts, min_backoff_seconds=0.1, max_backoff_seconds=0.2)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/kill"), timeout_seconds=60), retry=retry)
    proc = spawn_worker(fast)
    try:
        rid = await fire(bus, job_id)
        await asyncio.wait_for(server.arrived.wait(), WAIT)
        running = await run_doc(mongo_db, rid)
        assert running["status"] == "running" and running["attempts"] == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    await services()
    doc = await final_run(mongo_db, rid)
    calls = server.calls_to("/kill")
    if max_attempts == 1:
        assert doc["status"] == "failed" and doc["attempts"] == 1
        assert "interrupted" in doc["error"]
        assert len(calls) == 1
        assert len(await dead_letters(fast)) == 1
    else:
        assert doc["status"] == "succeeded" and doc["attempts"] == 2 and doc["responseSnippet"] == "second"
        assert [c.headers["x-schedsvc-attempt"] for c in calls] == ["1", "2"]
        assert calls[0].headers["idempotency-key"] == calls[1].headers["idempotency-key"] == rid
    await wait_until(lambda: consumer_settled(fast))


async def test_stop_hands_back_runs_past_the_grace_period(mongo_db, bus, services, server, fast) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    server.routes["/long"] = lambda c, n: Reply(hang=True) if n == 0 else Reply()
    retry = RetryPolicy(max_attempts=3, min_backoff_seconds=0.1, max_backoff_seconds=0.2)
    job_id = await add_job(mongo_db, HttpTarget(url=server.url("/long"), timeout_seconds=60), retry=retry)
    first = await services(shutdown_grace_seconds=0.2)
    rid = await fire(bus, job_id)
    await asyncio.wait_for(server.arrived.wait(), WAIT)
    assert first.ready
    started = time.monotonic()
    await first.stop()
    assert not first.ready
    assert time.monotonic() - started < 5
    doc = await run_doc(mongo_db, rid)
    assert doc["status"] == "queued" and doc["attempts"] == 1 and "shutdown" in doc["error"]

    await services()
    doc = await final_run(mongo_db, rid)
    assert doc["status"] == "succeeded" and doc["attempts"] == 2


async def test_stop_hands_back_messages_received_but_not_started(mongo_db, bus, services, server, fast) -> None:  # type: ignore[no-untyped-def]
    """A graceful stop puts back at once what the process received but did not start (issue 14, bug 3).

    A pull request can outlive the fetch that made it; the server then delivers into the stopping
    process's subscription. Here such a request is made explicitly while the process is busy (one run
    slot, taken by a hanging call, so it fetches nothing itself). Unhandled, the message would come back
    only after its ack deadline (60 s here); handed back, the next process runs it within seconds.
    """
    await add_tenant(mongo_db)
    server.routes["/busy"] = lambda c, n: Reply(hang=True) if n == 0 else Reply()
    busy = await add_job(mongo_db, HttpTarget(url=server.url("/busy"), timeout_seconds=60))
    waiting = await add_job(mongo_db, HttpTarget(url=server.url("/waiting")))
    slow_ack = dataclasses.replace(fast, run_ack_wait_seconds=60.0, max_concurrent_runs=1)
    first = await services(slow_ack, shutdown_grace_seconds=0.2)
    await fire(bus, busy)
    await asyncio.wait_for(server.arrived.wait(), WAIT)

    subscription = first._subscription._psub  # test-only: the process's own pull subscription
    n = Names(fast.prefix)
    nc = await nats.connect(fast.nats_url)
    try:
        request = {"batch": 1, "expires": 20_000_000_000}
        await nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{n.run_stream}.{n.worker_consumer}",
            json.dumps(request).encode(),
            reply=subscription._deliver,
        )
        await nc.flush()
    finally:
        await nc.close()
    await asyncio.sleep(0.3)
    rid = await fire(bus, waiting)
    await wait_until(lambda: asyncio.sleep(0, subscription._sub._pending_queue.qsize() == 1))

    await first.stop()
    stopped = time.monotonic()
    await services(slow_ack)
    doc = await final_run(mongo_db, rid, timeout=20)
    assert doc["status"] == "succeeded" and doc["attempts"] == 1
    assert time.monotonic() - stopped < 10


async def test_many_runs_with_bounded_concurrency(mongo_db, bus, services, server, fast) -> None:  # type: ignore[no-untyped-def]
    await add_tenant(mongo_db)
    active = 0
    peak = 0

    def behaviour(call: Call, n: int) -> Reply:
        return Reply(200)

    server.routes["/many"] = behaviour
    job_ids = [await add_job(mongo_db, HttpTarget(url=server.url("/many"))) for _ in range(40)]
    limited = dataclasses.replace(fast, max_concurrent_runs=4)
    service = await services(limited)
    original = service._worker.process  # type: ignore[union-attr]

    async def counting(delivery):  # type: ignore[no-untyped-def]
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await original(delivery)
        finally:
            active -= 1

    service._worker.process = counting  # type: ignore[union-attr, method-assign]
    now = int(time.time() * 1000)
    await bus.publish_runs([RunMessage(j, TENANT, now, now, "scheduled", 1) for j in job_ids], [0] * len(job_ids))

    async def all_done() -> bool:
        return await mongo_db[names.RUNS].count_documents({"status": "succeeded"}) == len(job_ids)

    await wait_until(all_done, timeout=90)
    assert 1 <= peak <= 4
    assert len(server.calls) == len(job_ids)


async def test_run_history_pages(mongo_db, fast) -> None:  # type: ignore[no-untyped-def]
    store = MongoRunHistory(mongo_db, RunRetention(None, fast))
    job_id = str(ObjectId())
    base = 1_700_000_000_000
    for i in range(5):
        await mongo_db[names.RUNS].insert_one(
            {
                "_id": run_id(job_id, base + i * 1000),
                "jobId": job_id,
                "tenant": TENANT,
                "scheduledAt": datetime.fromtimestamp((base + i * 1000) / 1000, tz=UTC),
                "trigger": "scheduled",
                "status": "succeeded",
                "attempts": 1,
            }
        )
    await mongo_db[names.RUNS].insert_one(
        {
            "_id": run_id(job_id, base + 9000),
            "jobId": job_id,
            "tenant": "other",
            "scheduledAt": datetime.fromtimestamp((base + 9000) / 1000, tz=UTC),
            "trigger": "scheduled",
            "status": "succeeded",
            "attempts": 1,
        }
    )
    seen = []
    cursor = None
    while True:
        page, cursor = await store.list_for_job(TENANT, job_id, 2, cursor)
        seen += [r.id for r in page]
        if cursor is None:
            break
    assert seen == [run_id(job_id, base + i * 1000) for i in reversed(range(5))]
    page, _ = await store.list_for_job(TENANT, job_id, 1, None)
    assert page[0].status == "succeeded" and page[0].attempts == 1 and page[0].job_id == job_id
    with pytest.raises(InvalidCursorError):
        await store.list_for_job(TENANT, job_id, 2, "not-a-cursor")


@pytest.mark.slow
async def test_end_to_end_through_api_and_timing(server, fast) -> None:  # type: ignore[no-untyped-def]
    """A job created through the API with a 1-second interval: runs reach the target and the history."""
    key = "sk_00000000000000ee_" + "e" * 43
    settings = dataclasses.replace(
        fast, roles=frozenset({"api", "timing", "execution"}), dev_mode=True, dev_api_key=key
    )
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with AsyncTestClient(create_app(settings)) as client:
            body = {
                "name": "every-second",
                "schedule": {"kind": "interval", "seconds": 1},
                "target": {"kind": "http", "url": server.url("/e2e"), "body": {"hello": "e2e"}},
            }
            r = await client.post("/jobs", json=body, headers=headers)
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]

            await wait_until(lambda: asyncio.sleep(0, len(server.calls_to("/e2e")) >= 3), timeout=30)

            async def history() -> list[dict[str, Any]] | None:
                r = await client.get(f"/jobs/{job_id}/runs", params={"limit": 10}, headers=headers)
                assert r.status_code == 200, r.text
                items = [i for i in r.json()["items"] if i["status"] == "succeeded"]
                return items if len(items) >= 3 else None

            items = await wait_until(history, timeout=30)
            assert all(i["jobId"] == job_id and i["attempts"] == 1 for i in items)
            scheduled = [datetime.fromisoformat(i["scheduledAt"]) for i in items]
            assert scheduled == sorted(scheduled, reverse=True)  # newest first
            keys = [c.headers["idempotency-key"] for c in server.calls_to("/e2e")]
            assert len(keys) == len(set(keys))  # one call per fire
            assert {i["id"] for i in items} <= set(keys)
    finally:
        await drop_database(settings)
        await delete_run_streams(settings)


async def test_a_dead_letter_is_listed_and_retried_on_demand(server, fast) -> None:  # type: ignore[no-untyped-def]
    """A run that exhausted its retries is listed for its tenant (GET /runs?status=failed) and can be
    retried on demand, one by one or by filter: one more attempt, same run id and idempotency key; bounded;
    tenant-isolated. A run is dead-lettered once: a retry that fails again adds no second dead letter."""
    key = "sk_00000000000000dd_" + "d" * 43
    settings = dataclasses.replace(
        fast,
        roles=frozenset({"api", "execution"}),
        dev_mode=True,
        dev_api_key=key,
        target_allow_networks=(ipaddress.ip_network("127.0.0.0/8"),),
    )
    headers = {"Authorization": f"Bearer {key}"}
    healthy = False
    server.routes["/dead"] = lambda c, n: Reply(200, b"fine") if healthy else Reply(500, b"down")
    try:
        async with AsyncTestClient(create_app(settings)) as client:
            mongo = connect(settings)
            try:
                other_key, _ = await MongoTenantStore(database(mongo, settings)).create_tenant("rival")
            finally:
                await mongo.close()
            body = {
                "name": "fragile",
                "schedule": {"kind": "interval", "seconds": 3600},
                "target": {"kind": "http", "url": server.url("/dead")},
                "retry": {"maxAttempts": 2, "minBackoffSeconds": 0.1, "maxBackoffSeconds": 0.2},
            }
            r = await client.post("/jobs", json=body, headers=headers)
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            rid = (await client.post(f"/jobs/{job_id}/run", headers=headers)).json()["runId"]

            async def run_in(status: str, attempts: int) -> dict[str, Any] | None:
                r = await client.get(f"/runs/{rid}", headers=headers)
                run = r.json() if r.status_code == 200 else None
                return run if run and run["status"] == status and run["attempts"] == attempts else None

            await wait_until(lambda: run_in("failed", 2))
            r = await client.get("/runs", params={"status": "failed"}, headers=headers)
            assert [i["id"] for i in r.json()["items"]] == [rid]
            assert r.json()["items"][0]["error"] == "HTTP 500"
            rival = {"Authorization": f"Bearer {other_key.key}"}
            assert (await client.get("/runs", params={"status": "failed"}, headers=rival)).json()["items"] == []
            assert (await client.post(f"/runs/{rid}/retry", headers=rival)).status_code == 404

            # Still failing: each retry on demand is exactly one more attempt, then failed again.
            r = await client.post(f"/runs/{rid}/retry", headers=headers)
            assert r.status_code == 202, r.text
            assert r.json()["runId"] == rid
            await wait_until(lambda: run_in("failed", 3))
            # Failed again within the dead-letter stream's duplicate window: no second dead letter.
            assert [h["Nats-Msg-Id"] for h, _ in await dead_letters(settings)] == [f"{rid}:dead"]
            healthy = True
            assert (await client.post(f"/runs/{rid}/retry", headers=headers)).status_code == 202
            run = await wait_until(lambda: run_in("succeeded", 4))
            assert [a["number"] for a in run["attemptHistory"]] == [1, 2, 3, 4]
            assert [a["httpStatus"] for a in run["attemptHistory"]] == [500, 500, 500, 200]
            assert run["retriesOnDemand"] == 2
            calls = server.calls_to("/dead")
            assert [c.headers["x-schedsvc-attempt"] for c in calls] == ["1", "2", "3", "4"]
            assert {c.headers["idempotency-key"] for c in calls} == {rid}
            r = await client.post(f"/runs/{rid}/retry", headers=headers)
            assert r.status_code == 409 and "only a failed run" in r.text

            # Bounded: after MAX_RETRIES_ON_DEMAND retries the run is not reopened again.
            first_rid = rid
            healthy = False
            rid = (await client.post(f"/jobs/{job_id}/run", headers=headers)).json()["runId"]
            await wait_until(lambda: run_in("failed", 2))
            for retry in range(1, MAX_RETRIES_ON_DEMAND + 1):
                assert (await client.post(f"/runs/{rid}/retry", headers=headers)).status_code == 202
                await wait_until(lambda retry=retry: run_in("failed", 2 + retry))  # type: ignore[misc]
            r = await client.post(f"/runs/{rid}/retry", headers=headers)
            assert r.status_code == 409 and "already retried" in r.text
            assert (await client.post(f"/runs/{job_id}:1/retry", headers=headers)).status_code == 404
            exhausted_rid = rid

            # By filter: the job's failed runs in one request; the exhausted one is refused and says why.
            rid = (await client.post(f"/jobs/{job_id}/run", headers=headers)).json()["runId"]
            await wait_until(lambda: run_in("failed", 2))
            healthy = True
            r = await client.post("/runs/retry", json={"job": job_id}, headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["retriedRuns"] == [rid]
            assert [(x["runId"], x["reason"]) for x in r.json()["refusals"]] == [(exhausted_rid, "exhausted")]
            await wait_until(lambda: run_in("succeeded", 3))

            # Each failed run was dead-lettered once, whatever its retries on demand did afterwards.
            letters = [h["Nats-Msg-Id"] for h, _ in await dead_letters(settings)]
            assert sorted(letters) == sorted(f"{r}:dead" for r in (first_rid, exhausted_rid, rid))
            nc = await nats.connect(settings.nats_url)
            try:
                dlq = await nc.jetstream().stream_info(Names(settings.prefix).dead_letter_stream)
                assert dlq.config.duplicate_window == DEDUP_WINDOW_SECONDS == 15 * 60
            finally:
                await nc.close()
    finally:
        await drop_database(settings)
        await delete_run_streams(settings)
