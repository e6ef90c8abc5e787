"""The ports: what the api, timing and execution modules need from storage, messaging and rate limits.

The adapters named after their technology implement them (``store/jobs.py``, ``store/timing.py``,
``store/leases.py``, ``store/runs.py``, ``store/run_history.py`` for MongoDB; ``bus/nats.py`` for NATS
JetStream; ``cache/ratelimit.py`` for Redis and in-process counting), and only ``schedsvc.wiring`` builds them.
The modules depend on these Protocols, never on an adapter class.

The ports Litestar injects are runtime-checkable, because it validates dependencies against their annotations
(the delivery and subscription ports, never injected, are not). One module, so that the contracts are read in
one place (as Litestar's ``stores/base.py`` and APScheduler's ``abc.py``): that is why it runs past 400 lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Literal, Protocol, TypeVar, runtime_checkable

from schedsvc.domain.admission import Admission, CacheProbe, WriteIntent
from schedsvc.domain.jobs import IdempotencyClaim, JobChange, JobForRun, JobNotice, JobPage, JobTiming, NewJob
from schedsvc.domain.models import Job, Run, RunMessage, RunStatus
from schedsvc.domain.notifications import NotificationMessage
from schedsvc.domain.runs import AttemptRecord, BufferedFire, RunEnd, RunSelection, RunState, StrandedRetry
from schedsvc.domain.tenants import TenantChangeKind, TenantPreferences, TenantSettingsPatch
from schedsvc.domain.timing import Advance, LeaseGrant, MissedFire
from schedsvc.domain.wire import EVERY_JOB, JobSelector
from schedsvc.names import Names

# -- jobs ---------------------------------------------------------------------------------------------


@runtime_checkable
class JobRepository(Protocol):
    """Jobs of one tenant at a time; another tenant's job is indistinguishable from a missing one.

    Every successful write is announced (a :class:`~schedsvc.domain.jobs.JobNotice`) to timing
    replicas and the response cache, so callers never announce themselves.
    """

    async def create(self, job: NewJob, claim: IdempotencyClaim | None = None) -> tuple[Job, bool]:
        """Insert a job; returns it and whether it is new (False: a replay of ``claim``, whose answer is
        kept as every such answer is, by the ``ReplyStore``)."""
        ...

    async def get(self, tenant: str, job_id: str) -> Job: ...

    async def list(
        self, tenant: str, selector: JobSelector = EVERY_JOB, *, limit: int, cursor: str | None = None
    ) -> JobPage:
        """A page of the tenant's jobs the selector matches, in creation order."""
        ...

    async def count(self, tenant: str, selector: JobSelector, *, limit: int) -> int:
        """How many of the tenant's jobs the selector matches, counted up to ``limit``."""
        ...

    async def update(
        self, tenant: str, job_id: str, change: JobChange, expected_version: int | None, *, now: datetime
    ) -> Job:
        """Apply ``change`` if the job is at ``expected_version`` (any when None) and in one of
        ``change.only_if_status`` (any when empty); :class:`~schedsvc.domain.VersionConflictError`
        when the version differs, :class:`~schedsvc.domain.JobStateError` when the status does."""
        ...

    async def delete(self, tenant: str, job_id: str, expected_version: int | None) -> int:
        """Delete a job; returns its partition."""
        ...

    def partition_of(self, job_id: str) -> int:
        """The timing partition of a job (the cluster's partition count decides)."""
        ...


@runtime_checkable
class DueJobReader(Protocol):
    """What the timing module reads: the jobs due within its horizon, and changed jobs by id."""

    def due_jobs(
        self, partitions: Sequence[int], until: datetime, *, after: datetime | None = None
    ) -> AsyncIterator[list[JobTiming]]:
        """Active jobs of ``partitions`` whose ``nextRun`` is at or before ``until`` (and after ``after``)."""
        ...

    async def jobs_by_id(self, job_ids: Sequence[str]) -> list[JobTiming]:
        """The timing view of these jobs (missing ones are absent: deleted)."""
        ...


@runtime_checkable
class FireRecorder(Protocol):
    """What the timing module writes once fires are published."""

    async def advance(self, advances: Sequence[Advance]) -> int:
        """Apply the conditional ``nextRun`` advances; return how many matched."""
        ...

    async def record_missed(self, fires: Sequence[MissedFire], now: datetime) -> int:
        """Insert a ``missed`` run per fire (fires already recorded are left alone)."""
        ...


@runtime_checkable
class LeaseStore(Protocol):
    """Partition leases and timing membership, every expiry judged by the database clock."""

    async def ensure_partitions(self, partitions: int) -> None: ...

    async def heartbeat(self, member: str, ttl_ms: int) -> None: ...

    async def live_members(self) -> list[str]: ...

    async def forget_member(self, member: str) -> None: ...

    async def purge_members(self, older_than_ms: int) -> int: ...

    async def renew(self, member: str, partitions: Sequence[int], ttl_ms: int) -> None: ...

    async def free_partitions(self) -> list[int]: ...

    async def acquire(self, member: str, partitions: Sequence[int], ttl_ms: int) -> None: ...

    async def release(self, member: str, partitions: Sequence[int]) -> None: ...

    async def owned(self, member: str) -> list[LeaseGrant]: ...


# -- tenants ------------------------------------------------------------------------------------------


@runtime_checkable
class TenantPreferenceStore(Protocol):
    """A tenant's own settings (default notification target, run retention) as the API reads and changes them."""

    async def preferences(self, tenant: str) -> TenantPreferences: ...

    async def update_preferences(self, tenant: str, patch: TenantSettingsPatch) -> TenantPreferences:
        """Apply the fields present in ``patch``; :class:`LookupError` for no such tenant."""
        ...


# -- runs ---------------------------------------------------------------------------------------------


@runtime_checkable
class RunHistory(Protocol):
    """A tenant's run records, as the API reads them (they outlive their job until retention)."""

    async def list_for_job(
        self, tenant: str, job_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Run], str | None]:
        """One page of a job's runs, newest first (by scheduled instant, then id), and the next cursor;
        :class:`~schedsvc.domain.errors.InvalidCursorError` for a cursor this method did not return."""
        ...

    async def get(self, tenant: str, rid: str) -> Run | None:
        """One run of the tenant (its job may be gone), or None."""
        ...

    async def list_for_tenant(
        self, tenant: str, selection: RunSelection, *, limit: int, cursor: str | None = None
    ) -> tuple[list[Run], str | None]:
        """One page of the tenant's runs that ``selection`` takes, across its jobs (deleted ones too),
        newest first, and the next cursor.
        :class:`~schedsvc.domain.errors.InvalidCursorError` for a cursor this method did not return."""
        ...

    async def reopen_for_retry(self, tenant: str, rid: str, now: datetime, max_retries: int) -> Run | str:
        """Reopen a failed run of the tenant for one more attempt (a retry on demand), marked with the instant
        ``now`` of its reopen until that attempt is claimed (``RunLedger.stranded_retries``).

        Returns the reopened run, or why not: ``missing`` (no such run of this tenant), ``not_failed``,
        ``exhausted`` (``max_retries`` reached) or ``changed`` (another request got there first): two
        concurrent requests reopen it once."""
        ...

    async def revert_retries(self, reopened: Sequence[tuple[str, int]], now: datetime) -> None:
        """Fail again the reopened runs ``(run id, retriesOnDemand)`` whose message was not published (and
        clear their mark for the sweeper, see ``RunLedger.stranded_retries``)."""
        ...

    async def open_backfill(self, tenant: str, job_id: str, fires_ms: Sequence[int], now: datetime) -> list[int]:
        """Of a backfill's fires, those to publish (no run yet, or recorded ``missed``: reopened)."""
        ...


@runtime_checkable
class ReplyStore(Protocol):
    """Answers of repeatable operations kept under the client's ``Idempotency-Key``, per tenant."""

    async def claim(
        self, tenant: str, operation: str, key: str, request: object, now: datetime, *, answer: bytes | None = None
    ) -> bytes | None:
        """None: perform the operation, then :meth:`keep` its answer (or :meth:`release` on failure); else
        the kept answer of the first request. ``request`` is the body a repeat must match; ``answer`` an
        answer known before the operation is performed. :class:`~schedsvc.domain.IdempotencyConflictError`
        when the key came with another body, :class:`~schedsvc.domain.IdempotencyInProgressError` while its
        first request is still in progress."""
        ...

    async def keep(self, tenant: str, operation: str, key: str, reply: bytes) -> None: ...

    async def release(self, tenant: str, operation: str, key: str, *, answer: bytes | None = None) -> None: ...


M_co = TypeVar("M_co", covariant=True)
D_co = TypeVar("D_co", covariant=True)


class Delivery(Protocol[M_co]):
    """One message a durable consumer handed out, decoded: acknowledged when done, or put back."""

    @property
    def message(self) -> M_co: ...

    @property
    def num_delivered(self) -> int:
        """1 on the first delivery; more when the message came back (put back, or not acknowledged in time)."""
        ...

    async def ack(self) -> None: ...

    async def nak(self, delay_seconds: float | None = None) -> None:
        """Put the message back, to be delivered again at once or after ``delay_seconds``."""
        ...


class RunDelivery(Delivery[RunMessage], Protocol):
    """A run message handed to a worker."""

    async def in_progress(self) -> None:
        """Extend the acknowledgement deadline of a long run."""
        ...


class Subscription(Protocol[D_co]):
    """A durable pull consumer shared by every execution process: each fetches only what it can handle."""

    async def fetch(self, batch: int, timeout: float) -> Sequence[D_co]:
        """Up to ``batch`` deliveries, waiting at most ``timeout`` seconds (none: an empty list)."""
        ...

    async def close(self) -> None: ...


class RunSubscription(Subscription[RunDelivery], Protocol):
    """The run stream's consumer."""

    async def pending(self) -> int:
        """Run messages not yet acknowledged: waiting for a worker, or handed out and not done."""
        ...

    async def hand_back_unfetched(self, linger: float) -> int:
        """For a graceful stop, before :meth:`close`: put back at once, for ``linger`` seconds, whatever was
        delivered to this process but not fetched; returns how many."""
        ...


@runtime_checkable
class RunPublisher(Protocol):
    """Hands fires to execution (the run stream); a repeated fire is dropped by its id."""

    @property
    def connected(self) -> bool: ...

    async def publish_runs(
        self, messages: Sequence[RunMessage], partitions: Sequence[int], message_ids: Sequence[str] | None = None
    ) -> int:
        """Publish all or raise; returns how many were new (a repeated fire is dropped by its id)."""
        ...

    async def publish_each(
        self, messages: Sequence[RunMessage], partitions: Sequence[int], message_ids: Sequence[str]
    ) -> list[bool]:
        """Publish and say, per message, whether this call stored it (False: refused, unacknowledged or a
        duplicate of a message already in the stream)."""
        ...


@runtime_checkable
class TenantChangeFeed(Protocol):
    """Announced tenant changes (revoked keys, rotated secrets, changed settings), heard by every replica."""

    @property
    def reconnects(self) -> int:
        """Times the connection was re-established (a gap in which announcements may have been missed)."""
        ...

    async def tenant_changes(self, handler: Callable[[TenantChangeKind, str], None]) -> Callable[[], Awaitable[None]]:
        """Call ``handler(kind, value)`` for every announced tenant change; returns an unsubscribe."""
        ...


@runtime_checkable
class RunBus(RunPublisher, TenantChangeFeed, Protocol):
    """The run stream as execution uses it: consume runs, dead-letter them, publish to tenant subjects."""

    async def run_subscription(self, ack_wait_seconds: float, max_ack_pending: int) -> RunSubscription: ...

    async def publish_dead_letter(self, payload: bytes, headers: dict[str, str]) -> None: ...

    async def publish_raw(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> None: ...

    @property
    def names(self) -> Names:
        """The deployment's stream and subject names (targets may not publish to its own subjects)."""
        ...

    async def publish_notification(self, message: NotificationMessage) -> None: ...

    async def notification_subscription(
        self, ack_wait_seconds: float, max_deliver: int
    ) -> Subscription[Delivery[NotificationMessage]]: ...


@runtime_checkable
class RunLedger(Protocol):
    """The run records as execution writes them: claims and leases of attempts, outcomes, the job's slot
    (overlaps ``skip`` and ``bufferOne``) and what a run's end records on its job. Every write is
    conditional, so a redelivered message or a second worker changes nothing twice."""

    async def job_for_run(self, job_id: str) -> JobForRun | None: ...

    async def state(self, rid: str) -> RunState | None:
        """The run's status and attempt count, or None when no attempt was recorded yet."""
        ...

    async def claim_attempt(
        self, message: RunMessage, expected_attempts: int, now: datetime, lease_until: datetime
    ) -> int | None:
        """Record that attempt ``expected_attempts + 1`` starts now; None if another worker got there first.

        Conditional on the attempt count the caller read, on the run not being final and on no live lease,
        so exactly one of several workers holding the same message may call the target."""
        ...

    async def extend_lease(self, rid: str, attempt: int, lease_until: datetime) -> None: ...

    async def record_retry(self, rid: str, attempt: int, record: AttemptRecord, next_attempt_at: datetime) -> None:
        """The attempt failed and a retry is scheduled: back to ``queued`` with the attempt's outcome."""
        ...

    async def release_interrupted(self, rid: str, attempt: int, error: str) -> None:
        """The worker stops mid-attempt (shutdown): the attempt counts, the run waits for redelivery."""
        ...

    async def finish(self, message: RunMessage, end: RunEnd, now: datetime) -> bool:
        """Record how the run ended (its final status, the last attempt's outcome, the reason); False when
        the run was already final (nothing is changed then)."""
        ...

    async def stranded_retries(self, reopened_before: datetime, limit: int) -> list[StrandedRetry]:
        """Up to ``limit`` runs reopened for a retry on demand before ``reopened_before`` whose attempt has not
        been claimed since, oldest reopen first, each with the message and message id of its reopen.

        A reopened run is marked from its reopen until its attempt is claimed, it ends without one, or the
        reopen is undone; runs waiting for an automatic retry (their message is in the stream, delayed) are
        never returned. Reads only: publishing one again is harmless whether or not its first message was
        stored (the same message id within the stream's duplicate window; an attempt claimed in the ledger
        beyond it)."""
        ...

    async def acquire_job_slot(self, job_id: str, rid: str, now: datetime, lease_until: datetime) -> bool: ...

    async def extend_job_slot(self, job_id: str, rid: str, lease_until: datetime) -> None: ...

    async def release_job_slot(self, job_id: str, rid: str) -> None: ...

    async def buffer_behind_job_slot(
        self, message: RunMessage, partition: int, now: datetime
    ) -> Literal["buffered", "full", "free"]: ...

    async def unbuffer(self, job_id: str, rid: str) -> None: ...

    async def hand_over_job_slot(self, job_id: str, rid: str, lease_until: datetime) -> BufferedFire | None: ...

    async def mark_job_failing(self, job_id: str, scheduled: datetime) -> None: ...

    async def clear_job_failing(self, job_id: str, scheduled: datetime, *, repeat: bool = False) -> bool:
        """A fire succeeded; True if it recovered a failing job (exactly one success does). ``repeat``: this
        is a redelivery of a recorded success, which is also True if that success is the one that did."""
        ...

    async def update_job_last_run(self, job_id: str, scheduled: datetime, status: RunStatus) -> bool: ...


@runtime_checkable
class TenantDeliveryStore(Protocol):
    """What execution reads of a tenant to deliver its runs and notifications."""

    async def delivery_settings(self, tenant: str, default_pattern: str) -> tuple[list[bytes], list[str]]:
        """Its signing secrets (newest first) and NATS subject grants, in one read."""
        ...

    async def preferences(self, tenant: str) -> TenantPreferences: ...


JobChangeHandler = Callable[[JobNotice], Awaitable[None]]
"""Called for every announced job change."""


@runtime_checkable
class JobChangeFeed(Protocol):
    """Announces job changes to timing replicas (best effort: timing also rescans)."""

    async def publish_job_change(self, notice: JobNotice) -> None: ...

    async def job_changes(self, handler: JobChangeHandler) -> Callable[[], Awaitable[None]]:
        """Call ``handler`` for every announced change; returns an unsubscribe."""
        ...


# -- rate limits --------------------------------------------------------------------------------------


@runtime_checkable
class RateLimiter(Protocol):
    """Admits API requests: a fixed one-minute window per identity (an API key, or a client address).

    Where a response cache exists (Redis) the same round trip does the cache's part of the request: a
    cacheable ``GET`` reads its entry, a write to a tenant's jobs replaces the versions it affects and
    marks itself in flight until :meth:`written` (see :mod:`schedsvc.domain.admission`).
    """

    def read_probe(self, tenant: str, path: str, query_string: bytes, job_id: str | None) -> CacheProbe | None:
        """Where a cacheable ``GET`` finds its response (None: there is no response cache)."""
        ...

    def write_intent(self, tenant: str, job_id: str | None) -> WriteIntent | None:
        """What a write to the tenant's jobs (to ``job_id``, if the path names one) must invalidate."""
        ...

    async def admit(
        self, key: str, limit: int, *, probe: CacheProbe | None = None, write: WriteIntent | None = None
    ) -> Admission:
        """Count one request of ``key`` against ``limit`` per minute, and with ``probe`` or ``write`` do the
        cache's part (not when the request is over its limit)."""
        ...

    async def settle(self, write: WriteIntent) -> None:
        """The request whose admission recorded ``write`` is about to respond: invalidate, in one round trip,
        what it changed beyond what its admission covered (:attr:`WriteIntent.uncovered`)."""
        ...

    def written(self, write: WriteIntent) -> None:
        """The request whose admission recorded ``write`` is done (its database writes too)."""
        ...


@runtime_checkable
class FailureCounter(Protocol):
    """Failed authentications per client address, so unknown keys cannot be tried without bound."""

    limit: int

    async def blocked(self, address: str) -> int | None:
        """Seconds until ``address`` may try unknown keys again; None while it is under the limit."""
        ...

    async def record(self, address: str) -> None: ...
