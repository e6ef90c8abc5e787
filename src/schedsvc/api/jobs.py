"""``/jobs``: create, list, inspect, change, pause, resume, delete and run jobs now."""

from __future__ import annotations

import contextlib
import hashlib
import re
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, HttpMethod, Request, Response, delete, get, patch, post, route
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter

from schedsvc.api.errors import problem_responses
from schedsvc.domain import (
    BusUnavailableError,
    InvalidRequestError,
    InvalidScheduleError,
    Job,
    JobCreate,
    JobPatch,
    JobStatus,
    PreconditionFailedError,
    Run,
    RunMessage,
    RunTrigger,
    Schedule,
    Target,
    run_id,
    target_problems,
)
from schedsvc.store.base import JobStore, RunHistory
from schedsvc.store.jobs import patch_to_changes, to_document, utcnow
from schedsvc.timing import compile_schedule, from_ms, to_ms, with_defaults

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


class JobList(msgspec.Struct, rename="camel"):
    items: list[Job]
    next_cursor: str | None


class RunList(msgspec.Struct, rename="camel"):
    items: list[Run]
    next_cursor: str | None


class RunAccepted(msgspec.Struct, rename="camel"):
    run_id: str
    job_id: str
    scheduled_at: datetime
    trigger: RunTrigger


def _etag(job: Job) -> dict[str, str]:
    return {"ETag": f'"{job.version}"'}


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    match = _ETAG.match(if_match)
    if match is None:
        raise InvalidRequestError([("If-Match", 'If-Match must be an ETag such as "3"')], status=400)
    return int(match.group(1))


def _check_version(job: Job, expected: int | None) -> None:
    """412 when ``If-Match`` names a version the job is not at, even if the change would be a no-op."""
    if expected is not None and expected != job.version:
        raise PreconditionFailedError(job.id)


def _planned(schedule: Schedule, now: datetime) -> tuple[Schedule, datetime]:
    """The schedule with its creation-time defaults and its first fire after now."""
    schedule = with_defaults(schedule, now)
    compiled = compile_schedule(schedule, created=now)
    nominal = compiled.next_after(to_ms(now))
    try:
        next_run = None if nominal is None else from_ms(nominal)
    except (OverflowError, ValueError, OSError):  # a fire beyond what a datetime holds
        next_run = None
    if next_run is None:
        raise InvalidScheduleError("the schedule has no fire after now", "schedule")
    return schedule, next_run


async def _checked(
    state: State, tenant: str, now: datetime, schedule: Schedule | None, target: Target | None
) -> tuple[Schedule, datetime] | None:
    """Check the schedule and the target together, so one answer lists the problems of both (422);
    returns the planned schedule when one was given."""
    problems: list[tuple[str, str]] = []
    planned = None
    if schedule is not None:
        try:
            planned = _planned(schedule, now)
        except InvalidScheduleError as exc:
            problems.append((exc.field, str(exc)))
    if target is not None:
        # The target policy, also applied before every call (execution/targets.py).
        grants = await state.tenants.subject_grants(tenant, state.settings.nats_subject_grant)
        problems += target_problems(
            target,
            allow=state.settings.target_allow_networks,
            grants=grants,
            reserved_roots=state.names.reserved_subject_roots,
        )
    if problems:
        raise InvalidRequestError(problems)
    return planned


async def _announce(state: State, tenant: str, job_id: str, partition: int) -> None:
    """Tell timing replicas and the response cache that a job changed."""
    await state.on_job_changed(tenant, job_id, partition)


def provide_jobs(state: State) -> JobStore:
    store: JobStore = state.jobs
    return store


def provide_runs(state: State) -> RunHistory:
    history: RunHistory = state.runs
    return history


class JobsController(Controller):
    path = "/jobs"
    tags = ["jobs"]
    dependencies = {
        "jobs": Provide(provide_jobs, sync_to_thread=False),
        "runs": Provide(provide_runs, sync_to_thread=False),
    }

    @post("/", status_code=201, summary="Create a job", responses=problem_responses(409, 422))
    async def create_job(
        self,
        request: Request[str, str, State],
        state: State,
        jobs: NamedDependency[JobStore],
        data: JSONBody[JobCreate],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key", max_length=255)] = None,
    ) -> Response[Job]:
        tenant = request.user
        now = utcnow()
        planned = await _checked(state, tenant, now, data.schedule, data.target)
        assert planned is not None
        schedule, next_run = planned
        body = msgspec.structs.replace(data, schedule=schedule)
        request_hash = hashlib.sha256(msgspec.json.encode(data)).hexdigest()
        job, created = await jobs.create(
            tenant, body, next_run, now=now, idempotency_key=idempotency_key, request_hash=request_hash
        )
        headers = {**_etag(job), "Location": f"/jobs/{job.id}"}
        if created:
            await _announce(state, tenant, job.id, state.partition_of(job.id))
        else:
            headers["Idempotent-Replayed"] = "true"
        return Response(job, status_code=201, headers=headers)

    @get("/", summary="List jobs", cache=True, responses=problem_responses())
    async def list_jobs(
        self,
        request: Request[str, str, State],
        jobs: NamedDependency[JobStore],
        status: FromQuery[JobStatus | None] = None,
        tag: Annotated[str | None, QueryParameter(max_length=64)] = None,
        name: Annotated[str | None, QueryParameter(max_length=200, description="name prefix")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: Cursor = None,
    ) -> JobList:
        page = await jobs.list(request.user, limit=limit, cursor=cursor, status=status, tag=tag, name_prefix=name)
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

    @get("/{job_id:str}", summary="Get a job", cache=True, responses=problem_responses(404))
    async def get_job(
        self, request: Request[str, str, State], jobs: NamedDependency[JobStore], job_id: FromPath[str]
    ) -> Response[Job]:
        job = await jobs.get(request.user, job_id)
        return Response(job, headers=_etag(job))

    @patch("/{job_id:str}", summary="Change a job", responses=problem_responses(404, 409, 412, 422))
    async def update_job(
        self,
        request: Request[str, str, State],
        state: State,
        jobs: NamedDependency[JobStore],
        job_id: FromPath[str],
        data: JSONBody[JobPatch],
        if_match: IfMatch = None,
    ) -> Response[Job]:
        tenant = request.user
        expected = _expected_version(if_match)
        now = utcnow()
        changes = patch_to_changes(data)
        planned = await _checked(
            state,
            tenant,
            now,
            None if isinstance(data.schedule, msgspec.UnsetType) else data.schedule,
            None if isinstance(data.target, msgspec.UnsetType) else data.target,
        )
        if planned is not None:
            schedule, next_run = planned
            current = await jobs.get(tenant, job_id)
            changes["schedule"] = to_document(schedule)
            changes["nextRun"] = next_run
            changes["resumedAt"] = None
            if current.status == JobStatus.COMPLETED:
                changes["status"] = JobStatus.ACTIVE.value
        job = await jobs.update(tenant, job_id, changes, expected, now=now)
        await _announce(state, tenant, job.id, state.partition_of(job.id))
        return Response(job, headers=_etag(job))

    @delete("/{job_id:str}", summary="Delete a job", status_code=204, responses=problem_responses(404, 412))
    async def delete_job(
        self,
        request: Request[str, str, State],
        state: State,
        jobs: NamedDependency[JobStore],
        job_id: FromPath[str],
        if_match: IfMatch = None,
    ) -> None:
        partition = await jobs.delete(request.user, job_id, _expected_version(if_match))
        await _announce(state, request.user, job_id, partition)

    @post("/{job_id:str}/pause", summary="Pause a job", status_code=200, responses=problem_responses(404, 409, 412))
    async def pause_job(
        self,
        request: Request[str, str, State],
        state: State,
        jobs: NamedDependency[JobStore],
        job_id: FromPath[str],
        if_match: IfMatch = None,
    ) -> Response[Job]:
        tenant = request.user
        expected = _expected_version(if_match)
        job = await jobs.get(tenant, job_id)
        _check_version(job, expected)
        if job.status == JobStatus.COMPLETED:
            raise HTTPException(status_code=409, detail="a completed job cannot be paused")
        if job.status == JobStatus.PAUSED:
            return Response(job, headers=_etag(job))
        job = await jobs.update(tenant, job_id, {"status": JobStatus.PAUSED.value}, job.version, now=utcnow())
        await _announce(state, tenant, job.id, state.partition_of(job.id))
        return Response(job, headers=_etag(job))

    @post(
        "/{job_id:str}/resume",
        summary="Resume a job (applies its catch-up policy)",
        status_code=200,
        responses=problem_responses(404, 409, 412),
    )
    async def resume_job(
        self,
        request: Request[str, str, State],
        state: State,
        jobs: NamedDependency[JobStore],
        job_id: FromPath[str],
        if_match: IfMatch = None,
    ) -> Response[Job]:
        tenant = request.user
        expected = _expected_version(if_match)
        job = await jobs.get(tenant, job_id)
        _check_version(job, expected)
        if job.status != JobStatus.PAUSED:
            if job.status == JobStatus.COMPLETED:
                raise HTTPException(status_code=409, detail="a completed job cannot be resumed")
            return Response(job, headers=_etag(job))
        now = utcnow()
        # nextRun stays where the pause left it: the timing module sees the fires between it and
        # resumedAt as missed while paused and applies the job's catch-up policy to them.
        changes: dict[str, Any] = {"status": JobStatus.ACTIVE.value, "resumedAt": now}
        if job.next_run is None:
            with contextlib.suppress(InvalidScheduleError):  # no fire left: the job stays without nextRun
                changes["nextRun"] = _planned(job.schedule, now)[1]
        job = await jobs.update(tenant, job_id, changes, job.version, now=now)
        await _announce(state, tenant, job.id, state.partition_of(job.id))
        return Response(job, headers=_etag(job))

    @post(
        "/{job_id:str}/run",
        summary="Run a job now (recorded as a manual run)",
        status_code=202,
        responses=problem_responses(404),
    )
    async def run_job_now(
        self, request: Request[str, str, State], state: State, jobs: NamedDependency[JobStore], job_id: FromPath[str]
    ) -> RunAccepted:
        tenant = request.user
        job = await jobs.get(tenant, job_id)
        if state.bus is None:  # NATS was down when the process started and is not connected yet
            raise BusUnavailableError("NATS is not connected")
        now_ms = to_ms(utcnow())
        message = RunMessage(job.id, tenant, now_ms, now_ms, RunTrigger.MANUAL.value, 0)
        await state.bus.publish_runs([message], [state.partition_of(job.id)])
        return RunAccepted(run_id(job.id, now_ms), job.id, from_ms(now_ms), RunTrigger.MANUAL)

    @get("/{job_id:str}/runs", summary="Run history of a job, newest first", responses=problem_responses(404))
    async def list_runs(
        self,
        request: Request[str, str, State],
        jobs: NamedDependency[JobStore],
        runs: NamedDependency[RunHistory],
        job_id: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: Cursor = None,
    ) -> RunList:
        await jobs.get(request.user, job_id)  # 404 for another tenant's job, as for a missing one
        items, next_cursor = await runs.list_for_job(request.user, job_id, limit, cursor)
        return RunList(items, next_cursor)
