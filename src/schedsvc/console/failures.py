"""The failures page: the tenant's failed and missed runs, newest first, each with a Retry button that
retries through :class:`~schedsvc.job_service.RunService`, as ``POST /runs/{runId}/retry`` does."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from schedsvc.console.pages import PAGE_SIZE, ConsoleRequest, JobConsole, flash, job_names, page, tenant_of
from schedsvc.console.presenting import lateness_seconds
from schedsvc.domain.errors import InvalidCursorError, RunNotFoundError, RunRetryRefusedError
from schedsvc.domain.models import RunStatus
from schedsvc.domain.runs import RunSelection
from schedsvc.job_service import RunService

_FAILURES = RunSelection(statuses=(RunStatus.FAILED, RunStatus.MISSED))
"""What the failures page lists: runs that failed for good and fires recorded missed."""


class FailuresController(Controller):
    path = "/"

    @get("/failures", name="console:failures")
    async def failures_page(
        self, console: NamedDependency[JobConsole], before: FromQuery[str | None] = None
    ) -> Template:
        tenant, runs = console.tenant, console.runs
        try:
            failed, older = await runs.list_for_tenant(tenant, _FAILURES, limit=PAGE_SIZE, cursor=before)
        except InvalidCursorError:  # a hand-edited link: start from the newest
            failed, older = await runs.list_for_tenant(tenant, _FAILURES, limit=PAGE_SIZE)
        names = await job_names(console.jobs, tenant, {run.job_id for run in failed})
        rows = [(run, lateness_seconds(run)) for run in failed]
        return page(console.request, "failures.html", failed=rows, names=names, older=older, first_page=not before)

    @post("/runs/{run_id:str}/retry", status_code=303)
    async def retry_run(
        self,
        request: ConsoleRequest,
        run_service: NamedDependency[RunService],
        run_id: FromPath[str],
    ) -> Redirect:
        try:
            run = await run_service.retry(tenant_of(request), run_id)
        except RunNotFoundError:
            flash(request, "Not retried: no such run.", "error")
            return Redirect("/console/failures", status_code=303)
        except RunRetryRefusedError as exc:  # not failed, retried too often, its job deleted
            flash(request, f"Not retried: {exc}.", "error")
            return Redirect("/console/failures", status_code=303)
        # The job page reloads itself while the reopened run is queued or running.
        flash(request, "Retry queued: the run's new attempt shows in the run history below within seconds.")
        return Redirect(f"/console/jobs/{run.job_id}", status_code=303)
