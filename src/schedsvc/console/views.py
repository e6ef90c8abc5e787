"""The console's pages and actions. Every handler takes its tenant from the session (``request.user`` is
not used: the API-key middleware skips the console). What an action does is the job or run service's
(:class:`~schedsvc.job_service.JobService`, :class:`~schedsvc.job_service.RunService`), which ``/jobs`` and
``/runs`` use too, so the two cannot drift apart."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
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
from schedsvc.console.presenting import lateness_seconds, next_fires, run_chart, schedule_in_words
from schedsvc.console.session import CSRF_FIELD, end_session, start_session
from schedsvc.domain import (
    AuthenticationError,
    DuplicateJobNameError,
    InvalidCursorError,
    InvalidRequestError,
    InvalidScheduleError,
    InvalidTargetError,
    JobActionRefusedError,
    JobStatus,
    Run,
    RunNotFoundError,
    RunRetryRefusedError,
    RunStatus,
    VersionConflictError,
)
from schedsvc.domain.time import utcnow
from schedsvc.domain.wire import JobSelector
from schedsvc.job_service import JobService, RunService
from schedsvc.store.base import FailureCounter, RunHistory
from schedsvc.store.tenants import key_id_of
from schedsvc.timing import to_ms

log = logging.getLogger(__name__)
PAGE_SIZE = 25
RUNS_SHOWN = 50
# The jobs list's per-job history: the last runs, as a small chart.
HISTORY_SHOWN, HISTORY_WIDTH, HISTORY_HEIGHT = 10, 80, 20
WATCH_SECONDS = 30
"""After "Run now" the job page reloads itself (a meta refresh, no script) until the run is final, this long
at most."""
_STATUSES = [s.value for s in JobStatus]

ConsoleRequest = Request[Any, Any, State]


def tenant_of(request: ConsoleRequest) -> str:
    return str(request.session["tenant"])


def flash(request: ConsoleRequest, message: str, kind: str = "info") -> None:
    request.session["flash"] = {"message": message, "kind": kind}


def page(request: ConsoleRequest, name: str, status_code: int = 200, **context: Any) -> Template:
    session = request.session if request.scope.get("session") else {}
    context.setdefault("tenant", session.get("tenant"))
    context["csrf_field"] = CSRF_FIELD
    context["csrf_token"] = session.get("csrf", "")
    context["flash"] = session.pop("flash", None) if session else None
    return Template(template_name=name, context=context, status_code=status_code)


async def _form(request: ConsoleRequest) -> dict[str, Any]:
    return dict(await request.form())


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


class ConsoleController(Controller):
    path = "/"
    include_in_schema = False

    @get("/", name="console:home")
    async def home(self) -> Redirect:
        return Redirect("/console/jobs")

    # -- sign-in ----------------------------------------------------------------------------------

    @get("/sign-in", name="console:sign-in")
    async def sign_in_page(self, request: ConsoleRequest) -> Template | Redirect:
        if request.session.get("tenant"):
            return Redirect("/console/jobs")
        return page(request, "sign_in.html")

    @post("/sign-in", status_code=303)
    async def sign_in(self, request: ConsoleRequest, state: State) -> Template | Redirect:
        """The same checks as the API's key authentication, including the per-address failure limit."""
        key = str((await _form(request)).get("api_key", "")).strip()
        failures: FailureCounter = state.auth_failures
        # Counted under the key the API's authentication uses for the address (scope["client"]'s host).
        address = request.client.host if request.client else "unknown"
        if await failures.blocked(address):
            return page(
                request, "sign_in.html", 429, error="Too many failed sign-ins from this address; wait a minute."
            )
        try:
            tenant = await state.tenants.authenticate(key)
        except AuthenticationError:
            await failures.record(address)
            return page(request, "sign_in.html", 401, error="That API key is unknown or revoked. Check it and retry.")
        await end_session(request)  # a session id the browser already had is never reused
        start_session(request, tenant, key_id_of(key) or "")
        return Redirect("/console/jobs", status_code=303)

    @post("/sign-out", status_code=303)
    async def sign_out(self, request: ConsoleRequest) -> Redirect:
        request.clear_session()
        return Redirect("/console/sign-in", status_code=303)

    # -- jobs -------------------------------------------------------------------------------------

    @get("/jobs", name="console:jobs")
    async def jobs_page(
        self,
        request: ConsoleRequest,
        job_service: NamedDependency[JobService],
        runs: NamedDependency[RunHistory],
        status: FromQuery[str | None] = None,
        tag: FromQuery[str | None] = None,
        name: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> Template | Redirect:
        filters = {"status": status or "", "tag": (tag or "").strip()[:64], "name": (name or "").strip()[:200]}
        job_status = JobStatus(status) if status in _STATUSES else None
        try:
            selector = JobSelector(status=job_status, tag=filters["tag"] or None, name_prefix=filters["name"] or None)
            listing = await job_service.list(tenant_of(request), selector, limit=PAGE_SIZE, cursor=cursor or None)
        except ValueError:  # a cursor this service did not make (or a tampered link)
            flash(request, "That page link is not valid any more; showing the first page.", "error")
            query = urlencode({k: v for k, v in filters.items() if v})
            return Redirect(f"/console/jobs?{query}" if query else "/console/jobs", status_code=303)
        tenant = tenant_of(request)
        # A small outcome/lateness history per job: one indexed read per listed job, run side by side.
        recent = await asyncio.gather(
            *(runs.list_for_job(tenant, job.id, HISTORY_SHOWN, None) for job in listing.items)
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
        )

    @get("/jobs/new", name="console:new-job")
    async def new_job_page(self, request: ConsoleRequest) -> Template:
        return self._edit_page(request, None, form_values(None), {})

    @post("/jobs", status_code=303)
    async def create_job(
        self, request: ConsoleRequest, job_service: NamedDependency[JobService]
    ) -> Template | Redirect:
        form = await _form(request)
        try:
            job, _ = await job_service.create(tenant_of(request), decode_create(form))
        except FormErrors as exc:
            return self._edit_page(request, None, form, exc.errors, 422)
        except (InvalidRequestError, InvalidScheduleError, InvalidTargetError, DuplicateJobNameError) as exc:
            return self._edit_page(request, None, form, _domain_field_error(exc).errors, 422)
        flash(request, f"Created {job.name}.")
        return Redirect(f"/console/jobs/{job.id}", status_code=303)

    @get("/jobs/{job_id:str}", name="console:job")
    async def job_page(
        self,
        request: ConsoleRequest,
        job_service: NamedDependency[JobService],
        runs: NamedDependency[RunHistory],
        job_id: FromPath[str],
    ) -> Template:
        tenant = tenant_of(request)
        job = await job_service.get(tenant, job_id)
        history, _ = await runs.list_for_job(tenant, job.id, RUNS_SHOWN, None)
        return self._job_page(request, job, history, form_values(job), {})

    @post("/jobs/{job_id:str}", status_code=303)
    async def update_job(
        self,
        request: ConsoleRequest,
        job_service: NamedDependency[JobService],
        runs: NamedDependency[RunHistory],
        job_id: FromPath[str],
    ) -> Template | Redirect:
        tenant = tenant_of(request)
        form = await _form(request)
        version = _version(form)
        job = await job_service.get(tenant, job_id)
        try:
            if job.version != version:
                raise VersionConflictError(job_id)
            await job_service.update(tenant, job_id, decode_patch(form, job), version)
        except FormErrors as exc:
            history, _ = await runs.list_for_job(tenant, job.id, RUNS_SHOWN, None)
            return self._job_page(request, job, history, form, exc.errors, 422)
        except (InvalidRequestError, InvalidScheduleError, InvalidTargetError, DuplicateJobNameError) as exc:
            history, _ = await runs.list_for_job(tenant, job.id, RUNS_SHOWN, None)
            return self._job_page(request, job, history, form, _domain_field_error(exc).errors, 422)
        except VersionConflictError:
            flash(
                request, "Someone changed this job while you edited it: review it and apply your change again.", "error"
            )
            return Redirect(f"/console/jobs/{job_id}", status_code=303)
        flash(request, "Saved.")
        return Redirect(f"/console/jobs/{job_id}", status_code=303)

    @post("/jobs/{job_id:str}/pause", status_code=303)
    async def pause_job(
        self, request: ConsoleRequest, job_service: NamedDependency[JobService], job_id: FromPath[str]
    ) -> Redirect:
        return await self._state_action(request, job_service, job_id, "pause")

    @post("/jobs/{job_id:str}/resume", status_code=303)
    async def resume_job(
        self, request: ConsoleRequest, job_service: NamedDependency[JobService], job_id: FromPath[str]
    ) -> Redirect:
        return await self._state_action(request, job_service, job_id, "resume")

    @post("/jobs/{job_id:str}/run", status_code=303)
    async def run_job(
        self, request: ConsoleRequest, job_service: NamedDependency[JobService], job_id: FromPath[str]
    ) -> Redirect:
        queued = await job_service.run_now(tenant_of(request), job_id)
        queued_ms = to_ms(queued.scheduled_at)
        flash(request, "Run queued: it appears in the run history below within a few seconds (the page refreshes).")
        return Redirect(f"/console/jobs/{job_id}?awaiting={queued_ms}", status_code=303)

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

    @get("/jobs/{job_id:str}/delete", name="console:confirm-delete")
    async def confirm_delete(
        self, request: ConsoleRequest, job_service: NamedDependency[JobService], job_id: FromPath[str]
    ) -> Template:
        job = await job_service.get(tenant_of(request), job_id)
        return page(request, "delete.html", job=job)

    @post("/jobs/{job_id:str}/delete", status_code=303)
    async def delete_job(
        self, request: ConsoleRequest, job_service: NamedDependency[JobService], job_id: FromPath[str]
    ) -> Redirect:
        form = await _form(request)
        try:
            await job_service.delete(tenant_of(request), job_id, _version(form))
        except VersionConflictError:
            flash(request, "The job changed since you opened it; it was not deleted. Review it first.", "error")
            return Redirect(f"/console/jobs/{job_id}", status_code=303)
        flash(request, "Deleted.")
        return Redirect("/console/jobs", status_code=303)

    # -- failures ---------------------------------------------------------------------------------

    @get("/failures", name="console:failures")
    async def failures_page(
        self,
        request: ConsoleRequest,
        job_service: NamedDependency[JobService],
        runs: NamedDependency[RunHistory],
        before: FromQuery[str | None] = None,
    ) -> Template:
        tenant = tenant_of(request)
        try:
            failed, older = await runs.list_for_tenant(
                tenant, limit=PAGE_SIZE, cursor=before, statuses=(RunStatus.FAILED, RunStatus.MISSED)
            )
        except InvalidCursorError:  # a hand-edited link: start from the newest
            failed, older = await runs.list_for_tenant(
                tenant, limit=PAGE_SIZE, statuses=(RunStatus.FAILED, RunStatus.MISSED)
            )
        names = await _job_names(job_service, tenant, {run.job_id for run in failed})
        rows = [(run, lateness_seconds(run)) for run in failed]
        return page(request, "failures.html", failed=rows, names=names, older=older, first_page=not before)

    # -- helpers ----------------------------------------------------------------------------------

    async def _state_action(
        self, request: ConsoleRequest, job_service: JobService, job_id: str, action: str
    ) -> Redirect:
        tenant = tenant_of(request)
        version = _version(await _form(request))
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

    def _job_page(
        self,
        request: ConsoleRequest,
        job: Any,
        history: list[Any],
        values: dict[str, Any],
        errors: dict[str, str],
        status_code: int = 200,
    ) -> Template:
        now = utcnow()
        fires, fires_error = [], None
        if job.status == JobStatus.ACTIVE or job.status == JobStatus.PAUSED:
            try:
                fires = next_fires(job.schedule, now)
            except ValueError as exc:
                fires_error = str(exc)
        return page(
            request,
            "job.html",
            status_code,
            job=job,
            words=schedule_in_words(job.schedule),
            fires=fires,
            fires_error=fires_error,
            runs=[(r, lateness_seconds(r)) for r in history],
            chart=run_chart(history),
            definition=msgspec.json.format(msgspec.json.encode(job), indent=2).decode(),
            refresh=_still_waiting(request, history),
            **_form_context(values, errors),
        )


async def _job_names(job_service: JobService, tenant: str, job_ids: set[str]) -> dict[str, str]:
    """The names of a page's jobs (at most a page of lookups, concurrently; the port reads one job at a time)."""

    async def name_of(job_id: str) -> str:
        try:
            return (await job_service.get(tenant, job_id)).name
        except LookupError:
            return "(deleted job)"

    ordered = sorted(job_ids)
    return dict(zip(ordered, await asyncio.gather(*(name_of(j) for j in ordered)), strict=True))


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
