"""Bulk actions on the jobs list: pause, resume or delete the jobs matching a selector, as
``POST /jobs/bulk/pause|resume|delete`` does (one call of :class:`~schedsvc.job_service.JobService`'s
``*_matching``, the same body and limit). Delete asks first, on a page that shows what would go."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template

from schedsvc.console.forms import BULK_ACTIONS, FormErrors, bulk_values, decode_bulk
from schedsvc.console.pages import PAGE_SIZE, ConsoleRequest, JobConsole, flash, page, read_form
from schedsvc.console.presenting import bulk_outcome_in_words
from schedsvc.domain.models import JobStatus
from schedsvc.domain.wire import MAX_COUNTED_MATCHES, BulkJobAction, BulkJobResult
from schedsvc.job_service import JobService

CONFIRMED = "yes"
"""The value of the confirmation page's ``confirm`` field: only a post carrying it deletes."""

_ACT: dict[str, Callable[[JobService, str, BulkJobAction], Awaitable[BulkJobResult]]] = {
    "pause": JobService.pause_matching,
    "resume": JobService.resume_matching,
    "delete": JobService.delete_matching,
}


def _list_url(action: BulkJobAction) -> str:
    """The jobs list filtered by the selector, so the list afterwards shows the jobs acted on."""
    selector = action.selector
    filters = {
        "status": selector.status.value if selector.status is not None else "",
        "tag": selector.tag or "",
        "name": selector.name_prefix or "",
    }
    query = urlencode({k: v for k, v in filters.items() if v})
    return f"/console/jobs?{query}" if query else "/console/jobs"


class BulkJobsController(Controller):
    path = "/"

    @post("/jobs/bulk", status_code=303)
    async def act_on_matching(self, console: NamedDependency[JobConsole]) -> Template | Redirect:
        request, job_service, tenant = console.request, console.jobs, console.tenant
        form = await read_form(request)
        action = str(form.get("action", ""))
        if action not in BULK_ACTIONS:
            raise HTTPException(status_code=400, detail="choose Pause, Resume or Delete on the jobs list")
        try:
            bulk = decode_bulk(form)
        except FormErrors as exc:
            return self._bulk_page(request, action, _form_text(form), exc.errors, status_code=422)
        if action == "delete" and form.get("confirm") != CONFIRMED:
            # What would go, before anything does: the count (as the API counts it) and the first page.
            matched = await job_service.count_matching(tenant, bulk.selector)
            first = await job_service.list(tenant, bulk.selector, limit=PAGE_SIZE)
            return self._bulk_page(
                request,
                action,
                bulk_values(bulk),
                {},
                matched=matched,
                at_least=matched >= MAX_COUNTED_MATCHES,
                jobs=first.items,
                more_listed=first.next_cursor is not None,
                deleting=min(matched, bulk.limit),
                list_url=_list_url(bulk),
                status_code=200,
            )
        result = await _ACT[action](job_service, tenant, bulk)
        flash(request, bulk_outcome_in_words(action, result))
        return Redirect(_list_url(bulk), status_code=303)

    def _bulk_page(
        self,
        request: ConsoleRequest,
        action: str,
        values: dict[str, str],
        errors: dict[str, str],
        *,
        status_code: int,
        **context: Any,
    ) -> Template:
        return page(
            request,
            "bulk.html",
            status_code,
            action=action,
            bulk=values,
            bulk_errors=errors,
            statuses=[s.value for s in JobStatus],
            confirmed=CONFIRMED,
            **context,
        )


def _form_text(form: dict[str, Any]) -> dict[str, str]:
    return {name: value.strip() for name, value in form.items() if isinstance(value, str)}
