"""``/jobs``: create, list, inspect, change, pause, resume, delete and run jobs now."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, HTTPException
from litestar.params import FromPath, FromQuery, HeaderParameter, QueryParameter

from schedsvc.api import openapi
from schedsvc.api.errors import problem_responses
from schedsvc.domain import (
    HttpTarget,
    InvalidScheduleError,
    InvalidTargetError,
    Job,
    JobCreate,
    JobPatch,
    JobStatus,
    NatsTarget,
    RunMessage,
    RunTrigger,
    Schedule,
    Target,
    VersionConflictError,
    run_id,
    subject_allowed,
)
from schedsvc.domain.jobs import JobChange, JobStateError, change_from_patch
from schedsvc.domain.time import utcnow
from schedsvc.domain.wire import JobList, RunAccepted, RunList
from schedsvc.execution.addresses import refusal_reason
from schedsvc.store.base import JobRepository, RunHistory, RunPublisher
from schedsvc.timing import compile_schedule, from_ms, to_ms, with_defaults

_ETAG = re.compile(r'^\s*(?:W/)?"(\d+)"\s*$')
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers the service sets itself on every delivery; a job may not override them.
_RESERVED_HEADERS = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "idempotency-key",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
}


def _etag(job: Job) -> dict[str, str]:
    return {"ETag": f'"{job.version}"'}


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    match = _ETAG.match(if_match)
    if match is None:
        raise ClientException('If-Match must be an ETag such as "3"', extra={"field": "If-Match"})
    return int(match.group(1))


def _next_run(schedule: Schedule, now: datetime) -> datetime | None:
    compiled = compile_schedule(schedule, created=now)
    nominal = compiled.next_after(to_ms(now))
    return None if nominal is None else from_ms(nominal)


async def _check_target(target: Target, tenant: str, state: State) -> None:
    """Reject targets the tenant may not use at create/change time (422), not at run time."""
    match target:
        case HttpTarget():
            parts = urlsplit(target.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InvalidTargetError("url must be an absolute http or https URL", "target.url")
            if parts.username or parts.password:
                raise InvalidTargetError("url must not contain credentials; use headers", "target.url")
            for name in target.headers:
                if not _HEADER_NAME.match(name):
                    raise InvalidTargetError(f"invalid header name {name!r}", "target.headers")
                if name.lower() in _RESERVED_HEADERS:
                    raise InvalidTargetError(f"header {name!r} is set by the service", "target.headers")
            reason = _literal_address_refusal(parts.hostname, state.settings.target_allow_networks)
            if reason:
                raise InvalidTargetError(
                    f"url points at a {reason.replace('_', '-')} address, which targets may not reach "
                    "(SCHEDSVC_TARGET_ALLOW_NETWORKS can permit it)",
                    "target.url",
                )
        case NatsTarget():
            grants = await state.tenants.subject_grants(tenant, state.settings.nats_subject_grant)
            reason = subject_allowed(target.subject, grants, state.names.reserved_subject_roots)
            if reason:
                raise InvalidTargetError(reason, "target.subject")


def _literal_address_refusal(host: str, allow: Any) -> str | None:
    """Early refusal for URLs whose host is an IP literal or localhost; names are checked at connect time."""
    if host.lower().rstrip(".") == "localhost" or host.lower().rstrip(".").endswith(".localhost"):
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return refusal_reason(address, allow)


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
        schedule = with_defaults(data.schedule, now)
        next_run = _next_run(schedule, now)
        if next_run is None:
            raise InvalidScheduleError("the schedule has no fire after now", "schedule")
        await _check_target(data.target, tenant, state)
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
        cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
    ) -> JobList:
        try:
            page = await jobs.list(request.user, limit=limit, cursor=cursor, status=status, tag=tag, name_prefix=name)
        except ValueError as exc:
            raise ClientException(str(exc), extra={"field": "cursor"}) from None
        return JobList(page.items, page.next_cursor)

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
        data: Annotated[JobPatch, openapi.body(openapi.PATCH_SCHEDULE, openapi.PATCH_TAGS)],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[Job]:
        tenant = request.user
        expected = _expected_version(if_match)
        now = utcnow()
        change = change_from_patch(data)
        if not isinstance(data.schedule, msgspec.UnsetType):
            schedule = with_defaults(data.schedule, now)
            next_run = _next_run(schedule, now)
            if next_run is None:
                raise InvalidScheduleError("the schedule has no fire after now", "schedule")
            change.schedule, change.next_run, change.resumed_at = schedule, next_run, None
            # A completed job becomes active again: one conditional write for the status the job is in.
            change.only_if_status = frozenset({JobStatus.ACTIVE, JobStatus.PAUSED})
        if not isinstance(data.target, msgspec.UnsetType):
            await _check_target(data.target, tenant, state)
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
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
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
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[Job]:
        tenant = request.user
        pause = JobChange(status=JobStatus.PAUSED, only_if_status=frozenset({JobStatus.ACTIVE}))
        try:
            job = await jobs.update(tenant, job_id, pause, _expected_version(if_match), now=utcnow())
        except JobStateError as exc:
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
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[Job]:
        tenant = request.user
        now = utcnow()
        # nextRun stays where the pause left it: the timing module sees the fires between it and
        # resumedAt as missed while paused and applies the job's catch-up policy to them.
        resume = JobChange(status=JobStatus.ACTIVE, resumed_at=now, only_if_status=frozenset({JobStatus.PAUSED}))
        try:
            job = await jobs.update(tenant, job_id, resume, _expected_version(if_match), now=now)
        except JobStateError as exc:
            if exc.job.status == JobStatus.COMPLETED:
                raise HTTPException(status_code=409, detail="a completed job cannot be resumed") from None
            return Response(exc.job, headers=_etag(exc.job))  # already active
        if job.next_run is None:  # paused before its first fire was known: pick it now
            job = await jobs.update(
                tenant, job_id, JobChange(next_run=_next_run(job.schedule, now)), job.version, now=now
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
        cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
    ) -> RunList:
        await jobs.get(request.user, job_id)  # 404 for another tenant's job, as for a missing one
        try:
            items, next_cursor = await runs.list_for_job(request.user, job_id, limit, cursor)
        except ValueError as exc:
            raise ClientException(str(exc), extra={"field": "cursor"}) from None
        return RunList(items, next_cursor)
