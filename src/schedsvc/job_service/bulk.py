"""Bulk actions: one action applied to the tenant's jobs that match a selector, bounded in count.

What pausing, resuming or deleting one job means stays with :class:`~schedsvc.job_service.JobService`;
this module picks the jobs and applies that to each. Each job is one conditional write through the job
repository, pinned to the version it was selected at, so:

- every change is announced to timing and the response cache exactly as a single-job change is;
- a job changed meanwhile (renamed, retagged, paused by someone else) is left alone, not overwritten;
- repeating the call is harmless: only jobs the action still applies to are selected, so a repeat after
  ``more`` reaches the rest, and a repeat after the last changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec

from schedsvc.domain.errors import VersionConflictError
from schedsvc.domain.jobs import JobPage, JobStateError
from schedsvc.domain.models import Job, JobStatus
from schedsvc.domain.wire import MAX_COUNTED_MATCHES, BulkJobAction, BulkJobResult, JobSelector

CONCURRENT_WRITES = 16
"""Writes of one bulk call in flight at once: quick for a thousand jobs, gentle on the connection pool."""


class MatchingJobs(Protocol):
    """What a bulk action reads of the job repository (``store.base.JobRepository`` has both)."""

    async def count(self, tenant: str, selector: JobSelector, *, limit: int) -> int: ...

    async def list(self, tenant: str, selector: JobSelector, *, limit: int, cursor: str | None = None) -> JobPage: ...


ApplyOne = Callable[[Job], Awaitable[object]]
"""The action on one job, at the version it was selected at; raises when the job is no longer as selected."""


async def act_on_matching(
    jobs: MatchingJobs, tenant: str, action: BulkJobAction, applies_to: JobStatus | None, apply: ApplyOne
) -> BulkJobResult:
    """Apply ``apply`` to at most ``action.limit`` of the tenant's jobs that match the selector and are in
    the status ``applies_to`` (any when None); count what matched (up to ``MAX_COUNTED_MATCHES``) and
    what changed."""
    selector = action.selector
    matched = await jobs.count(tenant, selector, limit=MAX_COUNTED_MATCHES)
    if applies_to is not None and selector.status not in (None, applies_to):
        return BulkJobResult(matched, 0, more=False)  # e.g. "pause the completed ones": none applies
    if applies_to is not None:
        selector = msgspec.structs.replace(selector, status=applies_to)
    page = await jobs.list(tenant, selector, limit=action.limit)
    gate = asyncio.Semaphore(CONCURRENT_WRITES)

    async def changed(job: Job) -> bool:
        async with gate:
            try:
                await apply(job)
            except (JobStateError, VersionConflictError, LookupError):  # changed or deleted meanwhile
                return False
            return True

    # A task group, not gather: when the database fails, the writes still queued are cancelled; the
    # failure itself is raised as it is (a 503 for an outage), not wrapped in an exception group.
    try:
        async with asyncio.TaskGroup() as group:
            outcomes = [group.create_task(changed(job)) for job in page.items]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return BulkJobResult(matched, sum(o.result() for o in outcomes), more=page.next_cursor is not None)
