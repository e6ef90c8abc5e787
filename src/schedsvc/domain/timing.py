"""Value types the timing module exchanges with its stores: advances, missed fires, lease grants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Advance:
    """Move a job's ``nextRun`` from ``old_ms`` to ``new_ms`` (``None``: the job completed)."""

    job_id: str
    old_ms: int
    new_ms: int | None
    resumed_at: datetime | None = None
    """The ``resumedAt`` the plan was made with; cleared by the advance (and required to be unchanged)."""


@dataclass(frozen=True, slots=True)
class MissedFire:
    """A fire no replica ran in time, recorded as a ``missed`` run."""

    job_id: str
    tenant: str
    scheduled_ms: int


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A lease this member holds, as the database recorded it."""

    partition: int
    epoch: int
    """Fencing token: grows every time the partition changes owner."""
    remaining_ms: int
    """Time left until expiry by the database clock, measured when read."""
