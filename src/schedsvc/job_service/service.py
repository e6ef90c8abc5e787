"""What creating, listing, changing, pausing, resuming, deleting and running a job means, for every way in.

``/jobs`` (``api/jobs.py``) and the web console (``console/views.py``) are thin adapters over
:class:`JobService`: they read their input (JSON, a form), call one method, and present the answer or the
error (problem details, a flash message). The service holds the steps and their order; the repository
(``store.base.JobRepository``) holds the writes and announces each one to timing and the response cache.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

import msgspec

from schedsvc.domain.errors import (
    BusUnavailableError,
    JobActionRefusedError,
    PreconditionFailedError,
    VersionConflictError,
)
from schedsvc.domain.jobs import IdempotencyClaim, JobChange, JobPage, JobStateError, NewJob, change_from_patch
from schedsvc.domain.models import Job, JobCreate, JobPatch, JobStatus, RunMessage, RunTrigger, run_id
from schedsvc.domain.time import from_ms, to_ms, utcnow
from schedsvc.domain.wire import MAX_COUNTED_MATCHES, BulkJobAction, BulkJobResult, JobSelector, RunAccepted
from schedsvc.job_service.bulk import act_on_matching
from schedsvc.job_service.rules import TargetPolicy, check_job_input, first_fire_after
from schedsvc.store.base import JobRepository, RunPublisher

UPDATE_ATTEMPTS = 3
"""A schedule change assumes the job's status; when another write changed it meanwhile, it tries again."""


def _pause() -> JobChange:
    return JobChange(status=JobStatus.PAUSED, only_if_status=frozenset({JobStatus.ACTIVE}))


def _resume(now: datetime) -> JobChange:
    # nextRun stays where the pause left it: the timing module sees the fires between it and
    # resumedAt as missed while paused and applies the job's catch-up policy to them.
    return JobChange(status=JobStatus.ACTIVE, resumed_at=now, only_if_status=frozenset({JobStatus.PAUSED}))


_NO_CHANGE = JobPatch()


def _check_version(job: Job, expected: int | None) -> None:
    """412 when the caller's version is not the job's, even if the change would be a no-op."""
    if expected is not None and expected != job.version:
        raise PreconditionFailedError(job.id)


class JobService:
    """A tenant's job use cases over the job repository, the target policy and the run queue.

    A plain class, not a dataclass: Litestar would otherwise read its fields as a schema to validate.
    """

    __slots__ = ("jobs", "run_queue", "targets")

    def __init__(self, jobs: JobRepository, targets: TargetPolicy, run_queue: RunPublisher | None) -> None:
        self.jobs = jobs
        self.targets = targets
        self.run_queue = run_queue
        """None while NATS is not connected (an API process started without it): running now answers 503."""

    async def create(self, tenant: str, data: JobCreate, *, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Create a job; returns it and whether it is new (False: a replay of the same ``idempotency_key``)."""
        now = utcnow()
        planned = await check_job_input(self.targets, tenant, now, data.schedule, data.target, notify=data.notify)
        assert planned is not None  # a schedule was given
        schedule, next_run = planned
        job = NewJob(tenant, msgspec.structs.replace(data, schedule=schedule), next_run, created_at=now)
        claim = None if idempotency_key is None else IdempotencyClaim(idempotency_key, data)
        return await self.jobs.create(job, claim)

    async def get(self, tenant: str, job_id: str) -> Job:
        return await self.jobs.get(tenant, job_id)

    async def list(self, tenant: str, selector: JobSelector, *, limit: int, cursor: str | None = None) -> JobPage:
        """A page of the tenant's jobs the selector matches; ``ValueError`` for a foreign cursor."""
        return await self.jobs.list(tenant, selector, limit=limit, cursor=cursor)

    async def update(self, tenant: str, job_id: str, patch: JobPatch, expected_version: int | None) -> Job:
        """Apply a partial change; a new schedule recomputes ``nextRun`` and makes a completed job active. An
        empty one changes nothing: the job is answered as it is (its version too)."""
        if patch == _NO_CHANGE:
            job = await self.jobs.get(tenant, job_id)
            _check_version(job, expected_version)
            return job
        now = utcnow()
        change = change_from_patch(patch)
        planned = await check_job_input(
            self.targets,
            tenant,
            now,
            None if isinstance(patch.schedule, msgspec.UnsetType) else patch.schedule,
            None if isinstance(patch.target, msgspec.UnsetType) else patch.target,
            notify=None if isinstance(patch.notify, msgspec.UnsetType) else patch.notify,
        )
        if planned is not None:
            change.schedule, change.next_run = planned
            change.resumed_at = None
            # A completed job becomes active again: one conditional write for the status the job is in.
            change.only_if_status = frozenset({JobStatus.ACTIVE, JobStatus.PAUSED})
        for _ in range(UPDATE_ATTEMPTS):
            try:
                return await self.jobs.update(tenant, job_id, change, expected_version, now=now)
            except JobStateError as exc:  # the status is not what the write assumed: assume the other
                completed = exc.job.status == JobStatus.COMPLETED
                change.status = JobStatus.ACTIVE if completed else msgspec.UNSET
                change.only_if_status = frozenset(
                    {JobStatus.COMPLETED} if completed else {JobStatus.ACTIVE, JobStatus.PAUSED}
                )
        raise VersionConflictError(job_id)

    async def pause(self, tenant: str, job_id: str, expected_version: int | None) -> Job:
        """Pause an active job; a paused one is returned as it is (409 for a completed one)."""
        try:
            return await self.jobs.update(tenant, job_id, _pause(), expected_version, now=utcnow())
        except JobStateError as exc:
            _check_version(exc.job, expected_version)
            if exc.job.status == JobStatus.COMPLETED:
                raise JobActionRefusedError("a completed job cannot be paused") from None
            return exc.job  # already paused

    async def resume(self, tenant: str, job_id: str, expected_version: int | None) -> Job:
        """Resume a paused job (its catch-up policy applies); an active one is returned as it is."""
        now = utcnow()
        try:
            job = await self.jobs.update(tenant, job_id, _resume(now), expected_version, now=now)
        except JobStateError as exc:
            _check_version(exc.job, expected_version)
            if exc.job.status == JobStatus.COMPLETED:
                raise JobActionRefusedError("a completed job cannot be resumed") from None
            return exc.job  # already active
        return await self._with_first_fire(tenant, job, now)

    async def _with_first_fire(self, tenant: str, job: Job, now: datetime) -> Job:
        if job.next_run is not None:
            return job
        # Paused before its first fire was known: pick it now.
        change = JobChange(next_run=first_fire_after(job.schedule, now))
        return await self.jobs.update(tenant, job.id, change, job.version, now=now)

    async def delete(self, tenant: str, job_id: str, expected_version: int | None) -> None:
        await self.jobs.delete(tenant, job_id, expected_version)

    async def run_now(self, tenant: str, job_id: str) -> RunAccepted:
        """Queue a manual run at this instant (its outcome shows in the run history)."""
        if self.run_queue is None:
            raise BusUnavailableError("NATS is not connected")
        job = await self.jobs.get(tenant, job_id)
        now_ms = to_ms(utcnow())
        message = RunMessage(job.id, tenant, now_ms, now_ms, RunTrigger.MANUAL.value, 0)
        await self.run_queue.publish_runs([message], [self.jobs.partition_of(job.id)])
        return RunAccepted(run_id(job.id, now_ms), job.id, from_ms(now_ms), RunTrigger.MANUAL)

    # -- bulk actions (job_service/bulk.py picks the jobs; each is the single-job change above) ----------

    async def count_matching(self, tenant: str, selector: JobSelector) -> int:
        """How many of the tenant's jobs match, counted as a bulk action counts them (up to
        ``MAX_COUNTED_MATCHES``): what a confirmation shows before a bulk delete."""
        return await self.jobs.count(tenant, selector, limit=MAX_COUNTED_MATCHES)

    async def pause_matching(self, tenant: str, action: BulkJobAction) -> BulkJobResult:
        """Pause the active jobs matching the selector (at most ``action.limit``)."""
        now = utcnow()

        async def pause_one(job: Job) -> None:
            await self.jobs.update(tenant, job.id, _pause(), job.version, now=now)

        return await act_on_matching(self.jobs, tenant, action, JobStatus.ACTIVE, pause_one)

    async def resume_matching(self, tenant: str, action: BulkJobAction) -> BulkJobResult:
        """Resume the paused jobs matching the selector (at most ``action.limit``); catch-up applies."""
        now = utcnow()

        async def resume_one(job: Job) -> None:
            resumed = await self.jobs.update(tenant, job.id, _resume(now), job.version, now=now)
            with contextlib.suppress(VersionConflictError, LookupError):  # resumed; changed again since
                await self._with_first_fire(tenant, resumed, now)

        return await act_on_matching(self.jobs, tenant, action, JobStatus.PAUSED, resume_one)

    async def delete_matching(self, tenant: str, action: BulkJobAction) -> BulkJobResult:
        """Delete the jobs matching the selector (at most ``action.limit``)."""

        async def delete_one(job: Job) -> None:
            await self.jobs.delete(tenant, job.id, job.version)

        return await act_on_matching(self.jobs, tenant, action, None, delete_one)
