"""Mounts the console on the app: its router under ``/console``, its session store, its templates."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from litestar import Request, Response, Router
from litestar.config.app import AppConfig
from litestar.datastructures import CacheControlHeader, ResponseHeader, State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.plugins import InitPluginProtocol
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from litestar.stores.registry import StoreRegistry
from litestar.template.config import TemplateConfig

from schedsvc.api.errors import EXCEPTION_HANDLERS
from schedsvc.cache import RedisLink
from schedsvc.console.access import AccessController
from schedsvc.console.bulk import BulkJobsController
from schedsvc.console.failures import FailuresController
from schedsvc.console.pages import JobConsole
from schedsvc.console.session import CSRF_FIELD, SESSION_CONFIG, SESSION_STORE, RevokedKeys, csrf_valid
from schedsvc.console.views import JobPagesController
from schedsvc.domain.errors import JobNotFoundError, StoreUnavailableError, VersionConflictError

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
CONSOLE_PATH = "/console"
_OPEN_PATHS = (f"{CONSOLE_PATH}/sign-in", f"{CONSOLE_PATH}/static/")
# No inline script or style anywhere: the one stylesheet and the SVG charts are same-origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = [
    ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
]


def _same_origin(request: Request[Any, Any, State]) -> bool:
    """For the sign-in form, which has no session (and so no token) yet: refuse cross-site posts."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is None or origin.split("://", 1)[-1] == request.headers.get("host")


async def _guard(request: Request[Any, Any, State]) -> Response[Any] | None:
    """Every page but sign-in needs a live session; every POST carries the session's CSRF token.

    (A ``before_request`` on this router also replaces the app's JSON-only check: forms post
    ``application/x-www-form-urlencoded``.)
    """
    path = request.url.path
    if path.startswith(_OPEN_PATHS):
        if request.method == "POST" and not _same_origin(request):
            raise HTTPException(status_code=403, detail="cross-site sign-in refused")
        return None
    session = request.session
    revoked: RevokedKeys = request.app.state.console_revoked
    await revoked.follow(request.app.state.bus)
    if not session.get("tenant") or revoked.revoked(session):
        if session:
            request.clear_session()
        return Redirect(f"{CONSOLE_PATH}/sign-in", status_code=303)
    if request.method == "POST":
        form = await request.form()
        if not csrf_valid(session, form.get(CSRF_FIELD)):
            raise HTTPException(status_code=403, detail="the form is stale or was not sent by the console")
    return None


def _error_page(request: Request[Any, Any, State], exc: Exception) -> Response[Any]:
    """Errors as pages that say what to do (the API's handlers would answer JSON problem details)."""
    match exc:
        case JobNotFoundError():
            status, message = 404, "No such job (it may have been deleted). Go back to the job list."
        case VersionConflictError():
            status, message = 412, "The job changed meanwhile. Reload the page and apply your change again."
        case StoreUnavailableError():
            status, message = 503, "The database is unavailable just now. Retry in a few seconds."
        case HTTPException():
            status, message = exc.status_code, str(exc.detail)
        case _:
            log.exception("console error on %s %s", request.method, request.url.path, exc_info=exc)
            status, message = 500, "Something went wrong on our side. Retry; if it persists, tell the operators."
    loaded = request.scope.get("session")
    session: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
    context = {
        "status": status,
        "message": message,
        "tenant": session.get("tenant"),
        "csrf_field": CSRF_FIELD,
        "csrf_token": session.get("csrf", ""),
        "flash": None,
    }
    return Template(template_name="error.html", context=context, status_code=status)


def console_router() -> Router:
    static = create_static_files_router(
        path="/static",
        directories=[str(HERE / "static")],
        # Asset names carry no hash; a short cache keeps an upgrade visible within minutes.
        cache_control=CacheControlHeader(max_age=300, public=True),
        name="console-static",
    )
    return Router(
        path=CONSOLE_PATH,
        route_handlers=[AccessController, JobPagesController, BulkJobsController, FailuresController, static],
        middleware=[SESSION_CONFIG.middleware],
        before_request=_guard,
        # Resolved after the guard, so a job page's dependency always has a signed-in tenant.
        dependencies={"console": Provide(JobConsole, sync_to_thread=False)},
        exception_handlers={kind: _error_page for kind in EXCEPTION_HANDLERS},
        response_headers=_HEADERS,
        opt={"exclude_from_auth": True},  # the API-key middleware: the console authenticates by session
        include_in_schema=False,  # for every page, form action and asset below it
    )


class ConsolePlugin(InitPluginProtocol):
    """``Litestar(plugins=[ConsolePlugin(redis)])``: sessions live in Redis when there is one."""

    def __init__(self, redis: RedisLink | None) -> None:
        self._redis = redis

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.append(console_router())
        store = (
            RedisStore(self._redis.client, namespace=f"{self._redis.prefix}console-sessions")
            if self._redis is not None
            else MemoryStore()
        )
        if isinstance(app_config.stores, StoreRegistry):
            app_config.stores.register(SESSION_STORE, store)
        else:
            app_config.stores = {**(app_config.stores or {}), SESSION_STORE: store}
        app_config.template_config = TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)
        app_config.state["console_revoked"] = RevokedKeys()
        return app_config
