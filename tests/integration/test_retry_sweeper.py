"""The execution module's sweeper against real sockets: a retry on demand whose message never reached the run
stream (the API died between the reopen and the publish, or could not undo the reopen) still runs, once.

Runs are arranged with the stores exactly as a crash leaves them: failed by execution, reopened by the run
history, and no message published. The execution module under test sweeps every 0.2 s instead of every minute;
a reopen counts as stranded after the production default (two minutes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY
from tests.integration import test_execution
from tests.integration.test_execution import TENANT, add_job, add_tenant, consumer_settled, final_run, run_doc
from tests.integration.test_runs_api import published_retries, write_run

from schedsvc import names
from schedsvc.config import Settings
from schedsvc.domain.models import HttpTarget, Run, RunMessage, RunStatus
from schedsvc.domain.runs import RunEnd, retry_message_id
from schedsvc.domain.time import to_ms, utcnow
from schedsvc.execution import ExecutionService
from schedsvc.job_service.runs import MAX_RETRIES_ON_DEMAND
from schedsvc.store.retention import RunRetention
from schedsvc.store.run_history import MongoRunHistory
from schedsvc.store.runs import MongoRunStore
from schedsvc.testing import WebhookReceiver

SWEEP = 0.2
"""The sweep interval of the execution module under test (production: 60 s)."""
Services = Callable[..., Awaitable[ExecutionService]]
# The execution tests' fixtures (pytest looks fixtures up among a module's names).
bus, fast, server, services = test_execution.bus, test_execution.fast, test_execution.server, test_execution.services


async def stranded(db: Any, settings: Settings, job_id: str, minutes: int, reopened_ago: timedelta) -> Run:
    """A run of ``job_id`` failed ``minutes`` ago and reopened for a retry on demand ``reopened_ago``, whose
    message was never published."""
    scheduled = datetime.now(UTC) - timedelta(minutes=minutes)
    rid = await write_run(db, settings, TENANT, job_id, scheduled, "failed")
    history = MongoRunHistory(db, RunRetention(None, settings))
    reopened = await history.reopen_for_retry(TENANT, rid, utcnow() - reopened_ago, MAX_RETRIES_ON_DEMAND)
    assert isinstance(reopened, Run), reopened
    return reopened


async def job_with_stranded_retry(db: Any, settings: Settings, url: str, minutes: int) -> tuple[str, Run]:
    """A new tenant's job calling ``url``, and its run that failed ``minutes`` ago and was reopened five minutes
    ago, long enough to count as stranded."""
    await add_tenant(db)
    job_id = await add_job(db, HttpTarget(url=url))
    return job_id, await stranded(db, settings, job_id, minutes, reopened_ago=timedelta(minutes=5))


def republished() -> float:
    return REGISTRY.get_sample_value("schedsvc_retries_republished_total") or 0.0


async def sweeps(n: int) -> None:
    """Let the execution module sweep about ``n`` more times (each pause is the interval ± 20 %)."""
    await asyncio.sleep(n * SWEEP * 1.2)


async def test_a_retry_reopened_but_never_published_runs_exactly_once(
    mongo_db: Any, bus: Any, services: Services, server: WebhookReceiver, fast: Settings
) -> None:
    job_id, lost = await job_with_stranded_retry(mongo_db, fast, server.url("/again"), minutes=30)
    # Reopened a moment ago: its message may well be on its way, so it is not stranded yet.
    recent = await stranded(mongo_db, fast, job_id, minutes=20, reopened_ago=timedelta(seconds=1))
    reopened_at = (await run_doc(mongo_db, lost.id) or {})["reopenedAt"]
    before = republished()

    await services(retry_sweep_seconds=SWEEP)
    doc = await final_run(mongo_db, lost.id)
    assert doc["status"] == "succeeded" and doc["attempts"] == 2 and doc["retriesOnDemand"] == 1, doc
    assert "reopenedAt" not in doc  # the claim of its attempt cleared it
    await sweeps(5)

    # Published once, under the reopen's own message id; later sweeps found nothing more to publish.
    assert await published_retries(fast) == [retry_message_id(lost.id, 1, reopened_at)]
    assert [call.path for call in server.calls] == ["/again"]
    assert republished() - before == 1
    assert await consumer_settled(fast)
    waiting = await run_doc(mongo_db, recent.id)
    assert waiting is not None and waiting["status"] == "queued" and waiting["reopenedAt"] is not None


async def test_runs_queued_for_an_automatic_retry_are_not_published_again(
    mongo_db: Any, bus: Any, services: Services, server: WebhookReceiver, fast: Settings
) -> None:
    await add_tenant(mongo_db)
    retrying_job = await add_job(mongo_db, HttpTarget(url=server.url("/retrying")))
    witness_job = await add_job(mongo_db, HttpTarget(url=server.url("/witness")))
    # Queued for its second attempt, as record_retry leaves it (its message waits in the stream, delayed;
    # here there is none, so a message for it could only come from the sweeper).
    scheduled = datetime.now(UTC) - timedelta(minutes=10)
    retrying = await write_run(mongo_db, fast, TENANT, retrying_job, scheduled, "retrying")
    witness = await stranded(mongo_db, fast, witness_job, minutes=10, reopened_ago=timedelta(minutes=5))

    await services(retry_sweep_seconds=SWEEP)
    assert (await final_run(mongo_db, witness.id))["status"] == "succeeded"  # the sweeper did sweep
    await sweeps(5)

    assert [i.split(":retry")[0] for i in await published_retries(fast)] == [witness.id]
    assert [call.path for call in server.calls] == ["/witness"]
    doc = await run_doc(mongo_db, retrying)
    assert doc is not None and doc["status"] == "queued" and doc["attempts"] == 1 and "reopenedAt" not in doc


async def test_a_stranded_retry_of_a_deleted_job_ends_skipped_and_is_not_published_again(
    mongo_db: Any, bus: Any, services: Services, server: WebhookReceiver, fast: Settings
) -> None:
    job_id, lost = await job_with_stranded_retry(mongo_db, fast, server.url("/deleted"), minutes=10)
    await mongo_db[names.JOBS].delete_one({"_id": job_id})

    await services(retry_sweep_seconds=SWEEP)
    doc = await final_run(mongo_db, lost.id)
    assert doc["status"] == "skipped" and doc["error"] == "the job no longer exists", doc
    assert "reopenedAt" not in doc and doc["attempts"] == 1
    await sweeps(5)

    assert len(await published_retries(fast)) == 1, "published again after it ended"
    assert server.calls == []
    assert await consumer_settled(fast)


async def test_stranded_retries_are_the_reopens_whose_attempt_was_not_claimed(mongo_db: Any, fast: Settings) -> None:
    """The ledger's side: the mark lives from the reopen to the claim, the end without an attempt, or the undo."""
    retention = RunRetention(None, fast)
    ledger, history = MongoRunStore(mongo_db, retention), MongoRunHistory(mongo_db, retention)
    long_ago = timedelta(minutes=5)
    waiting = await stranded(mongo_db, fast, "job-a", minutes=50, reopened_ago=long_ago)
    claimed = await stranded(mongo_db, fast, "job-a", minutes=40, reopened_ago=long_ago)
    ended = await stranded(mongo_db, fast, "job-a", minutes=30, reopened_ago=long_ago)
    undone = await stranded(mongo_db, fast, "job-a", minutes=20, reopened_ago=long_ago)
    await stranded(mongo_db, fast, "job-b", minutes=10, reopened_ago=timedelta(seconds=1))
    await write_run(mongo_db, fast, TENANT, "job-c", datetime.now(UTC), "retrying")  # an automatic retry

    def message(run: Run) -> RunMessage:
        return RunMessage(run.job_id, TENANT, to_ms(run.scheduled_at), 0, run.trigger.value, 0)

    now = datetime.now(UTC)
    assert await ledger.claim_attempt(message(claimed), 1, now, now + timedelta(seconds=30)) == 2
    # Queued again with its message back in the stream (a stop past its grace period): not stranded.
    await ledger.release_interrupted(claimed.id, 2, "interrupted by a worker shutdown")
    assert await ledger.finish(message(ended), RunEnd(RunStatus.SKIPPED, error="the job no longer exists"), now)
    await history.revert_retries([(undone.id, 1)], now)

    found = await ledger.stranded_retries(utcnow() - timedelta(minutes=2), 10)
    [only] = found
    reopened_at = (await run_doc(mongo_db, waiting.id) or {})["reopenedAt"]
    assert only.message == RunMessage(
        waiting.job_id, TENANT, to_ms(waiting.scheduled_at), to_ms(reopened_at), "scheduled", 0
    )
    assert only.message_id == retry_message_id(waiting.id, 1, reopened_at)
    # Oldest reopen first, and bounded.
    assert [s.message.job_id for s in await ledger.stranded_retries(utcnow(), 10)] == ["job-a", "job-b"]
    assert len(await ledger.stranded_retries(utcnow(), 1)) == 1
