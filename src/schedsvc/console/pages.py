"""What every console page shares: the tenant of the session, one-time messages, rendering with the CSRF
token, reading a posted form, the names of a page's jobs, and what a job page works with (:class:`JobConsole`)."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.response import Template

from schedsvc.console.session import CSRF_FIELD
from schedsvc.job_service import JobService
from schedsvc.store.base import RunHistory, TenantPreferenceStore

PAGE_SIZE = 25

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


async def read_form(request: ConsoleRequest) -> dict[str, Any]:
    return dict(await request.form())


async def job_names(job_service: JobService, tenant: str, job_ids: set[str]) -> dict[str, str]:
    """The names of a page's jobs (at most a page of lookups, concurrently; the port reads one job at a time)."""

    async def name_of(job_id: str) -> str:
        try:
            return (await job_service.get(tenant, job_id)).name
        except LookupError:
            return "(deleted job)"

    ordered = sorted(job_ids)
    return dict(zip(ordered, await asyncio.gather(*(name_of(j) for j in ordered)), strict=True))


class JobConsole:
    """What a console job page works with: the request and its signed-in tenant, the job use cases, the
    tenant's run history and preferences. The console router provides it as ``console`` (its parameters are
    the app's dependencies of those names), so a handler declares one parameter for all of them.

    A plain class, not a dataclass: Litestar would otherwise read its fields as a schema to validate.
    """

    __slots__ = ("jobs", "request", "runs", "tenant", "tenants")

    def __init__(
        self,
        request: ConsoleRequest,
        job_service: NamedDependency[JobService],
        runs: NamedDependency[RunHistory],
        tenants: NamedDependency[TenantPreferenceStore],
    ) -> None:
        self.request = request
        self.tenant = tenant_of(request)
        """Read after the router's guard: a request without a signed-in session never gets here."""
        self.jobs = job_service
        self.runs = runs
        self.tenants = tenants
