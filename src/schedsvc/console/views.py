"""The console's job pages and actions (signing in: ``access.py``; the failures page: ``failures.py``).

Every handler takes its tenant from the session (``request.user`` is not used: the API-key middleware skips
the console). What an action does is the job or run service's (:class:`~schedsvc.job_service.JobService`,
:class:`~schedsvc.job_service.RunService`), which ``/jobs`` and ``/runs`` use too, so the two cannot drift
apart."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlencode, urlsplit

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from schedsvc.console.forms import (
    HTTP_METHODS,
    SCHEDULE_KINDS,
    TARGET_KINDS,
    FormErrors,
    decode_create,
    decode_patch,
    form_values,
)
from schedsvc.console.pages import PAGE_SIZE, ConsoleRequest, JobConsole, flash, page, read_form
from schedsvc.console.presenting import (
    definition_json,
    lateness_seconds,
    next_fires,
    notification_shown,
    run_chart,
    schedule_in_words,
)
from schedsvc.domain.errors import (
    DuplicateJobNameError,
    InvalidRequestError,
    InvalidScheduleError,
    JobActionRefusedError,
    VersionConflictError,
)
from schedsvc.domain.models import Job, JobStatus, Run, RunStatus
from schedsvc.domain.time import utcnow
from schedsvc.domain.wire import MAX_BULK_JOBS, JobSelector
from schedsvc.timing import to_ms

log = logging.getLogger(__name__)
RUNS_SHOWN = 50
# The jobs list's per-job history: the last runs, as a small chart.
HISTORY_SHOWN, HISTORY_WIDTH, HISTORY_HEIGHT = 10, 80, 20
WATCH_SECONDS = 30
"""After "Run now" the job page reloads itself (a meta refresh, no script) until the run is final, this long
at most."""
_STATUSES = [s.value for s in JobStatus]


def _version(form: dict[str, Any]) -> int:
    try:
        return int(form.get("version", ""))
    except ValueError:
        raise HTTPException(status_code=400, detail="the form lacks the job's version; reload the page") from None


def _domain_field_error(exc: Exception) -> FormErrors:
    if isinstance(exc, DuplicateJobNameError):
        return FormErrors({"name": str(exc)})
    if isinstance(exc, InvalidRequestError):  # the API's checks, every offending field at once
        return FormErrors(dict(exc.problems))
    field = getattr(exc, "field", "")
    return FormErrors({field: str(exc)})


class JobPagesController(Controller):
    path = "/"

    # -- jobs -------------------------------------------------------------------------------------

    @get("/jobs", name="console:jobs")
    async def jobs_page(
        self,
        console: NamedDependency[JobConsole],
        status: FromQuery[str | None] = None,
        tag: FromQuery[str | None] = None,
        name: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> Template | Redirect:
        request = console.request
        filters = {"status": status or "", "tag": (tag or "").strip()[:64], "name": (name or "").strip()[:200]}
        job_status = JobStatus(status) if status in _STATUSES else None
        try:
            selector = JobSelector(status=job_status, tag=filters["tag"] or None, name_prefix=filters["name"] or None)
            listing = await console.jobs.list(console.tenant, selector, limit=PAGE_SIZE, cursor=cursor or None)
        except ValueError:  # a cursor this service did not make (or a tampered link)
            flash(request, "That page link is not valid any more; showing the first page.", "error")
            query = urlencode({k: v for k, v in filters.items() if v})
            return Redirect(f"/console/jobs?{query}" if query else "/console/jobs", status_code=303)
        # A small outcome/lateness history per job: one indexed read per listed job, run side by side.
        recent = await asyncio.gather(
            *(console.runs.list_for_job(console.tenant, job.id, HISTORY_SHOWN, None) for job in listing.items)
        )
        rows = [
            (job, schedule_in_words(job.schedule), run_chart(history, HISTORY_WIDTH, HISTORY_HEIGHT))
            for job, (history, _) in zip(listing.items, recent, strict=True)
        ]
        return page(
            request,
            "jobs.html",
            rows=rows,
            next_cursor=listing.next_cursor,
            filters=filters,
            filtered=any(filters.values()),
            statuses=_STATUSES,
            first_page=not cursor,
            # The bulk form starts from the list's filters: what is listed is what an action would select.
            bulk={
                "selector.tag": filters["tag"],
                "selector.namePrefix": filters["name"],
                "selector.status": filters["status"] if job_status is not None else "",
                "limit": str(MAX_BULK_JOBS),
            },
        )

    @get("/jobs/new", name="console:new-job")
    async def new_job_page(self, request: ConsoleRequest) -> Template:
        return self._edit_page(request, None, form_values(None), {})

    @post("/jobs", status_code=303)
    async def create_job(self, console: NamedDependency[JobConsole]) -> Template | Redirect:
        request = console.request
        form = await read_form(request)
        try:
            job, _ = await console.jobs.create(console.tenant, decode_create(form))
        except FormErrors as exc:
            return self._edit_page(request, None, form, exc.errors, 422)
        except (InvalidRequestError, InvalidScheduleError, DuplicateJobNameError) as exc:
            return self._edit_page(request, None, form, _domain_field_error(exc).errors, 422)
        flash(request, f"Created {job.name}.")
        return Redirect(f"/console/jobs/{job.id}", status_code=303)

    @get("/jobs/{job_id:str}", name="console:job")
    async def job_page(self, console: NamedDependency[JobConsole], job_id: FromPath[str]) -> Template:
        job = await console.jobs.get(console.tenant, job_id)
        return await self._job_page(console, job, form_values(job), {})

    @post("/jobs/{job_id:str}", status_code=303)
    async def update_job(self, console: NamedDependency[JobConsole], job_id: FromPath[str]) -> Template | Redirect:
        request = console.request
        form = await read_form(request)
        version = _version(form)
        job = await console.jobs.get(console.tenant, job_id)
        try:
            if job.version != version:
                raise VersionConflictError(job_id)
            await console.jobs.update(console.tenant, job_id, decode_patch(form, job), version)
        except FormErrors as exc:
            return await self._job_page(console, job, form, exc.errors, 422)
        except (InvalidRequestError, InvalidScheduleError, DuplicateJobNameError) as exc:
            return await self._job_page(console, job, form, _domain_field_error(exc).errors, 422)
        except VersionConflictError:
            flash(
                request, "Someone changed this job while you edited it: review it and apply your change again.", "error"
            )
            return Redirect(f"/console/jobs/{job_id}", status_code=303)
        flash(request, "Saved.")
        return Redirect(f"/console/jobs/{job_id}", status_code=303)

    @post("/jobs/{job_id:str}/pause", status_code=303)
    async def pause_job(self, console: NamedDependency[JobConsole], job_id: FromPath[str]) -> Redirect:
        return await self._state_action(console, job_id, "pause")

    @post("/jobs/{job_id:str}/resume", status_code=303)
    async def resume_job(self, console: NamedDependency[JobConsole], job_id: FromPath[str]) -> Redirect:
        return await self._state_action(console, job_id, "resume")

    @post("/jobs/{job_id:str}/run", status_code=303)
    async def run_job(self, console: NamedDependency[JobConsole], job_id: FromPath[str]) -> Redirect:
        request = console.request
        queued = await console.jobs.run_now(console.tenant, job_id)
        queued_ms = to_ms(queued.scheduled_at)
        flash(request, "Run queued: it appears in the run history below within a few seconds (the page refreshes).")
        return Redirect(f"/console/jobs/{job_id}?awaiting={queued_ms}", status_code=303)

    @get("/jobs/{job_id:str}/delete", name="console:confirm-delete")
    async def confirm_delete(self, console: NamedDependency[JobConsole], job_id: FromPath[str]) -> Template:
        job = await console.jobs.get(console.tenant, job_id)
        return page(console.request, "delete.html", job=job)

    @post("/jobs/{job_id:str}/delete", status_code=303)
    async def delete_job(self, console: NamedDependency[JobConsole], job_id: FromPath[str]) -> Redirect:
        request = console.request
        form = await read_form(request)
        try:
            await console.jobs.delete(console.tenant, job_id, _version(form))
        except VersionConflictError:
            flash(request, "The job changed since you opened it; it was not deleted. Review it first.", "error")
            return Redirect(f"/console/jobs/{job_id}", status_code=303)
        flash(request, "Deleted.")
        return Redirect("/console/jobs", status_code=303)

    # -- helpers ----------------------------------------------------------------------------------

    async def _state_action(self, console: JobConsole, job_id: str, action: str) -> Redirect:
        request, job_service, tenant = console.request, console.jobs, console.tenant
        version = _version(await read_form(request))
        try:
            act = job_service.pause if action == "pause" else job_service.resume
            job = await act(tenant, job_id, version)
        except JobActionRefusedError as exc:
            flash(request, f"{exc}.", "error")
        except VersionConflictError:
            # The API answers 412 for a stale version even when nothing was left to do; the console, as
            # before it shared the API's use cases, says what the job is when that is what was asked.
            job = await job_service.get(tenant, job_id)
            if job.status == (JobStatus.PAUSED if action == "pause" else JobStatus.ACTIVE):
                flash(request, f"{job.name} is {job.status.value}.")
            elif job.status == JobStatus.COMPLETED:
                flash(request, f"a completed job cannot be {action}d.", "error")
            else:
                flash(
                    request, "The job changed since the page was shown; nothing was done. Review it and retry.", "error"
                )
        else:
            flash(request, f"{job.name} is {job.status.value}.")
        # Back to the list page (same filters and page) when the button was on it; only that path, so the
        # Referer can never send the browser elsewhere.
        came_from = urlsplit(str(request.headers.get("referer") or ""))
        if came_from.path == "/console/jobs":
            return Redirect(f"/console/jobs?{came_from.query}" if came_from.query else "/console/jobs", status_code=303)
        return Redirect(f"/console/jobs/{job_id}", status_code=303)

    def _edit_page(
        self, request: ConsoleRequest, job: Any, values: dict[str, Any], errors: dict[str, str], status_code: int = 200
    ) -> Template:
        return page(request, "new_job.html", status_code, **_form_context(values, errors))

    async def _job_page(
        self, console: JobConsole, job: Job, values: dict[str, Any], errors: dict[str, str], status_code: int = 200
    ) -> Template:
        history, _ = await console.runs.list_for_job(console.tenant, job.id, RUNS_SHOWN, None)
        # The tenant's default matters only to a job without a target of its own: read it only then.
        tenant_default = None if job.notify is not None else (await console.tenants.preferences(console.tenant)).notify
        now = utcnow()
        fires, fires_error = [], None
        if job.status == JobStatus.ACTIVE or job.status == JobStatus.PAUSED:
            try:
                fires = next_fires(job.schedule, now)
            except ValueError as exc:
                fires_error = str(exc)
        return page(
            console.request,
            "job.html",
            status_code,
            job=job,
            words=schedule_in_words(job.schedule),
            fires=fires,
            fires_error=fires_error,
            runs=[(r, lateness_seconds(r)) for r in history],
            chart=run_chart(history),
            definition=definition_json(job),
            notification=notification_shown(job.notify, tenant_default),
            refresh=_still_waiting(console.request, history),
            **_form_context(values, errors),
        )


def _still_waiting(request: ConsoleRequest, history: list[Run]) -> bool:
    """Whether the job page reloads itself: while a run is pending, or the run just queued is not final."""
    if any(r.status in (RunStatus.QUEUED, RunStatus.RUNNING) for r in history):
        return True
    try:
        awaiting = int(request.query_params.get("awaiting", ""))
    except ValueError:
        return False
    if to_ms(utcnow()) - awaiting > WATCH_SECONDS * 1000:
        return False
    return not any(to_ms(r.scheduled_at) == awaiting for r in history)


def _form_context(values: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    return {
        "values": {k: v for k, v in values.items() if isinstance(v, str)},
        "errors": errors,
        "schedule_kinds": SCHEDULE_KINDS,
        "target_kinds": TARGET_KINDS,
        "methods": HTTP_METHODS,
    }
