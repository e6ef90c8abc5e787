"""``/jobs/bulk``: pause, resume or delete every job matching a selector, bounded in count.

A thin adapter over :class:`~schedsvc.job_service.JobService` (``*_matching``); what a bulk action
selects and how it stays idempotent is ``job_service/bulk.py``'s.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.di import NamedDependency

from schedsvc.api import openapi
from schedsvc.api.errors import problem_responses
from schedsvc.domain.wire import BulkJobAction, BulkJobResult
from schedsvc.job_service import JobService

ActionBody = Annotated[BulkJobAction, openapi.body(openapi.BULK_BY_TAG, openapi.BULK_BY_METADATA)]
_ANSWERS = {
    **problem_responses(422),
    200: openapi.success(BulkJobResult, "How many matched and changed; `more`: call again", openapi.BULK_RESULT),
}


class BulkJobsController(Controller):
    path = "/jobs/bulk"
    tags = ["jobs"]

    @post(
        "/pause",
        summary="Pause the jobs matching a selector",
        operation_id="pauseJobs",
        status_code=200,
        responses=_ANSWERS,
    )
    async def pause_jobs(
        self, request: Request[str, str, State], job_service: NamedDependency[JobService], data: ActionBody
    ) -> BulkJobResult:
        return await job_service.pause_matching(request.user, data)

    @post(
        "/resume",
        summary="Resume the jobs matching a selector (their catch-up policies apply)",
        operation_id="resumeJobs",
        status_code=200,
        responses=_ANSWERS,
    )
    async def resume_jobs(
        self, request: Request[str, str, State], job_service: NamedDependency[JobService], data: ActionBody
    ) -> BulkJobResult:
        return await job_service.resume_matching(request.user, data)

    @post(
        "/delete",
        summary="Delete the jobs matching a selector",
        operation_id="deleteJobs",
        status_code=200,
        responses=_ANSWERS,
    )
    async def delete_jobs(
        self, request: Request[str, str, State], job_service: NamedDependency[JobService], data: ActionBody
    ) -> BulkJobResult:
        return await job_service.delete_matching(request.user, data)
