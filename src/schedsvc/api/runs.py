"""``/runs``: the tenant's run history across its jobs, including jobs since deleted (until retention)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import FromPath, QueryParameter

from schedsvc.api import openapi
from schedsvc.api.errors import problem_responses
from schedsvc.api.jobs import Cursor
from schedsvc.domain import InvalidRequestError, JobNotFoundError, Run, RunMessage, RunStatus, RunTrigger
from schedsvc.domain.time import utcnow
from schedsvc.domain.wire import RunAccepted, RunList
from schedsvc.store.base import JobRepository, RunHistory, RunPublisher
from schedsvc.timing import to_ms

MAX_STATUSES = 6
MAX_RETRIES_ON_DEMAND = 5
"""Retries on demand per run: each adds one attempt (the attempt history holds them all)."""
_REFUSALS = {
    "not_failed": "only a failed run can be retried",
    "exhausted": f"the run was already retried {MAX_RETRIES_ON_DEMAND} times",
    "changed": "the run changed meanwhile (retried by another request?)",
}


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
    try:
        await jobs.get(tenant, existing.job_id)  # the attempt needs the job's target and policies
    except JobNotFoundError:
        raise ClientException("the run's job was deleted", status_code=409) from None
    now = utcnow()
    reopened = await runs.reopen_for_retry(tenant, run_id, now, MAX_RETRIES_ON_DEMAND)
    if isinstance(reopened, str):
        if reopened == "missing":
            raise NotFoundException(detail="no such run")
        raise ClientException(_REFUSALS[reopened], status_code=409)
    scheduled_ms = to_ms(reopened.scheduled_at)
    message = RunMessage(reopened.job_id, tenant, scheduled_ms, to_ms(now), reopened.trigger.value, 0)
    try:
        # Its own message id: the run's own id may still be in the stream's duplicate window.
        await run_queue.publish_runs(
            [message], [jobs.partition_of(reopened.job_id)], [f"{run_id}:retry{reopened.retries_on_demand}"]
        )
    except Exception:
        await runs.revert_retry(run_id, reopened.retries_on_demand, utcnow())
        raise
    return reopened
