"""``/runs``: the tenant's run history across its jobs, including jobs since deleted (until retention), and
retries on demand of failed runs (dead letters), one by one or by filter."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import FromPath, HeaderParameter, QueryParameter

from schedsvc.api import openapi
from schedsvc.api.errors import problem_responses
from schedsvc.api.jobs import Cursor
from schedsvc.domain import (
    InvalidCursorError,
    InvalidRequestError,
    JobNotFoundError,
    Run,
    RunMessage,
    RunStatus,
    RunTrigger,
)
from schedsvc.domain.time import utcnow
from schedsvc.domain.wire import (
    RetryRefusalReason,
    RunAccepted,
    RunList,
    RunRetryFilter,
    RunRetryRefusal,
    RunRetryReport,
)
from schedsvc.store.base import JobRepository, ReplyStore, RunHistory, RunPublisher
from schedsvc.timing import to_ms

MAX_STATUSES = 6
MAX_RETRIES_ON_DEMAND = 5
"""Retries on demand per run: each adds one attempt (the attempt history holds them all)."""
_REFUSALS = {
    "not_failed": "only a failed run can be retried",
    "exhausted": f"the run was already retried {MAX_RETRIES_ON_DEMAND} times",
    "changed": "the run changed meanwhile (retried by another request?)",
    "job_deleted": "the run's job was deleted",
}
_RETRY_RUNS = "retryRuns"
"""The operation's name among the answers kept under an Idempotency-Key."""
_encode_report = msgspec.json.Encoder().encode
_decode_report = msgspec.json.Decoder(RunRetryReport).decode


def _aware(value: datetime | None, field: str, problems: list[tuple[str, str]]) -> None:
    if value is not None and value.tzinfo is None:
        problems.append((field, "must name its UTC offset (e.g. 2026-11-29T06:00:00Z)"))


class RunsController(Controller):
    path = "/runs"
    tags = ["runs"]
    security = openapi.REQUIRES_KEY

    @get(
        "/",
        summary="List the tenant's runs across its jobs, newest first",
        operation_id="listRuns",
        responses={**problem_responses(), 200: openapi.success(RunList, "A page of runs", openapi.RUN_PAGE)},
    )
    async def list_runs(
        self,
        request: Request[str, str, State],
        runs: NamedDependency[RunHistory],
        status: Annotated[
            list[RunStatus] | None,
            QueryParameter(description="only runs in these statuses (repeat the parameter for several)"),
        ] = None,
        job: Annotated[str | None, QueryParameter(max_length=64, description="only this job's runs")] = None,
        trigger: Annotated[RunTrigger | None, QueryParameter(description="only runs fired this way")] = None,
        scheduled_from: Annotated[
            datetime | None, QueryParameter(name="from", description="scheduled at or after this instant")
        ] = None,
        scheduled_to: Annotated[
            datetime | None, QueryParameter(name="to", description="scheduled before this instant")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: Cursor = None,
    ) -> RunList:
        problems: list[tuple[str, str]] = []
        _aware(scheduled_from, "from", problems)
        _aware(scheduled_to, "to", problems)
        if status is not None and len(status) > MAX_STATUSES:
            problems.append(("status", f"at most {MAX_STATUSES} values"))
        if problems:
            raise InvalidRequestError(problems, status=400)
        items, next_cursor = await runs.list_for_tenant(
            request.user,
            limit=limit,
            cursor=cursor,
            statuses=tuple(dict.fromkeys(status or ())),
            job_id=job,
            trigger=trigger,
            scheduled_from=scheduled_from,
            scheduled_to=scheduled_to,
        )
        return RunList(items, next_cursor)

    @get(
        "/{run_id:str}",
        summary="Get a run with every attempt",
        operation_id="getRun",
        responses={**problem_responses(404), 200: openapi.success(Run, "The run")},
    )
    async def get_run(
        self, request: Request[str, str, State], runs: NamedDependency[RunHistory], run_id: FromPath[str]
    ) -> Run:
        run = await runs.get(request.user, run_id)
        if run is None:  # another tenant's run answers exactly as a missing one
            raise NotFoundException(detail="no such run")
        return run

    @post(
        "/retry",
        summary="Retry the tenant's failed runs matching a filter, a bounded batch at a time",
        operation_id="retryRuns",
        status_code=200,
        responses={
            **problem_responses(422),
            200: openapi.success(
                RunRetryReport, "What matched, what was queued, what was refused and why", openapi.RETRY_REPORT
            ),
        },
    )
    async def retry_runs(
        self,
        request: Request[str, str, State],
        runs: NamedDependency[RunHistory],
        jobs: NamedDependency[JobRepository],
        run_queue: NamedDependency[RunPublisher],
        replies: NamedDependency[ReplyStore],
        data: Annotated[RunRetryFilter, openapi.body(openapi.RETRY_FILTER)],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key", max_length=255)] = None,
    ) -> Response[RunRetryReport]:
        tenant = request.user
        if idempotency_key is None:
            return Response(await retry_failed_runs(tenant, data, runs, jobs, run_queue))
        request_hash = hashlib.sha256(msgspec.json.encode(data)).hexdigest()
        kept = await replies.claim(tenant, _RETRY_RUNS, idempotency_key, request_hash, utcnow())
        if kept is not None:
            return Response(_decode_report(kept), headers={"Idempotent-Replayed": "true"})
        try:
            report = await retry_failed_runs(tenant, data, runs, jobs, run_queue)
        except Exception:
            await replies.release(tenant, _RETRY_RUNS, idempotency_key)
            raise
        await replies.keep(tenant, _RETRY_RUNS, idempotency_key, _encode_report(report))
        return Response(report)

    @post(
        "/{run_id:str}/retry",
        summary="Retry a failed run: one more attempt, same run id and idempotency key",
        operation_id="retryRun",
        status_code=202,
        responses={**problem_responses(404, 409), 202: openapi.success(RunAccepted, "Queued")},
    )
    async def retry_run(
        self,
        request: Request[str, str, State],
        runs: NamedDependency[RunHistory],
        jobs: NamedDependency[JobRepository],
        run_queue: NamedDependency[RunPublisher],
        run_id: FromPath[str],
    ) -> RunAccepted:
        reopened = await retry_failed_run(request.user, run_id, runs, jobs, run_queue)
        return RunAccepted(run_id, reopened.job_id, reopened.scheduled_at, reopened.trigger)


async def retry_failed_run(
    tenant: str, run_id: str, runs: RunHistory, jobs: JobRepository, run_queue: RunPublisher
) -> Run:
    """One more attempt of a failed run, same run id and idempotency key (``POST /runs/{id}/retry`` and the
    console's Retry button): 404 for no such run of the tenant, 409 when it cannot be retried."""
    existing = await runs.get(tenant, run_id)
    if existing is None:
        raise NotFoundException(detail="no such run")
    if not await _job_exists(jobs, tenant, existing.job_id):  # the attempt needs the job's target
        raise ClientException(_REFUSALS["job_deleted"], status_code=409)
    now = utcnow()
    reopened = await runs.reopen_for_retry(tenant, run_id, now, MAX_RETRIES_ON_DEMAND)
    if isinstance(reopened, str):
        if reopened == "missing":
            raise NotFoundException(detail="no such run")
        raise ClientException(_REFUSALS[reopened], status_code=409)
    await _publish_retries(tenant, [reopened], now, runs, jobs, run_queue)
    return reopened


async def retry_failed_runs(
    tenant: str, selection: RunRetryFilter, runs: RunHistory, jobs: JobRepository, run_queue: RunPublisher
) -> RunRetryReport:
    """Retry up to ``selection.limit`` of the tenant's failed runs matching the filter, newest first, as
    :func:`retry_failed_run` retries one (``POST /runs/retry``).

    Every matched run is either reopened or refused with its reason; the reopened ones are published in one
    batch, and if that publish fails every one of them is failed again (the client gets the 503, nothing
    was retried). A run reopened by this request is ``queued``, no longer ``failed``, so a repeat of the
    same request does not match it again while its attempt is pending.
    """
    try:
        matched, next_cursor = await runs.list_for_tenant(
            tenant,
            limit=selection.limit,
            cursor=selection.cursor,
            statuses=(RunStatus.FAILED,),
            job_id=selection.job,
            trigger=selection.trigger,
            scheduled_from=selection.scheduled_from,
            scheduled_to=selection.scheduled_to,
        )
    except InvalidCursorError as exc:  # a body field: 422, as every body problem is
        raise InvalidRequestError([("cursor", str(exc))]) from None
    now = utcnow()
    job_exists: dict[str, bool] = {}
    reopened: list[Run] = []
    refusals: list[RunRetryRefusal] = []
    for run in matched:
        if run.job_id not in job_exists:
            job_exists[run.job_id] = await _job_exists(jobs, tenant, run.job_id)
        outcome = (
            await runs.reopen_for_retry(tenant, run.id, now, MAX_RETRIES_ON_DEMAND)
            if job_exists[run.job_id]
            else "job_deleted"
        )
        if isinstance(outcome, Run):
            reopened.append(outcome)
        else:
            # missing or not failed since the listing: another request (or retention) got there first
            reason: RetryRefusalReason = (
                "exhausted" if outcome == "exhausted" else "job_deleted" if outcome == "job_deleted" else "changed"
            )
            refusals.append(RunRetryRefusal(run.id, reason, _REFUSALS[reason]))
    await _publish_retries(tenant, reopened, now, runs, jobs, run_queue)
    return RunRetryReport(
        matched=len(matched),
        retried=len(reopened),
        refused=len(refusals),
        retried_runs=[r.id for r in reopened],
        refusals=refusals,
        next_cursor=next_cursor,
    )


async def _job_exists(jobs: JobRepository, tenant: str, job_id: str) -> bool:
    try:
        await jobs.get(tenant, job_id)
    except JobNotFoundError:
        return False
    return True


async def _publish_retries(
    tenant: str, reopened: list[Run], now: datetime, runs: RunHistory, jobs: JobRepository, run_queue: RunPublisher
) -> None:
    """Hand the reopened runs to execution; if the publish fails, fail them again and raise."""
    if not reopened:
        return
    messages = [RunMessage(r.job_id, tenant, to_ms(r.scheduled_at), to_ms(now), r.trigger.value, 0) for r in reopened]
    try:
        # Each retry has its own message id: the run's own id may still be in the stream's duplicate window,
        # and the retry count in it makes a re-publish of the same retry a duplicate.
        await run_queue.publish_runs(
            messages,
            [jobs.partition_of(r.job_id) for r in reopened],
            [f"{r.id}:retry{r.retries_on_demand}" for r in reopened],
        )
    except Exception:
        failed_at = utcnow()
        for r in reopened:
            await runs.revert_retry(r.id, r.retries_on_demand, failed_at)
        raise
