"""The REST API as data, without I/O: its operations, the request each client method sends, how an answer
is read, and which page follows a page (when a refusal is worth retrying: ``_retry.py``). The async and the
sync client both drive this module and only send and wait around it (``_base.py`` holds what else they
share), so the two cannot disagree; the test against ``/schema/openapi.json`` checks ``OPERATIONS`` against the
service's document.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Generic, Protocol, TypedDict, TypeVar
from urllib.parse import quote

import msgspec

from schedsvc import __version__
from schedsvc.client._retry import retry_after_seconds
from schedsvc.client.errors import ApiError, error_for
from schedsvc.domain.models import Job, JobCreate, JobPatch, JobStatus, Run, RunStatus, RunTrigger, Schedule
from schedsvc.domain.tenants import TenantSettings, TenantSettingsPatch
from schedsvc.domain.wire import (
    BackfillAccepted,
    BackfillRequest,
    BulkJobAction,
    BulkJobResult,
    JobList,
    JobSelector,
    PreviewRequest,
    PreviewResponse,
    Problem,
    RunAccepted,
    RunList,
    RunRetryFilter,
    RunRetryReport,
)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
Item_co = TypeVar("Item_co", covariant=True)

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = f"schedsvc-client/{__version__}"
IDEMPOTENCY_KEY = "Idempotency-Key"
IF_MATCH = "If-Match"
REQUEST_ID = "X-Request-Id"


@dataclass(frozen=True)
class Operation:
    """One operation of the OpenAPI document, as the client calls it."""

    operation_id: str
    method: str
    path: str
    """OpenAPI path template, e.g. ``/jobs/{job_id}``."""
    success: int
    response: type[Any] | None
    """Body type of the success response (None: no body)."""
    body: type[Any] | None = None
    query: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()


CREATE_JOB = Operation("createJob", "POST", "/jobs", 201, Job, JobCreate, headers=(IDEMPOTENCY_KEY,))
LIST_JOBS = Operation(
    "listJobs", "GET", "/jobs", 200, JobList, query=("status", "tag", "name", "metadata", "limit", "cursor")
)
GET_JOB = Operation("getJob", "GET", "/jobs/{job_id}", 200, Job)
UPDATE_JOB = Operation("updateJob", "PATCH", "/jobs/{job_id}", 200, Job, JobPatch, headers=(IF_MATCH,))
DELETE_JOB = Operation("deleteJob", "DELETE", "/jobs/{job_id}", 204, None, headers=(IF_MATCH,))
PAUSE_JOB = Operation("pauseJob", "POST", "/jobs/{job_id}/pause", 200, Job, headers=(IF_MATCH,))
RESUME_JOB = Operation("resumeJob", "POST", "/jobs/{job_id}/resume", 200, Job, headers=(IF_MATCH,))
RUN_JOB_NOW = Operation("runJobNow", "POST", "/jobs/{job_id}/run", 202, RunAccepted)
BACKFILL_JOB = Operation("backfillJob", "POST", "/jobs/{job_id}/backfill", 202, BackfillAccepted, BackfillRequest)
LIST_JOB_RUNS = Operation("listJobRuns", "GET", "/jobs/{job_id}/runs", 200, RunList, query=("limit", "cursor"))
LIST_RUNS = Operation(
    "listRuns", "GET", "/runs", 200, RunList, query=("status", "job", "trigger", "from", "to", "limit", "cursor")
)
GET_RUN = Operation("getRun", "GET", "/runs/{run_id}", 200, Run)
RETRY_RUN = Operation("retryRun", "POST", "/runs/{run_id}/retry", 202, RunAccepted)
RETRY_RUNS = Operation(
    "retryRuns", "POST", "/runs/retry", 200, RunRetryReport, RunRetryFilter, headers=(IDEMPOTENCY_KEY,)
)
PAUSE_JOBS = Operation("pauseJobs", "POST", "/jobs/bulk/pause", 200, BulkJobResult, BulkJobAction)
RESUME_JOBS = Operation("resumeJobs", "POST", "/jobs/bulk/resume", 200, BulkJobResult, BulkJobAction)
DELETE_JOBS = Operation("deleteJobs", "POST", "/jobs/bulk/delete", 200, BulkJobResult, BulkJobAction)
PREVIEW_SCHEDULE = Operation("previewSchedule", "POST", "/schedules/preview", 200, PreviewResponse, PreviewRequest)
GET_TENANT_SETTINGS = Operation("getTenantSettings", "GET", "/tenant/settings", 200, TenantSettings)
UPDATE_TENANT_SETTINGS = Operation(
    "updateTenantSettings", "PATCH", "/tenant/settings", 200, TenantSettings, TenantSettingsPatch
)

OPERATIONS: dict[str, Operation] = {
    op.operation_id: op
    for op in (
        CREATE_JOB,
        LIST_JOBS,
        GET_JOB,
        UPDATE_JOB,
        DELETE_JOB,
        PAUSE_JOB,
        RESUME_JOB,
        RUN_JOB_NOW,
        PAUSE_JOBS,
        RESUME_JOBS,
        DELETE_JOBS,
        BACKFILL_JOB,
        LIST_JOB_RUNS,
        LIST_RUNS,
        GET_RUN,
        RETRY_RUN,
        RETRY_RUNS,
        PREVIEW_SCHEDULE,
        GET_TENANT_SETTINGS,
        UPDATE_TENANT_SETTINGS,
    )
}
"""Every operation the client calls, by operation id."""

_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {
    op.response: msgspec.json.Decoder(op.response) for op in OPERATIONS.values() if op.response is not None
}
"""One decoder per success body, built once from the operations' own response types."""
_PROBLEM = msgspec.json.Decoder(Problem)


@dataclass(frozen=True)
class Call(Generic[T_co]):
    """One request, ready to send; ``T_co`` is what a success answer decodes to (covariant, so that a
    ``Call[JobList]`` is a ``Call[Page[Job]]`` for the clients' page following)."""

    operation: Operation
    path: str
    params: dict[str, str | list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None


JobRef = Job | str
"""A job, or its id. Given a ``Job``, conditional calls send ``If-Match`` with the version it holds."""


def _path(op: Operation, **ids: str) -> str:
    """The operation's path with its ``{job_id}``/``{run_id}`` filled in, each id one path segment whatever it holds."""
    return op.path.format_map({name: quote(value, safe="") for name, value in ids.items()})


def _job_id(job: JobRef) -> str:
    return job.id if isinstance(job, Job) else job


def _if_match(job: JobRef, version: int | None) -> dict[str, str]:
    """``If-Match`` from an explicit version, else from the ``Job`` the caller holds; none for a bare id."""
    if version is None and isinstance(job, Job):
        version = job.version
    return {} if version is None else {IF_MATCH: f'"{version}"'}


def _json(body: msgspec.Struct) -> bytes:
    return _ENCODER.encode(body)


def _query(**values: object) -> dict[str, str | list[str]]:
    return {k: str(v) for k, v in values.items() if v is not None}


def create_job(job: JobCreate, idempotency_key: str | None) -> Call[Job]:
    """A generated key makes the client's own retries safe; pass one to make the caller's retries safe too."""
    return Call(CREATE_JOB, CREATE_JOB.path, {}, {IDEMPOTENCY_KEY: idempotency_key or str(uuid.uuid4())}, _json(job))


class JobFilters(TypedDict, total=False):
    """The filters of a jobs listing (``list_jobs``, ``iter_jobs``): a job is listed when it matches every
    filter given; one left out or None does not filter."""

    status: JobStatus | str | None
    """Only jobs in this status."""
    tag: str | None
    """Only jobs carrying this tag."""
    name: str | None
    """Only jobs whose name starts with this."""
    metadata: Mapping[str, str] | None
    """Only jobs whose metadata holds every one of these pairs (a key holding ``:`` raises ValueError, as
    :func:`metadata_filter` says)."""


class RunFilters(TypedDict, total=False):
    """Which of the tenant's runs (deleted jobs' too) a call takes: those matching every filter given; one
    left out or None does not filter. ``retry_runs`` takes the failed ones; ``list_tenant_runs`` adds
    ``status`` (:class:`RunListFilters`)."""

    job: JobRef | None
    """Only this job's runs."""
    trigger: RunTrigger | str | None
    """Only runs fired this way."""
    scheduled_from: datetime | None
    """Only runs scheduled at or after this instant."""
    scheduled_to: datetime | None
    """Only runs scheduled before this instant."""


class RunListFilters(RunFilters, total=False):
    """The filters of the tenant's runs listing (``list_tenant_runs``): :class:`RunFilters` and a status."""

    status: RunStatus | str | None
    """Only runs in this status."""


def _known_filters(filters: Mapping[str, object], names: frozenset[str]) -> None:
    """``**filters`` takes any keyword at run time: a misspelt filter raises TypeError, as an unknown keyword
    argument does, rather than silently taking more jobs or runs than the caller meant."""
    unknown = sorted(filters.keys() - names)
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r} (the filters: {', '.join(sorted(names))})")


def list_jobs(filters: JobFilters, limit: int | None, cursor: str | None) -> Call[JobList]:
    _known_filters(filters, JobFilters.__optional_keys__)
    status = filters.get("status")
    params = _query(
        status=JobStatus(status).value if status is not None else None,
        tag=filters.get("tag"),
        name=filters.get("name"),
        limit=limit,
        cursor=cursor,
    )
    metadata = filters.get("metadata")
    if metadata:
        params["metadata"] = metadata_filter(metadata)
    return Call(LIST_JOBS, LIST_JOBS.path, params)


def metadata_filter(metadata: Mapping[str, str]) -> list[str]:
    """``{"team": "a"}`` → ``["team:a"]``, the ``metadata`` query of ``GET /jobs``.

    The server ends the key at the first colon (so a value may hold colons), so a key holding one cannot be
    asked for: ValueError rather than a query that silently means another key. (Metadata may still hold
    such keys, and a bulk action's JSON selector matches them.)
    """
    for key in metadata:
        if ":" in key:
            raise ValueError(f"metadata: the key {key!r} holds ':', which a GET /jobs filter cannot express")
    return [f"{key}:{value}" for key, value in metadata.items()]


def bulk_action(op: Operation, selector: JobSelector, limit: int | None) -> Call[BulkJobResult]:
    """``POST /jobs/bulk/{pause,resume,delete}``: the jobs the selector matches (ValueError when it is empty)."""
    body = BulkJobAction(selector=selector) if limit is None else BulkJobAction(selector=selector, limit=limit)
    return Call(op, op.path, {}, {}, _json(body))


def get_job(job_id: str) -> Call[Job]:
    return Call(GET_JOB, _path(GET_JOB, job_id=job_id))


def update_job(job: JobRef, changes: JobPatch, version: int | None) -> Call[Job]:
    return Call(UPDATE_JOB, _path(UPDATE_JOB, job_id=_job_id(job)), {}, _if_match(job, version), _json(changes))


def delete_job(job: JobRef, version: int | None) -> Call[None]:
    return Call(DELETE_JOB, _path(DELETE_JOB, job_id=_job_id(job)), {}, _if_match(job, version))


def pause_job(job: JobRef, version: int | None) -> Call[Job]:
    return Call(PAUSE_JOB, _path(PAUSE_JOB, job_id=_job_id(job)), {}, _if_match(job, version))


def resume_job(job: JobRef, version: int | None) -> Call[Job]:
    return Call(RESUME_JOB, _path(RESUME_JOB, job_id=_job_id(job)), {}, _if_match(job, version))


def run_job_now(job: JobRef) -> Call[RunAccepted]:
    return Call(RUN_JOB_NOW, _path(RUN_JOB_NOW, job_id=_job_id(job)))


def backfill_job(job: JobRef, first: datetime, last: datetime) -> Call[BackfillAccepted]:
    # Encoded as is rather than through ``BackfillRequest``, whose checks would raise here: the service
    # answers a bad range with a problem naming the field, as for every other body.
    body = _ENCODER.encode({"from": first, "to": last})
    return Call(BACKFILL_JOB, _path(BACKFILL_JOB, job_id=_job_id(job)), {}, {}, body)


def list_job_runs(job: JobRef, limit: int | None, cursor: str | None) -> Call[RunList]:
    return Call(LIST_JOB_RUNS, _path(LIST_JOB_RUNS, job_id=_job_id(job)), _query(limit=limit, cursor=cursor))


def list_tenant_runs(filters: RunListFilters, limit: int | None, cursor: str | None) -> Call[RunList]:
    _known_filters(filters, RunListFilters.__optional_keys__)
    status, job, trigger = filters.get("status"), filters.get("job"), filters.get("trigger")
    params = _query(
        status=RunStatus(status).value if status is not None else None,
        job=_job_id(job) if job is not None else None,
        trigger=RunTrigger(trigger).value if trigger is not None else None,
        limit=limit,
        cursor=cursor,
    )
    for name, instant in (("from", filters.get("scheduled_from")), ("to", filters.get("scheduled_to"))):
        if instant is not None:
            params[name] = instant.isoformat()
    return Call(LIST_RUNS, LIST_RUNS.path, params)


def get_run(run_id: str) -> Call[Run]:
    return Call(GET_RUN, _path(GET_RUN, run_id=run_id))


def retry_run(run_id: str) -> Call[RunAccepted]:
    return Call(RETRY_RUN, _path(RETRY_RUN, run_id=run_id))


def retry_runs(
    filters: RunFilters, limit: int, cursor: str | None, idempotency_key: str | None
) -> Call[RunRetryReport]:
    """As :func:`create_job`: a generated key makes the client's own retries answer, not retry again."""
    _known_filters(filters, RunFilters.__optional_keys__)
    job, trigger = filters.get("job"), filters.get("trigger")
    selection = RunRetryFilter(
        job=_job_id(job) if job is not None else None,
        trigger=RunTrigger(trigger) if trigger is not None else None,
        scheduled_from=filters.get("scheduled_from"),
        scheduled_to=filters.get("scheduled_to"),
        limit=limit,
        cursor=cursor,
    )
    headers = {IDEMPOTENCY_KEY: idempotency_key or str(uuid.uuid4())}
    return Call(RETRY_RUNS, RETRY_RUNS.path, {}, headers, _json(selection))


def preview_schedule(schedule: Schedule, after: datetime | None, count: int) -> Call[PreviewResponse]:
    body = PreviewRequest(schedule=schedule, after=after, count=count)
    return Call(PREVIEW_SCHEDULE, PREVIEW_SCHEDULE.path, {}, {}, _json(body))


def get_tenant_settings() -> Call[TenantSettings]:
    return Call(GET_TENANT_SETTINGS, GET_TENANT_SETTINGS.path)


def update_tenant_settings(changes: TenantSettingsPatch) -> Call[TenantSettings]:
    return Call(UPDATE_TENANT_SETTINGS, UPDATE_TENANT_SETTINGS.path, {}, {}, _json(changes))


def request_headers(call: Call[Any], api_key: str | None) -> dict[str, str]:
    headers = dict(call.headers)
    if call.content is not None:
        headers["Content-Type"] = "application/json"
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def read(call: Call[T], status: int, headers: Mapping[str, str], content: bytes) -> T:
    """The decoded success body, or the problem raised as its typed exception."""
    if status == call.operation.success:
        response = call.operation.response
        return None if response is None else _DECODERS[response].decode(content)  # type: ignore[return-value]
    raise problem_error(status, headers, content)


class Page(Protocol[Item_co]):
    """One page of a list answer (``JobList``, ``RunList``)."""

    @property
    def items(self) -> Sequence[Item_co]: ...

    @property
    def next_cursor(self) -> str | None: ...


PageT = TypeVar("PageT", bound=Page[Any])


def next_page(call: Call[PageT], page: PageT) -> Call[PageT] | None:
    """The same list call for the page after ``page`` (its ``nextCursor``), or None when ``page`` was the last."""
    if page.next_cursor is None:
        return None
    return replace(call, params={**call.params, "cursor": page.next_cursor})


def problem_error(status: int, headers: Mapping[str, str], content: bytes) -> ApiError:
    try:
        problem = _PROBLEM.decode(content)
    except msgspec.DecodeError:
        # Not from the service itself (a proxy, a load balancer): keep what it said, shortened.
        text = content[:300].decode("utf-8", "replace").strip()
        problem = Problem("about:blank", f"HTTP {status}", status, text or None)
    return error_for(problem, headers.get(REQUEST_ID), retry_after_seconds(headers))
