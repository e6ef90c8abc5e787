"""What execution reads and writes about a run besides the run resource itself: the state a worker acts on,
one attempt's outcome, how a run ends, a fire handed the job's slot, and a retry on demand waiting for its
message. Shared by the run ledger port (``store/base.py``), its MongoDB adapter, the worker and the API's
retries, so they live here rather than in any one of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from schedsvc.domain.lifecycle import FINAL_STATUSES
from schedsvc.domain.models import RunMessage, RunStatus, RunTrigger
from schedsvc.domain.time import from_ms, to_ms


@dataclass(frozen=True, slots=True)
class RunSelection:
    """Which of a tenant's runs a listing takes (``GET /runs``, a retry by filter, the console's failures).
    Every filter given must hold; ``scheduled_from`` is inclusive, ``scheduled_to`` exclusive."""

    statuses: tuple[RunStatus, ...] = ()
    job_id: str | None = None
    trigger: RunTrigger | None = None
    scheduled_from: datetime | None = None
    scheduled_to: datetime | None = None


@dataclass(frozen=True, slots=True)
class RunState:
    """What a worker needs to know about a run before it acts on a delivery."""

    status: RunStatus
    attempts: int
    lease_until: datetime | None
    next_attempt_at: datetime | None
    attempt_limit: int | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """The outcome of one attempt as stored on the run."""

    started_at: datetime
    finished_at: datetime
    http_status: int | None = None
    error: str | None = None
    response_snippet: str | None = None
    attempt: int = 0
    """The attempt's number (0: not known, not logged)."""
    error_class: str | None = None

    @property
    def duration_ms(self) -> int:
        return max(0, round((self.finished_at - self.started_at).total_seconds() * 1000))


@dataclass(frozen=True, slots=True)
class RunEnd:
    """How a run ends, as the worker decided it and the run ledger records it (``RunLedger.finish``)."""

    status: RunStatus
    """Final: succeeded, failed or skipped."""
    record: AttemptRecord | None = None
    """The last attempt's outcome, or None when no attempt was made now (skipped, or no attempts left after
    an interrupted one: the outcome fields already stored are kept)."""
    error: str | None = None
    """Why the run ended, when no attempt's outcome says it (a skip, a failure decided outside an attempt)."""


@dataclass(frozen=True, slots=True)
class BufferedFire:
    """A fire that waited behind its job's running one (overlap ``bufferOne``) and now holds the slot."""

    message: RunMessage
    partition: int


def scheduled_at(message: RunMessage) -> datetime:
    """The fire's nominal instant."""
    return from_ms(message.scheduled_ms)


def retry_message_id(rid: str, retries_on_demand: int, reopened_at: datetime) -> str:
    """The message id of one reopen of run ``rid`` for a retry on demand (its ``retries_on_demand`` after the
    reopen): ``<runId>:retry<n>:<reopenedMs>``.

    The run's own id may still be inside the stream's 15-minute duplicate window, and a reopen undone and made
    again gets the same ``n``, so the instant of the reopen is what keeps a new reopen from being dropped as a
    duplicate of an old one. The API's first publish and the sweeper's re-publish of a stranded reopen use
    this one spelling, so the stream drops the second when the first was stored after all.
    """
    return f"{rid}:retry{retries_on_demand}:{to_ms(reopened_at)}"


@dataclass(frozen=True, slots=True)
class StrandedRetry:
    """A run reopened for a retry on demand whose attempt has not started well after the reopen: its message
    may never have been stored (the API died between the reopen and the publish, or could not undo the
    reopen after a failed publish). What the sweeper publishes again, under the reopen's own message id."""

    message: RunMessage
    """The reopen's run message: due at the reopen, lease epoch 0 (not a timing replica's fire)."""
    message_id: str
    """:func:`retry_message_id` of the reopen."""
