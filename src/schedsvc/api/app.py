"""The Litestar application factory and its lifespan; the adapters come from :mod:`schedsvc.wiring`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any, cast

from litestar import Litestar, Router
from litestar.config.response_cache import ResponseCacheConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.stores.base import Store

from schedsvc import __version__
from schedsvc.api import openapi
from schedsvc.api.auth import KEY_CACHE_SECONDS, PUBLIC_PATHS, ApiKeyAuthentication, follow_key_changes
from schedsvc.api.backfill import BackfillController
from schedsvc.api.bodies import check_request
from schedsvc.api.docs import DOCS_PATH, BundledSwaggerUI
from schedsvc.api.errors import EXCEPTION_HANDLERS
from schedsvc.api.health import HealthController
from schedsvc.api.job_bulk import BulkJobsController
from schedsvc.api.jobs import JobsController
from schedsvc.api.middleware import (
    HttpMetricsMiddleware,
    RateLimitMiddleware,
    RequestIdMiddleware,
    cache_key,
    cacheable,
)
from schedsvc.api.runs import RunsController
from schedsvc.api.schedules import SchedulesController
from schedsvc.api.tenant_settings import TenantSettingsController
from schedsvc.cache import NoticedCache, RedisLink, ResilientStore
from schedsvc.config import Settings
from schedsvc.domain.errors import BusUnavailableError
from schedsvc.job_service import JobService, RunService
from schedsvc.names import Names
from schedsvc.observability.logging import configure_logging
from schedsvc.observability.runtime import tune_gc
from schedsvc.store.base import JobRepository, RunHistory, RunPublisher, TenantChangeFeed, TenantPreferenceStore
from schedsvc.supervision import stop_when_orphaned
from schedsvc.wiring import (
    Adapters,
    cache_adapters,
    execution_service,
    job_service,
    open_adapters,
    open_bus,
    run_service,
    timing_service,
)

log = logging.getLogger(__name__)
DEV_TENANT = "dev"
BUS_RETRY_MIN_SECONDS = 0.5
BUS_RETRY_MAX_SECONDS = 30.0


class MetricsController(PrometheusController):
    path = "/metrics"
    include_in_schema = False


async def _follow_tenant_changes(state: State, bus: TenantChangeFeed, stack: AsyncExitStack) -> None:
    """Validated API keys are cached per process; announced revocations drop them on every replica."""
    api_keys, unsubscribe = await follow_key_changes(bus)
    stack.push_async_callback(unsubscribe)
    state.api_keys = api_keys


async def _start_with_bus(
    state: State, settings: Settings, adapters: Adapters, stack: AsyncExitStack, redis: RedisLink | None
) -> None:
    """What needs NATS: following key revocations, the timing and execution modules; then ready."""
    assert adapters.bus is not None
    await _follow_tenant_changes(state, adapters.bus, stack)
    if "timing" in settings.roles:
        timing = timing_service(adapters)
        await timing.start()
        stack.push_async_callback(timing.stop)
        state.modules["timing"] = timing
    if "execution" in settings.roles:

        async def on_run_recorded(tenant: str, job_id: str) -> None:
            if redis is not None:  # a run changed the job's lastRun: cached reads must not hide it
                await redis.bump(tenant, job_id)

        execution = execution_service(adapters, on_job_changed=on_run_recorded)
        await execution.start()
        stack.push_async_callback(execution.stop)
        state.modules["execution"] = execution
    _serve_with(state, adapters)


def _serve_with(state: State, adapters: Adapters) -> None:
    """Hand the handlers' dependencies (see _DEPENDENCIES) these adapters and the job use cases built on
    them: once at start-up, again when NATS is reached later (run-now needs the bus)."""
    state.update(
        {
            "bus": adapters.bus,
            "adapters": adapters,
            "job_service": job_service(adapters),
            "run_service": run_service(adapters),
        }
    )


async def _connect_later(
    state: State, settings: Settings, adapters: Adapters, stack: AsyncExitStack, redis: RedisLink | None
) -> None:
    """NATS was down at start-up: keep trying with backoff, then start what needs it.

    The process stays live (not ready) meanwhile, instead of failing its start-up and being restarted in
    a loop; MongoDB-only requests are served, run-now answers 503 with ``Retry-After``.
    """
    delay = BUS_RETRY_MIN_SECONDS
    while True:
        await asyncio.sleep(delay)
        attempt = AsyncExitStack()
        try:
            bus = await open_bus(settings, attempt)
        except BusUnavailableError as exc:
            await attempt.aclose()
            log.warning("NATS at %s: %s (retrying in %.1fs)", settings.nats_url, exc, delay)
            delay = min(delay * 2, BUS_RETRY_MAX_SECONDS)
            continue
        stack.push_async_callback(attempt.aclose)  # the bus closes with the app, after the modules
        connected = await Adapters.over(settings, adapters.db, bus, redis=redis)
        await _start_with_bus(state, settings, connected, stack, redis)
        log.info("NATS at %s reached; the service is complete", settings.nats_url)
        return


@asynccontextmanager
async def _lifespan(settings: Settings, app: Litestar) -> AsyncIterator[None]:
    state = app.state
    async with AsyncExitStack() as stack:
        redis: RedisLink | None = state.get("redis")
        if redis is not None:
            stack.push_async_callback(redis.close)
            responses = app.stores.get("response_cache")
            if isinstance(responses, ResilientStore):  # entries still being written when the client closes
                stack.push_async_callback(responses.drain)
        adapters = await open_adapters(settings, stack, redis=redis, require_bus=False)
        if settings.dev_mode and settings.dev_api_key:
            await adapters.tenants.ensure_tenant(DEV_TENANT)
            await adapters.tenants.create_key(DEV_TENANT, settings.dev_api_key)
        # What the middleware, the health probes and the target checks read (the handlers get typed
        # dependencies instead: see _DEPENDENCIES).
        state.update(
            {
                "settings": settings,
                "names": Names(settings.prefix),
                "db": adapters.db,
                "tenants": adapters.tenants,
                "modules": {},
            }
        )
        _serve_with(state, adapters)
        orphan_watch = asyncio.create_task(stop_when_orphaned(), name="schedsvc-orphan-watch")
        stack.push_async_callback(_cancelled, orphan_watch)
        if adapters.bus is not None:
            await _start_with_bus(state, settings, adapters, stack, redis)
        else:
            # Keys are cached without revocation notices until NATS is reached (at most KEY_CACHE_SECONDS).
            state.api_keys = NoticedCache(KEY_CACHE_SECONDS, gaps=lambda: 0)
            later = asyncio.create_task(_connect_later(state, settings, adapters, stack, redis), name="schedsvc-bus")
            stack.push_async_callback(_cancelled, later)
        yield


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# State is untyped: each provider says what _serve_with put there.
def _adapters(state: State) -> Adapters:
    return cast(Adapters, state.adapters)


def _provide_jobs(state: State) -> JobRepository:
    return _adapters(state).jobs


def _provide_job_service(state: State) -> JobService:
    return cast(JobService, state.job_service)


def _provide_run_service(state: State) -> RunService:
    return cast(RunService, state.run_service)


def _provide_runs(state: State) -> RunHistory:
    return _adapters(state).run_history


def _provide_run_queue(state: State) -> RunPublisher:
    bus = _adapters(state).bus
    if bus is None:  # NATS was down when the process started and is not connected yet
        raise BusUnavailableError("NATS is not connected")
    return bus


def _provide_tenants(state: State) -> TenantPreferenceStore:
    return _adapters(state).tenants


_DEPENDENCIES = {
    "jobs": Provide(_provide_jobs, sync_to_thread=False),
    "job_service": Provide(_provide_job_service, sync_to_thread=False),
    "runs": Provide(_provide_runs, sync_to_thread=False),
    "run_service": Provide(_provide_run_service, sync_to_thread=False),
    "run_queue": Provide(_provide_run_queue, sync_to_thread=False),
    "tenants": Provide(_provide_tenants, sync_to_thread=False),
}
"""The typed dependencies handlers ask for by name (the ports of ``schedsvc.store.base`` and the job use cases)."""


def _tenant_endpoints() -> Router:
    """The endpoints that act for the caller's tenant, each needing its API key.

    ``ApiKeyAuthentication`` enforces the key (on every path but ``PUBLIC_PATHS``); this router is the one
    place that documents it, for every operation under it. The preview (key optional) and the probes stay
    outside it.
    """
    controllers = [JobsController, BulkJobsController, BackfillController, RunsController, TenantSettingsController]
    return Router(path="/", route_handlers=controllers, security=openapi.REQUIRES_KEY)


def create_app(settings: Settings | None = None) -> Litestar:
    """The service's ASGI app; the modules that run are chosen by ``settings.roles``."""
    from schedsvc.console import ConsolePlugin  # here, not at the top: the console builds on this package

    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    prometheus = PrometheusConfig(
        app_name="schedsvc",
        prefix="schedsvc_http",
        group_path=True,
        exclude=["^/metrics", "^/health"],
        middleware_class=HttpMetricsMiddleware,
    )
    handlers: list[Any] = [HealthController]
    if not settings.metrics_port:  # otherwise `schedsvc serve` serves them on their own port
        handlers.append(MetricsController)
    cache = cache_adapters(settings)
    middleware: list[Any] = [RequestIdMiddleware(), prometheus.middleware]
    if "api" in settings.roles:
        handlers += [_tenant_endpoints(), SchedulesController]
        middleware += [
            DefineMiddleware(ApiKeyAuthentication, exclude=PUBLIC_PATHS),
            RateLimitMiddleware(cache.rate_limiter, settings.rate_limit_per_minute, settings.rate_limit_overrides),
        ]
    redis = cache.redis
    stores: dict[str, Store] = {}
    if cache.responses is not None:
        stores["response_cache"] = cache.responses
    return Litestar(
        route_handlers=handlers,
        dependencies=_DEPENDENCIES,
        lifespan=[partial(_lifespan, settings)],
        middleware=middleware,
        before_request=check_request,
        logging_config=None,  # configure_logging() owns logging: JSON lines with request context
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_request_bytes,
        response_cache_config=ResponseCacheConfig(
            default_expiration=settings.cache_ttl_seconds, key_builder=cache_key, cache_response_filter=cacheable
        ),
        stores=stores,
        openapi_config=OpenAPIConfig(
            title="schedsvc",
            version=__version__,
            description="Job scheduler: cron, interval, calendar and one-time jobs delivered to webhooks or NATS.",
            path=DOCS_PATH,
            # The page at /schema and /schema/swagger; the document at /schema/openapi.json.
            render_plugins=[BundledSwaggerUI(path="/swagger")],
            components=openapi.COMPONENTS,
        ),
        state=State({"settings": settings, "redis": redis, "auth_failures": cache.auth_failures}),
        plugins=[ConsolePlugin(redis)] if "api" in settings.roles else [],  # the web console (docs/console.md)
    )


def create_app_from_env() -> Litestar:
    """Entry point for granian (``factory=True``)."""
    app = create_app(Settings.from_env())
    tune_gc()
    return app
