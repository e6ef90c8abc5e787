"""The run lifecycle as pure decisions: what a worker does next, from what is stored and what happened.

A run message is only a wake-up; the run document is the truth. Each delivery goes through at most three
decisions, each a pure function of facts the worker read (no I/O here, so every path is unit-tested):

1. :func:`on_delivery` — before calling the target: acknowledge (final run, or a fire of a job gone that
   was never recorded), put back (a live lease elsewhere, a retry not due yet), skip (paused job, or a
   recorded run of a job gone), fail (no attempts left, too old, delivered too often), or attempt.
2. :func:`on_outcome` — after the call: succeeded, retry after a delay, or fail.
3. :func:`on_error` — when processing itself raised: a *permanent* error (a stored job that no longer
   decodes, a value out of range, a bug) fails the run at once, since every redelivery would fail the
   same way; a *transient* one (an outage of the database or NATS, a timeout, anything unknown) puts
   the message back, up to :data:`MAX_DELIVERIES` deliveries, so no run is redelivered for ever.

A failed run is always dead-lettered: whatever the path, ``FAIL`` means "publish to the dead letter,
record ``failed`` with the reason, acknowledge".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

import msgspec

from schedsvc.domain.errors import InfrastructureUnavailableError
from schedsvc.domain.models import RunStatus

FINAL_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.MISSED})
MAX_DELIVERIES = 100
"""Deliveries of one run message before the worker gives up on it (50 attempts at most, each a delivery,
plus early arrivals and contention). JetStream's ``max_deliver`` sits a little above, as a backstop."""
CONTENDED_RETRY_SECONDS = 1.0
"""How long to put a message back when another worker holds the run or a claim raced."""
SLOT_RETRY_SECONDS = 2.0
"""How long a retry waits when a newer fire of a ``skip`` job holds the slot it lost."""
ERROR_RETRY_SECONDS = 5.0
"""How long to put a message back after a transient error (database or NATS unavailable)."""
OVERLAP_SKIPPED = "a previous run is still running"
JOB_GONE = "the job no longer exists"


class Step(enum.StrEnum):
    ACK = "ack"
    """Nothing (more) to do: acknowledge the message."""
    WAIT = "wait"
    """Put the message back for ``delay`` seconds; nothing is recorded."""
    ATTEMPT = "attempt"
    """Claim the next attempt and call the target."""
    SUCCEED = "succeed"
    """Record ``succeeded``, acknowledge."""
    RETRY = "retry"
    """Record the failed attempt (run back to ``queued``), put the message back for ``delay`` seconds."""
    SKIP = "skip"
    """Record ``skipped`` with ``reason``, acknowledge."""
    FAIL = "fail"
    """Dead-letter, record ``failed`` with ``reason``, acknowledge."""


@dataclass(frozen=True, slots=True)
class Decision:
    step: Step
    delay: float = 0.0
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What a worker knows about a run when a delivery arrives."""

    status: RunStatus | None
    """The stored status; None when no attempt was recorded yet."""
    attempts: int
    lease_until: datetime | None
    next_attempt_at: datetime | None
    deliveries: int
    """How often JetStream has delivered this message (this delivery included)."""
    age_seconds: float
    """Seconds since the fire's scheduled instant."""
    attempt_limit: int | None = None
    """Set by a retry on demand: the attempts the run may reach (one more than it had), whatever the job's
    policy and the run's age say."""


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What a worker knows about the run's job (None for a job that no longer exists)."""

    paused: bool
    max_attempts: int
    max_event_age_seconds: float


def on_delivery(run: RunFacts, job: JobFacts | None, *, manual: bool, now: datetime) -> Decision:
    """Before calling the target: whether and how to go on with this delivery."""
    if run.status in FINAL_STATUSES:
        return Decision(Step.ACK, reason=f"already {run.status}")
    lease_until = run.lease_until if run.status == RunStatus.RUNNING else None
    lease_left = 0.0 if lease_until is None else (lease_until - now).total_seconds()
    if job is None:
        if run.status is None or lease_left > 0:
            # Nothing recorded to end (a fire of a deleted job), or the worker on it records its outcome
            # and its own next delivery gets here.
            return Decision(Step.ACK, reason=JOB_GONE)
        # A recorded run left unfinished (waiting for a retry, automatic or on demand, or interrupted) would
        # otherwise stay queued for ever; a retry on demand would be published again and again.
        return Decision(Step.SKIP, reason=JOB_GONE)
    if lease_left > 0:
        # Another worker is on it (a duplicate delivery): look again when its lease ends.
        return Decision(Step.WAIT, max(lease_left + 0.1, CONTENDED_RETRY_SECONDS))
    if run.next_attempt_at is not None and run.next_attempt_at > now:
        # Redelivered before its retry was due (e.g. the delayed nak was lost): wait for it.
        return Decision(Step.WAIT, (run.next_attempt_at - now).total_seconds())
    limit = job.max_attempts if run.attempt_limit is None else run.attempt_limit
    if run.attempts >= limit:
        return Decision(Step.FAIL, reason=f"attempt {run.attempts} was interrupted; no attempts left")
    if run.attempt_limit is None and run.attempts >= 1 and run.age_seconds > job.max_event_age_seconds:
        return Decision(Step.FAIL, reason="maxEventAgeSeconds passed before the retry")
    if run.deliveries > MAX_DELIVERIES:
        return Decision(Step.FAIL, reason=f"delivered {run.deliveries} times without finishing")
    if job.paused and not manual and run.attempt_limit is None:  # a retry on demand is asked for, like a manual run
        return Decision(Step.SKIP, reason="the job is paused")
    return Decision(Step.ATTEMPT)


def on_slot(acquired: bool, attempts: int) -> Decision:
    """Overlap ``skip`` and ``bufferOne``: a fire holds its job's slot from its first attempt to its final outcome.

    A first attempt that finds the slot taken is skipped. A retry normally finds the slot still its own
    (kept while it waited); if it lapsed (the retry came later than its lease) and a newer fire took it,
    the retry waits for that fire to end rather than run beside it (bounded by :data:`MAX_DELIVERIES`).
    """
    if acquired:
        return Decision(Step.ATTEMPT)
    if attempts == 0:
        return Decision(Step.SKIP, reason=OVERLAP_SKIPPED)
    return Decision(Step.WAIT, SLOT_RETRY_SECONDS, reason="a newer fire holds the job's slot")


OVERLAP_BUFFER_FULL = "a previous run is still running and another fire already waits behind it"


BUFFER_RECHECKS = 30
"""A fire waiting behind its job's holder (``bufferOne``) comes back at most about this many times over the
longest wait its job allows, so waiting alone never brings it near :data:`MAX_DELIVERIES`."""


def on_buffer(outcome: str, lease_seconds: float, waited_seconds: float, longest_wait_seconds: float) -> Decision:
    """Overlap ``bufferOne``, a first attempt that found the slot taken and tried to wait behind it.

    ``buffered``: this fire waits. It is normally woken by the holder's final outcome (see ``JobSlots``);
    its own message comes back only in case that wake-up is lost, or the holder died and its slot lapses.
    The first recheck of an on-time fire is after about a lease (``lease_seconds``: when a dead holder would
    have lost the slot); later ones after as long as the fire is old (``waited_seconds``: it waits from about
    when it was due, so a late catch-up fire starts at longer rechecks), up to a
    1/:data:`BUFFER_RECHECKS` of ``longest_wait_seconds``, the longest its holder can keep the slot (its
    retries stop once it is ``maxEventAgeSeconds`` old). A fire behind a long retrying holder therefore
    waits hours with a few dozen deliveries instead of failing as delivered too often.
    ``full``: another fire already waits, this one is skipped. ``free``: the slot was released in between;
    the message comes back at once to take it.
    """
    if outcome == "buffered":
        ceiling = max(lease_seconds, longest_wait_seconds / BUFFER_RECHECKS)
        recheck = min(max(lease_seconds, waited_seconds), ceiling)
        return Decision(Step.WAIT, recheck, reason="waiting for the running fire to end (bufferOne)")
    if outcome == "full":
        return Decision(Step.SKIP, reason=OVERLAP_BUFFER_FULL)
    return Decision(Step.WAIT, 0.1, reason="the job's slot was released meanwhile")


def on_outcome(succeeded: bool, error: str | None, retry_delay: float | None) -> Decision:
    """After an attempt. ``retry_delay`` is the retry policy's delay, or None when the policy (attempts,
    event age) or the failure itself (not retryable) allows no further attempt."""
    if succeeded:
        return Decision(Step.SUCCEED)
    if retry_delay is None:
        return Decision(Step.FAIL, reason=error or "failed")
    return Decision(Step.RETRY, retry_delay, error)


def is_permanent(exc: BaseException) -> bool:
    """An error every delivery would meet again: a stored job that does not decode, a value out of range,
    a bug. An outage or a timeout is transient; so, until :data:`MAX_DELIVERIES`, is anything unknown."""
    if isinstance(exc, InfrastructureUnavailableError | ConnectionError | TimeoutError):
        return False
    return isinstance(
        exc,
        ValueError | TypeError | LookupError | ArithmeticError | AttributeError | RecursionError | msgspec.MsgspecError,
    )


def on_error(exc: BaseException, deliveries: int) -> Decision:
    """Processing a delivery raised ``exc``: put it back (transient, within bounds) or fail the run."""
    reason = f"worker error: {type(exc).__name__}: {exc}"[:1000]
    if is_permanent(exc):
        return Decision(Step.FAIL, reason=reason)
    if deliveries >= MAX_DELIVERIES:
        return Decision(Step.FAIL, reason=f"{reason} (after {deliveries} deliveries)")
    return Decision(Step.WAIT, ERROR_RETRY_SECONDS, reason)
