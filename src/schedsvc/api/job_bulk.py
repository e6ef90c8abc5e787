"""``/jobs/bulk``: pause, resume or delete every job matching a selector, bounded in count.

A thin adapter over :class:`~schedsvc.job_service.JobService` (``*_matching``); what a bulk action
selects and how it stays idempotent is ``job_service/bulk.py``'s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler

from schedsvc.api import openapi
from schedsvc.api.errors import problem_responses
from schedsvc.domain.wire import BulkJobAction, BulkJobResult
from schedsvc.job_service import JobService

ActionBody = Annotated[BulkJobAction, openapi.body(openapi.BULK_BY_TAG, openapi.BULK_BY_METADATA)]
_ANSWERS = {
    **problem_responses(422),
    200: openapi.success(BulkJobResult, "How many matched and changed; `more`: call again", openapi.BULK_RESULT),
}
_ActOnMatching = Callable[[JobService, str, BulkJobAction], Awaitable[BulkJobResult]]
"""A ``JobService.*_matching`` use case: (service, tenant, action) → what matched and changed."""


def _bulk_action(path: str, act: _ActOnMatching, *, summary: str, operation_id: str) -> HTTPRouteHandler:
    """One bulk endpoint: every one takes the same body and gives the same answer; only the use case differs."""

    @post(path, summary=summary, operation_id=operation_id, status_code=200, responses=_ANSWERS)
    async def act_on_matching(
        self: Controller, request: Request[str, str, State], job_service: NamedDependency[JobService], data: ActionBody
    ) -> BulkJobResult:
        return await act(job_service, request.user, data)

    return act_on_matching


class BulkJobsController(Controller):
    path = "/jobs/bulk"
    tags = ["jobs"]

    pause_jobs = _bulk_action(
        "/pause", JobService.pause_matching, summary="Pause the jobs matching a selector", operation_id="pauseJobs"
    )
    resume_jobs = _bulk_action(
        "/resume",
        JobService.resume_matching,
        summary="Resume the jobs matching a selector (their catch-up policies apply)",
        operation_id="resumeJobs",
    )
    delete_jobs = _bulk_action(
        "/delete", JobService.delete_matching, summary="Delete the jobs matching a selector", operation_id="deleteJobs"
    )
