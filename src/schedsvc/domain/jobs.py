"""Typed views of a job between the store and the modules: a new job, a page, the timing view, a change.

None of these spells a document field name: the job codec (``schedsvc.store.job_codec``) maps them to
and from MongoDB documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import msgspec
from msgspec import UNSET, UnsetType

from schedsvc.domain.errors import SchedsvcError
from schedsvc.domain.models import (
    CatchupPolicy,
    Job,
    JobCreate,
    JobPatch,
    JobStatus,
    NotificationTarget,
    RetryPolicy,
    Schedule,
    Target,
)


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job the service checked and planned, as the repository inserts it."""

    tenant: str
    body: JobCreate
    """The body with its schedule normalized (what is stored, not what was sent)."""
    next_run: datetime | None
    """The first fire (None: a schedule with none left, so the job starts completed)."""
    created_at: datetime

    @property
    def status(self) -> JobStatus:
        """Paused when the body asks; otherwise active, or completed when no fire is left."""
        if self.body.paused:
            return JobStatus.PAUSED
        return JobStatus.ACTIVE if self.next_run else JobStatus.COMPLETED


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """A create under the client's ``Idempotency-Key``: a repeat of the same ``request`` (the body as sent,
    before defaults were filled in) is answered with the first one's job instead of creating another."""

    key: str
    request: object


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of a tenant's jobs and the cursor of the next (None: the last page)."""

    items: list[Job]
    next_cursor: str | None


class JobTiming(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """What the timing module needs of a job to fire it: never the target, body or metadata."""

    id: str
    tenant: str
    schedule: Schedule
    catchup: CatchupPolicy
    status: JobStatus
    next_run: datetime | None
    resumed_at: datetime | None
    partition: int
    created_at: datetime | None
    version: int


class JobNotice(msgspec.Struct, frozen=True, array_like=True):
    """A job changed through the API: timing replicas and the response cache are told.

    ``timing`` is the job's timing view as the write left it (None: deleted), so timing replicas need
    not read the job back; they ignore a notice older than what they already know.
    """

    tenant: str
    job_id: str
    partition: int
    timing: JobTiming | None = None


class JobForRun(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """The parts of a job that execution needs, read fresh for every run."""

    id: str
    tenant: str
    target: Target
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    overlap: str = "allow"
    status: str = "active"
    notify: NotificationTarget | None = None
    """The job's own notification target (None: the tenant's default applies)."""
    partition: int = 0
    """The job's timing partition: the run subject a fire of the job is published on."""


class JobChange(JobPatch, kw_only=True):
    """What an API write changes on a job: the fields a ``PATCH`` may change (their list is
    :class:`JobPatch`'s) and those only the service sets; unset fields stay as they are."""

    status: JobStatus | UnsetType = UNSET
    next_run: datetime | UnsetType | None = UNSET
    resumed_at: datetime | UnsetType | None = UNSET
    only_if_status: frozenset[JobStatus] = frozenset()
    """Apply only while the job has one of these statuses (any when empty): one conditional write."""


def change_from_patch(patch: JobPatch) -> JobChange:
    """The change a ``PATCH`` body asks for (its unset fields stay unset)."""
    return JobChange(**msgspec.structs.asdict(patch))


class JobStateError(SchedsvcError, RuntimeError):
    """A conditional change found the job in a status it does not apply to; ``job`` is the job as it is."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} is {job.status.value}")
        self.job = job
