"""What the console's buttons and forms do: the same port calls and rules as ``/jobs``.

The API's rules that are not in the domain types (schedule defaults and the first fire, target checks)
come from ``schedsvc.api.job_rules``, which ``/jobs`` uses too, so the console cannot drift from it.
"""

from __future__ import annotations

import msgspec
from litestar.datastructures import State

from schedsvc.api.job_rules import check_job_input, first_fire_after
from schedsvc.domain import Job, JobCreate, JobPatch, JobStatus, RunMessage, RunTrigger
from schedsvc.domain.jobs import JobChange, JobStateError, change_from_patch
from schedsvc.domain.time import utcnow
from schedsvc.store.base import JobRepository, RunPublisher
from schedsvc.timing import to_ms


class ActionRefused(Exception):
    """The action does not apply to the job as it is (e.g. pausing a completed job)."""


async def create(state: State, jobs: JobRepository, tenant: str, data: JobCreate) -> Job:
    now = utcnow()
    planned = await check_job_input(state, tenant, now, data.schedule, data.target)
    assert planned is not None  # a schedule was given
    schedule, next_run = planned
    job, _ = await jobs.create(tenant, msgspec.structs.replace(data, schedule=schedule), next_run, now=now)
    return job


async def update(state: State, jobs: JobRepository, tenant: str, job_id: str, data: JobPatch, version: int) -> Job:
    """``PATCH /jobs/{id}`` with ``If-Match: "<version>"``: the version the form was rendered from."""
    now = utcnow()
    change = change_from_patch(data)
    new_schedule = None if isinstance(data.schedule, msgspec.UnsetType) else data.schedule
    new_target = None if isinstance(data.target, msgspec.UnsetType) else data.target
    planned = await check_job_input(state, tenant, now, new_schedule, new_target)
    if planned is not None:
        change.schedule, change.next_run = planned
        change.resumed_at = None
        change.only_if_status = frozenset({JobStatus.ACTIVE, JobStatus.PAUSED})
    try:
        return await jobs.update(tenant, job_id, change, version, now=now)
    except JobStateError as exc:  # a completed job with a new schedule becomes active again, as in the API
        completed = exc.job.status == JobStatus.COMPLETED
        change.status = JobStatus.ACTIVE if completed else msgspec.UNSET
        change.only_if_status = frozenset({exc.job.status})
        return await jobs.update(tenant, job_id, change, version, now=now)


async def pause(jobs: JobRepository, tenant: str, job_id: str, version: int) -> Job:
    change = JobChange(status=JobStatus.PAUSED, only_if_status=frozenset({JobStatus.ACTIVE}))
    try:
        return await jobs.update(tenant, job_id, change, version, now=utcnow())
    except JobStateError as exc:
        if exc.job.status == JobStatus.COMPLETED:
            raise ActionRefused("a completed job cannot be paused") from None
        return exc.job


async def resume(jobs: JobRepository, tenant: str, job_id: str, version: int) -> Job:
    now = utcnow()
    change = JobChange(status=JobStatus.ACTIVE, resumed_at=now, only_if_status=frozenset({JobStatus.PAUSED}))
    try:
        job = await jobs.update(tenant, job_id, change, version, now=now)
    except JobStateError as exc:
        if exc.job.status == JobStatus.COMPLETED:
            raise ActionRefused("a completed job cannot be resumed") from None
        return exc.job
    if job.next_run is None:  # paused before its first fire was known: pick it now (as the API does)
        change = JobChange(next_run=first_fire_after(job.schedule, now))
        job = await jobs.update(tenant, job_id, change, job.version, now=now)
    return job


async def run_now(jobs: JobRepository, run_queue: RunPublisher, tenant: str, job_id: str) -> int:
    """Queue a manual run (as ``POST /jobs/{id}/run``); returns its scheduled instant in ms."""
    job = await jobs.get(tenant, job_id)
    now_ms = to_ms(utcnow())
    message = RunMessage(job.id, tenant, now_ms, now_ms, RunTrigger.MANUAL.value, 0)
    await run_queue.publish_runs([message], [jobs.partition_of(job.id)])
    return now_ms


async def delete(jobs: JobRepository, tenant: str, job_id: str, version: int) -> None:
    await jobs.delete(tenant, job_id, version)
