"""``/runs``: the tenant's run history across its jobs, including jobs since deleted (until retention), and
retries on demand of failed runs (dead letters), one by one or by filter (a thin adapter over
:class:`~schedsvc.job_service.RunService`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, QueryParameter

from schedsvc.api import openapi
from schedsvc.api.errors import problem_responses
from schedsvc.api.jobs import Cursor
from schedsvc.domain.errors import InvalidRequestError, RunNotFoundError
from schedsvc.domain.models import Run, RunStatus, RunTrigger
from schedsvc.domain.runs import RunSelection
from schedsvc.domain.wire import RunAccepted, RunList, RunRetryFilter, RunRetryReport
from schedsvc.job_service import RunService
from schedsvc.store.base import RunHistory

MAX_STATUSES = 6


def _aware(value: datetime | None, field: str, problems: list[tuple[str, str]]) -> None:
    if value is not None and value.tzinfo is None:
        problems.append((field, "must name its UTC offset (e.g. 2026-11-29T06:00:00Z)"))


class RunsController(Controller):
    path = "/runs"
    tags = ["runs"]

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
        statuses = tuple(dict.fromkeys(status or ()))
        selection = RunSelection(
            statuses, job_id=job, trigger=trigger, scheduled_from=scheduled_from, scheduled_to=scheduled_to
        )
        items, next_cursor = await runs.list_for_tenant(request.user, selection, limit=limit, cursor=cursor)
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
            raise RunNotFoundError(run_id)
        return run

    @post(
        "/retry",
        summary="Retry the tenant's failed runs matching a filter, a bounded batch at a time",
        operation_id="retryRuns",
        status_code=200,
        responses={
            **problem_responses(409, 422),
            200: openapi.success(
                RunRetryReport, "What matched, what was queued, what was refused and why", openapi.RETRY_REPORT
            ),
        },
    )
    async def retry_runs(
        self,
        request: Request[str, str, State],
        run_service: NamedDependency[RunService],
        data: Annotated[RunRetryFilter, openapi.body(openapi.RETRY_FILTER)],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key", max_length=255)] = None,
    ) -> Response[RunRetryReport]:
        report, replayed = await run_service.retry_matching(request.user, data, idempotency_key=idempotency_key)
        return Response(report, headers={"Idempotent-Replayed": "true"} if replayed else None)

    @post(
        "/{run_id:str}/retry",
        summary="Retry a failed run: one more attempt, same run id and idempotency key",
        operation_id="retryRun",
        status_code=202,
        responses={**problem_responses(404, 409), 202: openapi.success(RunAccepted, "Queued")},
    )
    async def retry_run(
        self, request: Request[str, str, State], run_service: NamedDependency[RunService], run_id: FromPath[str]
    ) -> RunAccepted:
        reopened = await run_service.retry(request.user, run_id)
        return RunAccepted(run_id, reopened.job_id, reopened.scheduled_at, reopened.trigger)
