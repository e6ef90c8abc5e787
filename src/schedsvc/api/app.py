"""The Litestar application factory and its lifespan: the only place that wires adapters together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

from litestar import Litestar, Request
from litestar.config.response_cache import ResponseCacheConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.stores.base import Store

from schedsvc import __version__
from schedsvc.api import openapi
from schedsvc.api.auth import PUBLIC_PATHS, ApiKeyAuthentication, follow_key_changes
from schedsvc.api.docs import DOCS_PATH, BundledSwaggerUI
from schedsvc.api.errors import EXCEPTION_HANDLERS
from schedsvc.api.health import HealthController
from schedsvc.api.jobs import JobsController
from schedsvc.api.middleware import (
    RateLimitMiddleware,
    RequestIdMiddleware,
    TenantContextMiddleware,
    cache_key,
    cacheable,
)
from schedsvc.api.schedules import SchedulesController
from schedsvc.bus import NatsRunBus
from schedsvc.cache import (
    FailureCounter,
    MemoryFailureCounter,
    MemoryRateLimiter,
    RateLimiter,
    RedisFailureCounter,
    RedisLink,
    RedisRateLimiter,
    ResilientStore,
)
from schedsvc.config import Settings
from schedsvc.domain import partition_of
from schedsvc.names import Names
from schedsvc.observability.logging import configure_logging
from schedsvc.observability.runtime import tune_gc
from schedsvc.store import MongoJobStore, MongoTenantStore, connect, database
from schedsvc.store.migrate import apply_migrations
from schedsvc.store.runs import MongoRunStore
from schedsvc.store.timing import MongoTimingStore

log = logging.getLogger(__name__)
DEV_TENANT = "dev"


class MetricsController(PrometheusController):
    path = "/metrics"
    include_in_schema = False


async def _require_json(request: Request[Any, Any, Any]) -> None:
    """415 for a body that is not JSON (bodiless POSTs such as pause or run-now are fine)."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if not has_body:
        return
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(status_code=415, detail="the request body must be application/json")


async def _cluster_partitions(db: Any, settings: Settings) -> int:
    """The partition count recorded in the database wins (recorded on first start), so every replica agrees."""
    partitions = await MongoTimingStore(db, settings.run_retention_days).cluster_partitions(settings.partitions)
    if partitions != settings.partitions:
        log.warning("using the cluster's %d partitions, not SCHEDSVC_PARTITIONS=%d", partitions, settings.partitions)
    return partitions


async def _follow_tenant_changes(state: State, bus: NatsRunBus, stack: AsyncExitStack) -> None:
    """Validated API keys are cached per process; announced revocations drop them on every replica."""
    api_keys, unsubscribe = await follow_key_changes(bus)
    stack.push_async_callback(unsubscribe)
    state.api_keys = api_keys


@asynccontextmanager
async def _lifespan(settings: Settings, app: Litestar) -> AsyncIterator[None]:
    state = app.state
    async with AsyncExitStack() as stack:
        client = connect(settings)
        stack.push_async_callback(client.close)
        db = database(client, settings)
        if settings.dev_mode:
            await apply_migrations(db, settings)
        partitions = await _cluster_partitions(db, settings)
        tenants = MongoTenantStore(db)
        if settings.dev_mode and settings.dev_api_key:
            await tenants.ensure_tenant(DEV_TENANT)
            await tenants.create_key(DEV_TENANT, settings.dev_api_key)

        bus = await NatsRunBus.connect(settings)
        stack.push_async_callback(bus.close)
        await bus.ensure_streams(replicas=settings.stream_replicas)
        await _follow_tenant_changes(state, bus, stack)

        redis = state.get("redis")
        if redis is not None:
            stack.push_async_callback(redis.close)
            responses = app.stores.get("response_cache")
            if isinstance(responses, ResilientStore):  # entries still being written when the client closes
                stack.push_async_callback(responses.drain)

        async def on_job_changed(tenant: str, job_id: str, partition: int) -> None:
            if redis is not None:
                await redis.bump(tenant, job_id)
            await bus.publish_job_change(job_id, partition)

        state.update(
            {
                "settings": settings,
                "names": Names(settings.prefix),
                "db": db,
                "jobs": MongoJobStore(db, partitions),
                "tenants": tenants,
                "runs": MongoRunStore(db, settings),
                "bus": bus,
                "partition_of": partial(partition_of, partitions=partitions),
                "on_job_changed": on_job_changed,
                "modules": {},
            }
        )

        if "timing" in settings.roles:
            from schedsvc.timing.service import TimingService

            timing = TimingService(settings, db, bus)
            await timing.start()
            stack.push_async_callback(timing.stop)
            state.modules["timing"] = timing
        if "execution" in settings.roles:
            from schedsvc.execution.service import ExecutionService

            async def on_run_recorded(tenant: str, job_id: str) -> None:
                if redis is not None:  # a run changed the job's lastRun: cached reads must not hide it
                    await redis.bump(tenant, job_id)

            execution = ExecutionService(settings, db, bus, on_job_changed=on_run_recorded)
            await execution.start()
            stack.push_async_callback(execution.stop)
            state.modules["execution"] = execution
        yield


def create_app(settings: Settings | None = None) -> Litestar:
    """The service's ASGI app; the modules that run are chosen by ``settings.roles``."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    prometheus = PrometheusConfig(
        app_name="schedsvc", prefix="schedsvc_http", group_path=True, exclude=["^/metrics", "^/health"]
    )
    handlers: list[Any] = [HealthController]
    if not settings.metrics_port:  # otherwise `schedsvc serve` serves them on their own port
        handlers.append(MetricsController)
    middleware: list[Any] = [RequestIdMiddleware(), prometheus.middleware]
    if "api" in settings.roles:
        handlers += [JobsController, SchedulesController]
        middleware += [
            DefineMiddleware(ApiKeyAuthentication, exclude=PUBLIC_PATHS),
            TenantContextMiddleware(),
            RateLimitMiddleware(),
        ]
    redis = RedisLink(settings.redis_url, Names(settings.prefix).redis_prefix) if settings.redis_url else None
    stores: dict[str, Store] = {}
    if redis is not None:
        stores["response_cache"] = ResilientStore(redis)
    limiter: RateLimiter = RedisRateLimiter(redis) if redis is not None else MemoryRateLimiter()
    failures: FailureCounter = (
        RedisFailureCounter(redis, settings.failed_auth_per_minute)
        if redis is not None
        else MemoryFailureCounter(settings.failed_auth_per_minute)
    )
    return Litestar(
        route_handlers=handlers,
        lifespan=[partial(_lifespan, settings)],
        middleware=middleware,
        before_request=_require_json,
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
        state=State({"settings": settings, "redis": redis, "rate_limiter": limiter, "auth_failures": failures}),
    )


def create_app_from_env() -> Litestar:
    """Entry point for granian (``factory=True``)."""
    app = create_app(Settings.from_env())
    tune_gc()
    return app
