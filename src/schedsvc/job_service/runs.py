"""What retrying a failed run on demand means, for every way in: ``/runs`` (``api/runs.py``) and the console's
Retry button (``console/views.py``) are thin adapters over :class:`RunService`.

A retry reopens the run in the database (``RunHistory.reopen_for_retry``: ``failed`` → ``queued``, one more
attempt allowed, ``reopenedAt`` set), then hands execution one message per reopened run. A run whose message
this request did not get stored is failed again with its retry given back (``revert_retries``); one whose
message was stored stays retried even when others of its batch were not (the client gets the 503 and may
repeat: a queued run is not matched again).

Two holes remain between the reopen and its message: the revert fails too (the database is down at that
moment), or this process dies after the reopen and before the publish. Either leaves the run ``queued``
with its ``reopenedAt`` (which only the attempt's claim, a final outcome or the revert clears); execution's
sweeper (``execution/sweeper.py``) publishes such a run again after a couple of minutes, under the same
message id, so a retry answered 202 runs whatever happens to this process.

Each reopen publishes its own message id (``domain.runs.retry_message_id``, ``<runId>:retry<n>:<reopenedMs>``):
the run's own id may still be inside the stream's 15-minute duplicate window, and a reopen undone and made
again gets the same ``n``, so the instant of the reopen is what keeps a new reopen from being dropped as a
duplicate of an old one.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from schedsvc.domain.errors import (
    BusUnavailableError,
    InvalidCursorError,
    InvalidRequestError,
    JobNotFoundError,
    RunNotFoundError,
    RunRetryRefusedError,
)
from schedsvc.domain.models import Run, RunMessage, RunStatus
from schedsvc.domain.runs import RunSelection, retry_message_id
from schedsvc.domain.time import to_ms, utcnow
from schedsvc.domain.wire import RetryRefusalReason, RunRetryFilter, RunRetryRefusal, RunRetryReport
from schedsvc.store.base import JobRepository, ReplyStore, RunHistory, RunPublisher

MAX_RETRIES_ON_DEMAND = 5
"""Retries on demand per run: each adds one attempt (the attempt history holds them all)."""
REFUSALS = {
    "not_failed": "only a failed run can be retried",
    "exhausted": f"the run was already retried {MAX_RETRIES_ON_DEMAND} times",
    "changed": "the run changed meanwhile (retried by another request?)",
    "job_deleted": "the run's job was deleted",
}
RETRY_RUNS = "retryRuns"
"""The operation's name among the answers kept under an Idempotency-Key."""
_encode_report = msgspec.json.Encoder().encode
_decode_report = msgspec.json.Decoder(RunRetryReport).decode


class RunService:
    """A tenant's retries on demand over the run history, the job repository, the run queue and the answers
    kept under an ``Idempotency-Key``. Built once per process (``wiring.run_service``).

    A plain class, not a dataclass: Litestar would otherwise read its fields as a schema to validate.
    """

    __slots__ = ("jobs", "replies", "run_queue", "runs")

    def __init__(
        self, runs: RunHistory, jobs: JobRepository, run_queue: RunPublisher | None, replies: ReplyStore
    ) -> None:
        self.runs = runs
        self.jobs = jobs
        self.run_queue = run_queue
        """None while NATS is not connected (an API process started without it): a retry answers 503."""
        self.replies = replies

    async def retry(self, tenant: str, run_id: str) -> Run:
        """One more attempt of a failed run, same run id and idempotency key: :class:`RunNotFoundError` for no
        such run of the tenant, :class:`RunRetryRefusedError` when it cannot be retried."""
        run_queue = self._run_queue()
        existing = await self.runs.get(tenant, run_id)
        if existing is None:
            raise RunNotFoundError(run_id)
        if not await self._job_exists(tenant, existing.job_id):  # the attempt needs the job's target
            raise RunRetryRefusedError(REFUSALS["job_deleted"], "job_deleted")
        now = utcnow()
        reopened = await self.runs.reopen_for_retry(tenant, run_id, now, MAX_RETRIES_ON_DEMAND)
        if isinstance(reopened, str):
            if reopened == "missing":
                raise RunNotFoundError(run_id)
            raise RunRetryRefusedError(REFUSALS[reopened], reopened)
        await self._publish(run_queue, tenant, [reopened], now)
        return reopened

    async def retry_matching(
        self, tenant: str, selection: RunRetryFilter, *, idempotency_key: str | None = None
    ) -> tuple[RunRetryReport, bool]:
        """Retry up to ``selection.limit`` of the tenant's failed runs matching the filter, newest first, each
        as :meth:`retry` retries one; returns the report and whether it is a replay (the kept answer of an
        earlier request with the same ``idempotency_key`` and body).

        Every matched run is either reopened or refused with its reason. A run reopened here is ``queued``,
        no longer ``failed``, so a repeat of the same request does not match it again while its attempt is
        pending.
        """
        if idempotency_key is None:
            return await self._retry_matching(tenant, selection), False
        kept = await self.replies.claim(tenant, RETRY_RUNS, idempotency_key, selection, utcnow())
        if kept is not None:
            return _decode_report(kept), True
        try:
            report = await self._retry_matching(tenant, selection)
        except Exception:
            await self.replies.release(tenant, RETRY_RUNS, idempotency_key)
            raise
        await self.replies.keep(tenant, RETRY_RUNS, idempotency_key, _encode_report(report))
        return report, False

    async def _retry_matching(self, tenant: str, selection: RunRetryFilter) -> RunRetryReport:
        run_queue = self._run_queue()
        try:
            failed = RunSelection(
                (RunStatus.FAILED,),
                job_id=selection.job,
                trigger=selection.trigger,
                scheduled_from=selection.scheduled_from,
                scheduled_to=selection.scheduled_to,
            )
            matched, next_cursor = await self.runs.list_for_tenant(
                tenant, failed, limit=selection.limit, cursor=selection.cursor
            )
        except InvalidCursorError as exc:  # a body field: 422, as every body problem is
            raise InvalidRequestError([("cursor", str(exc))]) from None
        now = utcnow()
        job_exists: dict[str, bool] = {}
        reopened: list[Run] = []
        refusals: list[RunRetryRefusal] = []
        for run in matched:
            if run.job_id not in job_exists:
                job_exists[run.job_id] = await self._job_exists(tenant, run.job_id)
            outcome = (
                await self.runs.reopen_for_retry(tenant, run.id, now, MAX_RETRIES_ON_DEMAND)
                if job_exists[run.job_id]
                else "job_deleted"
            )
            if isinstance(outcome, Run):
                reopened.append(outcome)
            else:
                # missing or not failed since the listing: another request (or retention) got there first
                reason: RetryRefusalReason = (
                    "exhausted" if outcome == "exhausted" else "job_deleted" if outcome == "job_deleted" else "changed"
                )
                refusals.append(RunRetryRefusal(run.id, reason, REFUSALS[reason]))
        await self._publish(run_queue, tenant, reopened, now)
        return RunRetryReport(
            matched=len(matched),
            retried=len(reopened),
            refused=len(refusals),
            retried_runs=[r.id for r in reopened],
            refusals=refusals,
            next_cursor=next_cursor,
        )

    def _run_queue(self) -> RunPublisher:
        # Checked before anything is reopened: without NATS nothing could be handed to execution.
        if self.run_queue is None:
            raise BusUnavailableError("NATS is not connected")
        return self.run_queue

    async def _job_exists(self, tenant: str, job_id: str) -> bool:
        try:
            await self.jobs.get(tenant, job_id)
        except JobNotFoundError:
            return False
        return True

    async def _publish(self, run_queue: RunPublisher, tenant: str, reopened: list[Run], now: datetime) -> None:
        """Hand the reopened runs to execution; fail again those whose message was not stored, and raise."""
        if not reopened:
            return
        stored = await run_queue.publish_each(
            [RunMessage(r.job_id, tenant, to_ms(r.scheduled_at), to_ms(now), r.trigger.value, 0) for r in reopened],
            [self.jobs.partition_of(r.job_id) for r in reopened],
            [retry_message_id(r.id, r.retries_on_demand, now) for r in reopened],
        )
        unpublished = [r for r, ok in zip(reopened, stored, strict=True) if not ok]
        if unpublished:
            await self.runs.revert_retries([(r.id, r.retries_on_demand) for r in unpublished], utcnow())
            raise BusUnavailableError(f"{len(unpublished)} of {len(reopened)} retries could not be queued")
