"""``/jobs``: create, list, inspect, change, pause, resume, delete and run jobs now."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

import msgspec
from litestar import Controller, HttpMethod, Request, Response, delete, get, patch, post, route
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, HTTPException
from litestar.params import FromPath, FromQuery, HeaderParameter, QueryParameter

from schedsvc.api import openapi
from schedsvc.api.errors import problem_responses
from schedsvc.api.job_rules import check_job_input, first_fire_after
from schedsvc.domain import (
    Job,
    JobCreate,
    JobPatch,
    JobStatus,
    PreconditionFailedError,
    RunMessage,
    RunTrigger,
    VersionConflictError,
    run_id,
)
from schedsvc.domain.jobs import JobChange, JobStateError, change_from_patch
from schedsvc.domain.time import utcnow
from schedsvc.domain.wire import JobList, RunAccepted, RunList
from schedsvc.store.base import JobRepository, RunHistory, RunPublisher
from schedsvc.timing import from_ms, to_ms

# A version is a positive 64-bit integer: at most 19 digits, and a value that long may still overflow, so
# the pattern admits 18 (a job would need a quintillion changes to need more).
IF_MATCH_PATTERN = r'^\s*(\*|(W/)?"[0-9]{1,18}")\s*$'
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,200}$"
_ETAG = re.compile(r'^\s*(?:W/)?"([0-9]{1,18})"\s*$')
IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        pattern=IF_MATCH_PATTERN,
        description='The job\'s ETag (`"<version>"`): the change applies only at that version (412 otherwise)',
    ),
]
Cursor = Annotated[
    str | None,
    QueryParameter(pattern=CURSOR_PATTERN, max_length=200, description="`nextCursor` of the previous page"),
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


def _check_version(job: Job, expected: int | None) -> None:
    """412 when ``If-Match`` names a version the job is not at, even if the change would be a no-op."""
    if expected is not None and expected != job.version:
        raise PreconditionFailedError(job.id)


class JobsController(Controller):
    path = "/jobs"
    tags = ["jobs"]
    security = openapi.REQUIRES_KEY

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
        state: State,
        jobs: NamedDependency[JobRepository],
        data: Annotated[JobCreate, openapi.body(openapi.CREATE_CRON_WEBHOOK, openapi.CREATE_INTERVAL_NATS)],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key", max_length=255)] = None,
    ) -> Response[Job]:
        tenant = request.user
        now = utcnow()
        planned = await check_job_input(state, tenant, now, data.schedule, data.target, notify=data.notify)
        assert planned is not None
        schedule, next_run = planned
        body = msgspec.structs.replace(data, schedule=schedule)
        request_hash = hashlib.sha256(msgspec.json.encode(data)).hexdigest()
        job, created = await jobs.create(
            tenant, body, next_run, now=now, idempotency_key=idempotency_key, request_hash=request_hash
        )
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
        jobs: NamedDependency[JobRepository],
        status: FromQuery[JobStatus | None] = None,
        tag: Annotated[str | None, QueryParameter(max_length=64)] = None,
        name: Annotated[str | None, QueryParameter(max_length=200, description="name prefix")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: Cursor = None,
    ) -> JobList:
        try:
            page = await jobs.list(request.user, limit=limit, cursor=cursor, status=status, tag=tag, name_prefix=name)
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
        self, request: Request[str, str, State], jobs: NamedDependency[JobRepository], job_id: FromPath[str]
    ) -> Response[Job]:
        job = await jobs.get(request.user, job_id)
        return Response(job, headers=_etag(job))

    @patch(
        "/{job_id:str}",
        summary="Change a job",
        operation_id="updateJob",
        responses={**problem_responses(404, 409, 412, 422), 200: openapi.success(Job, "The changed job", openapi.JOB)},
    )
    async def update_job(
        self,
        request: Request[str, str, State],
        state: State,
        jobs: NamedDependency[JobRepository],
        job_id: FromPath[str],
        data: Annotated[JobPatch, openapi.body(openapi.PATCH_SCHEDULE, openapi.PATCH_TAGS, openapi.PATCH_NOTIFY)],
        if_match: IfMatch = None,
    ) -> Response[Job]:
        tenant = request.user
        expected = _expected_version(if_match)
        now = utcnow()
        change = change_from_patch(data)
        planned = await check_job_input(
            state,
            tenant,
            now,
            None if isinstance(data.schedule, msgspec.UnsetType) else data.schedule,
            None if isinstance(data.target, msgspec.UnsetType) else data.target,
            notify=None if isinstance(data.notify, msgspec.UnsetType) else data.notify,
        )
        if planned is not None:
            schedule, next_run = planned
            change.schedule, change.next_run, change.resumed_at = schedule, next_run, None
            # A completed job becomes active again: one conditional write for the status the job is in.
            change.only_if_status = frozenset({JobStatus.ACTIVE, JobStatus.PAUSED})
        for _ in range(3):
            try:
                job = await jobs.update(tenant, job_id, change, expected, now=now)
                break
            except JobStateError as exc:  # the status is not what the write assumed: assume the other
                completed = exc.job.status == JobStatus.COMPLETED
                change.status = JobStatus.ACTIVE if completed else msgspec.UNSET
                change.only_if_status = frozenset(
                    {JobStatus.COMPLETED} if completed else {JobStatus.ACTIVE, JobStatus.PAUSED}
                )
        else:
            raise VersionConflictError(job_id)
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
        jobs: NamedDependency[JobRepository],
        job_id: FromPath[str],
        if_match: IfMatch = None,
    ) -> None:
        await jobs.delete(request.user, job_id, _expected_version(if_match))

    @post(
        "/{job_id:str}/pause",
        summary="Pause a job",
        operation_id="pauseJob",
        status_code=200,
        responses={**problem_responses(404, 409, 412), 200: openapi.success(Job, "The paused job", openapi.JOB_PAUSED)},
    )
    async def pause_job(
        self,
        request: Request[str, str, State],
        jobs: NamedDependency[JobRepository],
        job_id: FromPath[str],
        if_match: IfMatch = None,
    ) -> Response[Job]:
        tenant = request.user
        expected = _expected_version(if_match)
        pause = JobChange(status=JobStatus.PAUSED, only_if_status=frozenset({JobStatus.ACTIVE}))
        try:
            job = await jobs.update(tenant, job_id, pause, expected, now=utcnow())
        except JobStateError as exc:
            _check_version(exc.job, expected)
            if exc.job.status == JobStatus.COMPLETED:
                raise HTTPException(status_code=409, detail="a completed job cannot be paused") from None
            return Response(exc.job, headers=_etag(exc.job))  # already paused
        return Response(job, headers=_etag(job))

    @post(
        "/{job_id:str}/resume",
        summary="Resume a job (applies its catch-up policy)",
        operation_id="resumeJob",
        status_code=200,
        responses={**problem_responses(404, 409, 412), 200: openapi.success(Job, "The active job", openapi.JOB)},
    )
    async def resume_job(
        self,
        request: Request[str, str, State],
        jobs: NamedDependency[JobRepository],
        job_id: FromPath[str],
        if_match: IfMatch = None,
    ) -> Response[Job]:
        tenant = request.user
        now = utcnow()
        # nextRun stays where the pause left it: the timing module sees the fires between it and
        # resumedAt as missed while paused and applies the job's catch-up policy to them.
        expected = _expected_version(if_match)
        resume = JobChange(status=JobStatus.ACTIVE, resumed_at=now, only_if_status=frozenset({JobStatus.PAUSED}))
        try:
            job = await jobs.update(tenant, job_id, resume, expected, now=now)
        except JobStateError as exc:
            _check_version(exc.job, expected)
            if exc.job.status == JobStatus.COMPLETED:
                raise HTTPException(status_code=409, detail="a completed job cannot be resumed") from None
            return Response(exc.job, headers=_etag(exc.job))  # already active
        if job.next_run is None:  # paused before its first fire was known: pick it now
            job = await jobs.update(
                tenant, job_id, JobChange(next_run=first_fire_after(job.schedule, now)), job.version, now=now
            )
        return Response(job, headers=_etag(job))

    @post(
        "/{job_id:str}/run",
        summary="Run a job now (recorded as a manual run)",
        operation_id="runJobNow",
        status_code=202,
        responses={**problem_responses(404), 202: openapi.success(RunAccepted, "Queued", openapi.RUN_ACCEPTED)},
    )
    async def run_job_now(
        self,
        request: Request[str, str, State],
        jobs: NamedDependency[JobRepository],
        run_queue: NamedDependency[RunPublisher],
        job_id: FromPath[str],
    ) -> RunAccepted:
        tenant = request.user
        job = await jobs.get(tenant, job_id)
        now_ms = to_ms(utcnow())
        message = RunMessage(job.id, tenant, now_ms, now_ms, RunTrigger.MANUAL.value, 0)
        await run_queue.publish_runs([message], [jobs.partition_of(job.id)])
        return RunAccepted(run_id(job.id, now_ms), job.id, from_ms(now_ms), RunTrigger.MANUAL)

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
