"""``/jobs``: create, list, inspect, change, pause, resume, delete and run jobs now.

A thin adapter: it reads HTTP (body, ``If-Match``, ``Idempotency-Key``, query) and answers with the
job and its ``ETag``; what each operation does is :class:`~schedsvc.job_service.JobService`'s.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated

import msgspec
from litestar import Controller, HttpMethod, Request, Response, delete, get, patch, post, route
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, HeaderParameter, QueryParameter

from schedsvc.api import openapi
from schedsvc.api.errors import problem_responses
from schedsvc.domain import patterns
from schedsvc.domain.errors import InvalidRequestError
from schedsvc.domain.limits import key_problem
from schedsvc.domain.models import Job, JobCreate, JobPatch, JobStatus, Metadata
from schedsvc.domain.wire import JobList, JobSelector, RunAccepted, RunList
from schedsvc.job_service import JobService
from schedsvc.store.base import JobRepository, RunHistory

# A version is a positive 64-bit integer: at most 19 digits, and a value that long may still overflow, so
# the pattern admits 18 (a job would need a quintillion changes to need more).
MAX_METADATA_FILTERS = 16
_ETAG = re.compile(r'^\s*(?:W/)?"([0-9]{1,18})"\s*$')
IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        pattern=patterns.IF_MATCH,
        description='The job\'s ETag (`"<version>"`): the change applies only at that version (412 otherwise)',
    ),
]
Cursor = Annotated[
    str | None,
    QueryParameter(pattern=patterns.CURSOR, max_length=200, description="`nextCursor` of the previous page"),
]


def _etag(job: Job) -> dict[str, str]:
    return {"ETag": f'"{job.version}"'}


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    match = _ETAG.match(if_match)
    if match is None:
        raise ClientException('If-Match must be an ETag such as "3"', extra={"field": "If-Match"})
    return int(match.group(1))


def _metadata_pairs(values: list[str]) -> dict[str, str]:
    """``metadata=team:payments`` → ``{"team": "payments"}``: the key ends at the first colon (a value may
    hold colons, a key cannot). 400 naming ``metadata`` for a value without one, too many pairs, two values
    for one key, or a key or value no job's metadata can hold (a NUL, or longer than ``Metadata`` allows):
    the database would refuse the query itself."""
    if len(values) > MAX_METADATA_FILTERS:
        raise InvalidRequestError([("metadata", f"at most {MAX_METADATA_FILTERS} pairs")], status=400)
    pairs: dict[str, str] = {}
    for value in values:
        key, colon, wanted = value.partition(":")
        shown = value.replace("\x00", "\\u0000")
        if not colon or not key:
            raise InvalidRequestError([("metadata", f"{shown!r} is not key:value")], status=400)
        if problem := key_problem(key):
            raise InvalidRequestError([("metadata", f"{shown!r}: {problem}")], status=400)
        if key in pairs and pairs[key] != wanted:  # both cannot hold: say so rather than answer nothing
            raise InvalidRequestError([("metadata", f"two values for the key {key!r}")], status=400)
        pairs[key] = wanted
    try:
        return msgspec.convert(pairs, Metadata)  # the lengths a job's metadata is held to
    except msgspec.ValidationError as exc:
        raise InvalidRequestError([("metadata", str(exc).split(" - ")[0])], status=400) from None


_ChangeStatus = Callable[[JobService, str, str, int | None], Awaitable[Job]]
"""``JobService.pause`` or ``JobService.resume``: (service, tenant, job id, expected version) → the job."""


def _status_change(
    path: str, change: _ChangeStatus, *, summary: str, operation_id: str, answer: ResponseSpec
) -> HTTPRouteHandler:
    """``POST /jobs/{id}/pause`` and ``/resume``: the same request (``If-Match``) and answer (the job and its
    ``ETag``), around the job service's use case."""

    @post(
        path,
        summary=summary,
        operation_id=operation_id,
        status_code=200,
        responses={**problem_responses(404, 409, 412), 200: answer},
    )
    async def change_status(
        self: Controller,
        request: Request[str, str, State],
        job_service: NamedDependency[JobService],
        job_id: FromPath[str],
        if_match: IfMatch = None,
    ) -> Response[Job]:
        job = await change(job_service, request.user, job_id, _expected_version(if_match))
        return Response(job, headers=_etag(job))

    return change_status


class JobsController(Controller):
    path = "/jobs"
    tags = ["jobs"]

    @post(
        "/",
        status_code=201,
        summary="Create a job",
        operation_id="createJob",
        responses={
            **problem_responses(409, 422),
            201: openapi.success(Job, "The job (`Location`, `ETag`)", openapi.JOB),
        },
    )
    async def create_job(
        self,
        request: Request[str, str, State],
        job_service: NamedDependency[JobService],
        data: Annotated[JobCreate, openapi.body(openapi.CREATE_CRON_WEBHOOK, openapi.CREATE_INTERVAL_NATS)],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key", max_length=255)] = None,
    ) -> Response[Job]:
        job, created = await job_service.create(request.user, data, idempotency_key=idempotency_key)
        headers = {**_etag(job), "Location": f"/jobs/{job.id}"}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return Response(job, status_code=201, headers=headers)

    @get(
        "/",
        summary="List jobs",
        operation_id="listJobs",
        cache=True,
        responses={**problem_responses(), 200: openapi.success(JobList, "A page of jobs", openapi.JOB_PAGE)},
    )
    async def list_jobs(
        self,
        request: Request[str, str, State],
        job_service: NamedDependency[JobService],
        status: FromQuery[JobStatus | None] = None,
        tag: Annotated[str | None, QueryParameter(max_length=64)] = None,
        name: Annotated[str | None, QueryParameter(max_length=200, description="name prefix")] = None,
        metadata: Annotated[
            list[str] | None,
            QueryParameter(description="`key:value` (repeatable): jobs whose metadata holds every pair"),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: Cursor = None,
    ) -> JobList:
        pairs = _metadata_pairs(metadata or [])
        try:
            selector = JobSelector(status=status, tag=tag, name_prefix=name, metadata=pairs)
            page = await job_service.list(request.user, selector, limit=limit, cursor=cursor)
        except ValueError as exc:
            raise ClientException(str(exc), extra={"field": "cursor"}) from None
        return JobList(page.items, page.next_cursor)

    @route("/", http_method=[HttpMethod.OPTIONS], include_in_schema=False, status_code=204)
    async def allowed_methods_of_jobs(self) -> Response[None]:
        """``OPTIONS /jobs`` (see :meth:`allowed_methods_of_a_job`)."""
        return Response(None, status_code=204, headers={"Allow": "GET, OPTIONS, POST"})

    @route("/{job_id:str}", http_method=[HttpMethod.OPTIONS], include_in_schema=False, status_code=204)
    async def allowed_methods_of_a_job(self) -> Response[None]:
        """``OPTIONS /jobs/{id}``.

        Litestar registers a controller's handlers one at a time (in name order) and keeps the OPTIONS
        handler it generated for the first one (``delete_job``) when it merges the others into the route,
        so its ``Allow`` said ``DELETE, OPTIONS``. This handler's name sorts first, so it is the path's
        OPTIONS handler from the start.
        """
        return Response(None, status_code=204, headers={"Allow": "DELETE, GET, OPTIONS, PATCH"})

    @get(
        "/{job_id:str}",
        summary="Get a job",
        operation_id="getJob",
        cache=True,
        responses={**problem_responses(404), 200: openapi.success(Job, "The job (`ETag`)", openapi.JOB)},
    )
    async def get_job(
        self, request: Request[str, str, State], job_service: NamedDependency[JobService], job_id: FromPath[str]
    ) -> Response[Job]:
        job = await job_service.get(request.user, job_id)
        return Response(job, headers=_etag(job))

    @patch(
        "/{job_id:str}",
        summary="Change a job",
        description="Only the fields present change; an empty body changes nothing, the version included.",
        operation_id="updateJob",
        responses={**problem_responses(404, 409, 412, 422), 200: openapi.success(Job, "The changed job", openapi.JOB)},
    )
    async def update_job(
        self,
        request: Request[str, str, State],
        job_service: NamedDependency[JobService],
        job_id: FromPath[str],
        data: Annotated[JobPatch, openapi.body(openapi.PATCH_SCHEDULE, openapi.PATCH_TAGS, openapi.PATCH_NOTIFY)],
        if_match: IfMatch = None,
    ) -> Response[Job]:
        job = await job_service.update(request.user, job_id, data, _expected_version(if_match))
        return Response(job, headers=_etag(job))

    @delete(
        "/{job_id:str}",
        summary="Delete a job",
        operation_id="deleteJob",
        status_code=204,
        responses=problem_responses(404, 412),
    )
    async def delete_job(
        self,
        request: Request[str, str, State],
        job_service: NamedDependency[JobService],
        job_id: FromPath[str],
        if_match: IfMatch = None,
    ) -> None:
        await job_service.delete(request.user, job_id, _expected_version(if_match))

    pause_job = _status_change(
        "/{job_id:str}/pause",
        JobService.pause,
        summary="Pause a job",
        operation_id="pauseJob",
        answer=openapi.success(Job, "The paused job", openapi.JOB_PAUSED),
    )
    resume_job = _status_change(
        "/{job_id:str}/resume",
        JobService.resume,
        summary="Resume a job (applies its catch-up policy)",
        operation_id="resumeJob",
        answer=openapi.success(Job, "The active job", openapi.JOB),
    )

    @post(
        "/{job_id:str}/run",
        summary="Run a job now (recorded as a manual run)",
        operation_id="runJobNow",
        status_code=202,
        responses={**problem_responses(404), 202: openapi.success(RunAccepted, "Queued", openapi.RUN_ACCEPTED)},
    )
    async def run_job_now(
        self, request: Request[str, str, State], job_service: NamedDependency[JobService], job_id: FromPath[str]
    ) -> RunAccepted:
        return await job_service.run_now(request.user, job_id)

    @get(
        "/{job_id:str}/runs",
        summary="Run history of a job, newest first",
        operation_id="listJobRuns",
        responses={**problem_responses(404), 200: openapi.success(RunList, "A page of runs", openapi.RUN_PAGE)},
    )
    async def list_runs(
        self,
        request: Request[str, str, State],
        jobs: NamedDependency[JobRepository],
        runs: NamedDependency[RunHistory],
        job_id: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: Cursor = None,
    ) -> RunList:
        await jobs.get(request.user, job_id)  # 404 for another tenant's job, as for a missing one
        try:
            items, next_cursor = await runs.list_for_job(request.user, job_id, limit, cursor)
        except ValueError as exc:
            raise ClientException(str(exc), extra={"field": "cursor"}) from None
        return RunList(items, next_cursor)
