"""What a worker does with one run message: read, decide, claim the attempt, call the target, record, ack.

The decisions are pure functions in :mod:`schedsvc.domain.lifecycle` (what to do next, from the run as
stored and what happened); this module performs them: reads, writes (each guarded in the store on the
run not being final), acknowledgements. The run document is the source of truth and the message only a
wake-up, so a redelivery (after a crash, a lost ack or a re-publish) is recognised:

- final run → ack without calling the target again;
- running under a live lease (another worker is on it) → put back until the lease ends;
- running with an expired lease (its worker died mid-call) → that attempt counts; the next one starts, or
  the run fails when no attempts are left;
- the job was deleted → ack; a run already recorded and not final (waiting for a retry, automatic or on
  demand) is recorded ``skipped`` first, so it does not stay queued (and a retry on demand re-published by
  the sweeper) for ever;
- processing that raises → put back if the error is transient, failed and dead-lettered if it is
  permanent or the message was delivered too often.

Overlap ``skip`` and ``bufferOne`` (a job's fires never run side by side): :mod:`schedsvc.execution.overlap`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import msgspec

from schedsvc.config import Settings
from schedsvc.domain.jobs import JobForRun
from schedsvc.domain.lifecycle import (
    CONTENDED_RETRY_SECONDS,
    OVERLAP_SKIPPED,
    Decision,
    JobFacts,
    RunFacts,
    Step,
    on_delivery,
    on_error,
    on_outcome,
)
from schedsvc.domain.models import HttpTarget, RunMessage, RunStatus, RunTrigger, run_id
from schedsvc.domain.runs import AttemptRecord, RunEnd, scheduled_at
from schedsvc.execution._tenants import TenantDirectory
from schedsvc.execution.backoff import next_retry_delay
from schedsvc.execution.job_updates import JobUpdates
from schedsvc.execution.overlap import Claim, JobSlots
from schedsvc.execution.targets import CallContext, CallOutcome, TargetCaller, rfc3339
from schedsvc.observability.logging import job_id_var, run_id_var
from schedsvc.observability.metrics import DEAD_LETTERS, RUN_ATTEMPTS, RUN_DURATION, RUNS_FINISHED
from schedsvc.store.base import RunBus, RunDelivery, RunLedger

log = logging.getLogger(__name__)

# A message that arrives up to this early waits in the worker; earlier than that it goes back to JetStream.
EARLY_WAIT_SECONDS = 1.0
HAND_BACK_TIMEOUT_SECONDS = 5.0
__all__ = ["CONTENDED_RETRY_SECONDS", "OVERLAP_SKIPPED", "RunWorker", "dead_letter_headers"]
_HEADER_VALUE_MAX = 1024
_encode_message = msgspec.msgpack.Encoder().encode


class RunWorker:
    """Processes run deliveries; holds no per-run state, so one instance serves every task."""

    def __init__(
        self,
        settings: Settings,
        bus: RunBus,
        runs: RunLedger,
        tenants: TenantDirectory,
        caller: TargetCaller,
        job_updates: JobUpdates,
    ) -> None:
        self._bus = bus
        self._runs = runs
        self._tenants = tenants
        self._caller = caller
        self._job_updates = job_updates
        self._rng = random.Random()  # the retry delays' jitter
        self._lease = timedelta(seconds=settings.run_ack_wait_seconds)
        self._heartbeat_seconds = max(0.2, settings.run_ack_wait_seconds / 3)
        self._slots = JobSlots(runs, bus, self._lease)

    async def process(self, delivery: RunDelivery) -> None:
        """Handle one delivery to the end: acked, nak'd for a retry, or handed back on error/cancellation."""
        msg = delivery.message
        claim = Claim(run_id(msg.job_id, msg.scheduled_ms), msg.job_id)
        # Every log line written while this run is processed carries its ids (the task has its own context).
        job_token, run_token = job_id_var.set(msg.job_id), run_id_var.set(claim.run_id)
        try:
            await self._process(delivery, claim)
        except asyncio.CancelledError:
            # Shutdown past its grace period: the attempt (if started) counts; the message goes back now.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._hand_back(delivery, claim, "interrupted by a worker shutdown", 0.0),
                    HAND_BACK_TIMEOUT_SECONDS,
                )
            raise
        except Exception as exc:
            await self._on_error(delivery, claim, exc)
        finally:
            job_id_var.reset(job_token)
            run_id_var.reset(run_token)

    async def _on_error(self, delivery: RunDelivery, claim: Claim, exc: Exception) -> None:
        decision = on_error(exc, delivery.num_delivered)
        try:
            if decision.step == Step.FAIL:
                # Logged once with its traceback: it is a bug or bad data, and it will not repeat.
                log.error("run %s failed in the worker and is not retried", claim.run_id, exc_info=exc)
                await self._slots.release(claim)
                if not claim.settled:
                    await self._fail(delivery, claim, None, decision.reason or "worker error", claim.attempt or 0)
                return
            # One line, no traceback: an outage would otherwise log one per run per delivery.
            log.warning("run %s could not be processed; it will be redelivered: %s", claim.run_id, decision.reason)
            await asyncio.wait_for(
                self._hand_back(delivery, claim, decision.reason or "worker error", decision.delay),
                HAND_BACK_TIMEOUT_SECONDS,
            )
        except Exception as again:
            # The database or NATS is gone too: the message comes back when its ack deadline passes.
            log.warning("run %s could not be handed back: %s: %s", claim.run_id, type(again).__name__, again)

    async def _hand_back(self, delivery: RunDelivery, claim: Claim, error: str, delay: float) -> None:
        # The run is not over: it keeps its job's slot (under its lease) for the redelivery.
        claim.slot = False
        if claim.settled:
            return
        if claim.attempt is not None:
            await self._runs.release_interrupted(claim.run_id, claim.attempt, error)
        await delivery.nak(delay or None)

    async def _process(self, delivery: RunDelivery, claim: Claim) -> None:
        msg = delivery.message
        due_in = msg.due_ms / 1000 - time.time()
        if due_in > EARLY_WAIT_SECONDS:
            await self._settle(claim, delivery.nak(due_in))
            return
        if due_in > 0:
            await asyncio.sleep(due_in)
        ready = await self._preflight(delivery, claim)
        if ready is not None:
            await self._perform(delivery, claim, *ready)

    async def _preflight(self, delivery: RunDelivery, claim: Claim) -> tuple[JobForRun, int] | None:
        """Read the run and its job and decide whether to attempt now; returns the job and the number of
        attempts already made, or None when the delivery was settled here (acked, put back, skipped)."""
        msg = delivery.message
        # Two independent reads, one round trip of latency.
        read_job, state = await asyncio.gather(
            _or_invalid(self._runs.job_for_run(msg.job_id)), self._runs.state(claim.run_id)
        )
        if isinstance(read_job, msgspec.ValidationError):  # permanent: every delivery would read the same
            if state is None or not state.final:
                reason = f"the job's stored definition is invalid: {read_job}"
                await self._apply(
                    delivery, claim, Decision(Step.FAIL, reason=reason), None, state.attempts if state else 0
                )
                return None
            read_job = None
        job = read_job if read_job is not None and read_job.tenant == msg.tenant else None
        run = RunFacts(
            status=state.status if state else None,
            attempts=state.attempts if state else 0,
            lease_until=state.lease_until if state else None,
            next_attempt_at=state.next_attempt_at if state else None,
            deliveries=delivery.num_delivered,
            age_seconds=_age(msg),
            attempt_limit=state.attempt_limit if state else None,
        )
        facts = (
            None
            if job is None
            else JobFacts(job.status == "paused", job.retry.max_attempts, job.retry.max_event_age_seconds)
        )
        # A backfill is asked for like a manual run: it runs even while the job is paused.
        requested = msg.trigger in (RunTrigger.MANUAL, RunTrigger.BACKFILL)
        decision = on_delivery(run, facts, manual=requested, now=datetime.now(UTC))
        claim.overlap_skip = job is not None and job.overlap == "skip" and run.attempts > 0
        claim.buffer_one = job is not None and job.overlap == "bufferOne"
        if decision.step == Step.ATTEMPT and job is not None and job.overlap in ("skip", "bufferOne"):
            decision = await self._slots.take(delivery.message, claim, job, run.attempts, run.age_seconds)
        if decision.step == Step.ATTEMPT and job is not None:
            return job, run.attempts
        if decision.step == Step.ACK and state is not None and state.final:
            log.debug("run %s already %s; acking the redelivery", claim.run_id, state.status)
            if claim.buffer_one:  # the worker that finished it may have died before handing the slot over
                await self._slots.release(claim)
            if state.status != RunStatus.MISSED:
                # The worker that finished it may have died before updating the job or reporting its
                # recovery (idempotent; a repeated report has the same event id).
                await self._job_updates.ended(msg, state.status, repeat=True)
        elif decision.step == Step.ACK:
            log.info("run %s dropped: %s", claim.run_id, decision.reason)
        elif job is None:
            log.info("run %s recorded skipped: %s", claim.run_id, decision.reason)
        await self._apply(delivery, claim, decision, None, run.attempts)
        return None

    async def _apply(
        self, delivery: RunDelivery, claim: Claim, decision: Decision, record: AttemptRecord | None, attempts: int
    ) -> None:
        """Perform a decision that settles the delivery (everything but ``ATTEMPT``)."""
        match decision.step:
            case Step.ACK:
                await self._settle(claim, delivery.ack())
            case Step.WAIT:
                claim.slot = False  # not final: a slot this run holds stays with it
                await self._settle(claim, delivery.nak(decision.delay))
            case Step.SKIP:
                await self._finish(delivery, claim, RunEnd(RunStatus.SKIPPED, record, decision.reason))
            case Step.SUCCEED:
                await self._finish(delivery, claim, RunEnd(RunStatus.SUCCEEDED, record))
            case Step.FAIL:
                await self._fail(delivery, claim, record, decision.reason or "failed", attempts)
            case Step.RETRY:
                assert record is not None
                due = datetime.now(UTC) + timedelta(seconds=decision.delay)
                await self._runs.record_retry(claim.run_id, attempts, record, due)
                await self._slots.keep(claim, due + self._lease)  # the fire keeps its slot until the retry ran
                claim.slot = False
                log.info(
                    "run %s attempt %d failed (%s); retrying in %.1fs",
                    claim.run_id,
                    attempts,
                    decision.reason,
                    decision.delay,
                )
                await self._settle(claim, delivery.nak(decision.delay))
            case Step.ATTEMPT:
                raise AssertionError("an attempt does not settle a delivery")

    async def _perform(self, delivery: RunDelivery, claim: Claim, job: JobForRun, done: int) -> None:
        """Claim attempt ``done + 1``, call the target, then record success, a retry or the failure."""
        msg = delivery.message
        now = datetime.now(UTC)
        attempt = await self._runs.claim_attempt(msg, done, now, now + self._lease)
        if attempt is None:
            # Another worker claimed this very run: the slot is the run's, so it stays taken.
            claim.slot = False
            await self._settle(claim, delivery.nak(CONTENDED_RETRY_SECONDS))
            return
        claim.attempt = attempt
        # The claim is kept alive until the outcome is recorded and acknowledged, not only during the call:
        # if writing the outcome outlived the lease, another worker would claim a second attempt and call
        # the target again although this one succeeded.
        heartbeat = asyncio.create_task(self._heartbeat(delivery, claim))
        try:
            await self._conclude(delivery, claim, job, attempt, await self._attempt(delivery, job, claim))
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _conclude(
        self, delivery: RunDelivery, claim: Claim, job: JobForRun, attempt: int, outcome: CallOutcome
    ) -> None:
        """Record success, a retry or the failure of an attempt, then settle its message."""
        msg = delivery.message
        record = AttemptRecord(
            outcome.started_at,
            outcome.finished_at,
            outcome.http_status,
            outcome.error,
            outcome.response_snippet,
            attempt=attempt,
            error_class=outcome.error_class,
        )
        retryable = not outcome.succeeded and outcome.retryable
        delay = next_retry_delay(job.retry, attempt, _age(msg), self._rng) if retryable else None
        await self._apply(delivery, claim, on_outcome(outcome.succeeded, outcome.error, delay), record, attempt)

    async def _attempt(self, delivery: RunDelivery, job: JobForRun, claim: Claim) -> CallOutcome:
        msg = delivery.message
        rid, attempt = claim.run_id, claim.attempt
        assert attempt is not None
        tenant = await self._tenants.delivery(job.tenant)
        ctx = CallContext(
            run_id=rid,
            job_id=job.id,
            tenant=job.tenant,
            scheduled_at=scheduled_at(msg),
            attempt=attempt,
            signing_keys=tenant.signing_keys,
            subject_grants=tenant.subject_grants,
        )
        kind = "http" if isinstance(job.target, HttpTarget) else "nats"
        outcome = await self._caller.call(job.target, ctx)
        label = "succeeded" if outcome.succeeded else ("refused" if outcome.refusal else "failed")
        RUN_ATTEMPTS.labels(target=kind, outcome=label).inc()
        RUN_DURATION.labels(target=kind).observe((outcome.finished_at - outcome.started_at).total_seconds())
        return outcome

    async def _heartbeat(self, delivery: RunDelivery, claim: Claim) -> None:
        """While an attempt is claimed: extend the message's ack deadline and the run's lease together."""
        assert claim.attempt is not None
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            try:
                # The lease first: while the database cannot extend it, the message is not extended either,
                # so a worker stuck on an unreachable database lets the run go to another worker after the
                # ack deadline instead of holding it forever.
                until = datetime.now(UTC) + self._lease
                await self._runs.extend_lease(claim.run_id, claim.attempt, until)
                await self._slots.keep(claim, until)
                await delivery.in_progress()
            except Exception:
                log.warning("could not extend the deadline of run %s", claim.run_id, exc_info=True)

    async def _fail(
        self,
        delivery: RunDelivery,
        claim: Claim,
        record: AttemptRecord | None,
        error: str,
        attempts: int,
    ) -> None:
        """Final failure: dead-letter first (deduplicated), then record, then ack — a crash in between
        leads to a redelivery that repeats the missing steps."""
        msg = delivery.message
        await self._bus.publish_dead_letter(_encode_message(msg), dead_letter_headers(msg, attempts, error))
        DEAD_LETTERS.inc()
        log.warning("run %s failed after %d attempt(s) and was dead-lettered: %s", claim.run_id, attempts, error)
        # Before the run is recorded, like the dead letter (never raises).
        await self._job_updates.failed(
            msg, attempts, record.error if record and record.error else error, record.http_status if record else None
        )
        # The attempt's own error is kept when there is one.
        await self._finish(delivery, claim, RunEnd(RunStatus.FAILED, record, None if record else error))

    async def _finish(self, delivery: RunDelivery, claim: Claim, end: RunEnd) -> None:
        msg = delivery.message
        changed = await self._runs.finish(msg, end, datetime.now(UTC))
        await self._slots.release(claim)
        if changed:
            RUNS_FINISHED.labels(status=end.status.value, trigger=msg.trigger).inc()
            await self._job_updates.ended(msg, end.status)
        await self._settle(claim, delivery.ack())

    @staticmethod
    async def _settle(claim: Claim, acknowledgement: Awaitable[None]) -> None:
        claim.settled = True
        await acknowledgement


async def _or_invalid(read: Awaitable[JobForRun | None]) -> JobForRun | msgspec.ValidationError | None:
    try:
        return await read
    except msgspec.ValidationError as exc:
        return exc


def _age(msg: RunMessage) -> float:
    """Seconds since the fire's scheduled instant; for a backfill, since it was queued (its scheduled
    instant may be long past, and ``maxEventAgeSeconds`` would otherwise forbid every retry)."""
    start = msg.due_ms if msg.trigger == RunTrigger.BACKFILL else msg.scheduled_ms
    return time.time() - start / 1000


def dead_letter_headers(msg: RunMessage, attempts: int, error: str) -> dict[str, str]:
    """Headers of a dead-lettered run: what failed, where, and why (single-line, bounded)."""
    rid = run_id(msg.job_id, msg.scheduled_ms)
    clean = " ".join(error.split())[:_HEADER_VALUE_MAX]
    return {
        "Nats-Msg-Id": f"{rid}:dead",
        "Schedsvc-Run-Id": rid,
        "Schedsvc-Job-Id": msg.job_id,
        "Schedsvc-Tenant": msg.tenant,
        "Schedsvc-Scheduled-Time": rfc3339(scheduled_at(msg)),
        "Schedsvc-Trigger": msg.trigger,
        "Schedsvc-Attempts": str(attempts),
        "Schedsvc-Error": clean or "failed",
    }
