"""The Litestar application factory and its lifespan: the only place that wires adapters together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

from litestar import Litestar
from litestar.config.response_cache import ResponseCacheConfig
from litestar.datastructures import State
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.stores.base import Store

from schedsvc import __version__
from schedsvc.api.auth import PUBLIC_PATHS, ApiKeyAuthentication
from schedsvc.api.bodies import check_request
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
from schedsvc.cache import MemoryRateLimiter, RateLimiter, RedisLink, RedisRateLimiter, ResilientStore
from schedsvc.config import Settings
from schedsvc.domain import InfrastructureUnavailableError, partition_of
from schedsvc.names import Names
from schedsvc.observability.logging import configure_logging
from schedsvc.observability.runtime import tune_gc
from schedsvc.store import MongoJobStore, MongoTenantStore, connect, database
from schedsvc.store.migrate import apply_migrations
from schedsvc.store.runs import MongoRunStore
from schedsvc.store.timing import MongoTimingStore

log = logging.getLogger(__name__)
DEV_TENANT = "dev"
BUS_RETRY_MIN_SECONDS = 0.5
BUS_RETRY_MAX_SECONDS = 30.0


class MetricsController(PrometheusController):
    path = "/metrics"
    include_in_schema = False


async def _cluster_partitions(db: Any, settings: Settings) -> int:
    """The partition count recorded in the database wins (recorded on first start), so every replica agrees."""
    partitions = await MongoTimingStore(db, settings.run_retention_days).cluster_partitions(settings.partitions)
    if partitions != settings.partitions:
        log.warning("using the cluster's %d partitions, not SCHEDSVC_PARTITIONS=%d", partitions, settings.partitions)
    return partitions


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

        redis = state.get("redis")
        if redis is not None:
            stack.push_async_callback(redis.close)

        async def on_job_changed(tenant: str, job_id: str, partition: int) -> None:
            if redis is not None:
                await redis.bump_tenant(tenant)
            bus = state.get("bus")
            if bus is not None:  # without NATS, timing replicas see the change on their next scan
                await bus.publish_job_change(job_id, partition)

        state.update(
            {
                "settings": settings,
                "names": Names(settings.prefix),
                "db": db,
                "jobs": MongoJobStore(db, partitions),
                "tenants": tenants,
                "runs": MongoRunStore(db, settings),
                "bus": None,  # set once NATS is connected and the streams exist
                "partition_of": partial(partition_of, partitions=partitions),
                "on_job_changed": on_job_changed,
                "modules": {},
            }
        )

        async def start_with_bus(modules: AsyncExitStack, bus: NatsRunBus) -> None:
            await bus.ensure_streams(replicas=settings.stream_replicas)
            if "timing" in settings.roles:
                from schedsvc.timing.service import TimingService

                timing = TimingService(settings, db, bus)
                await timing.start()
                modules.push_async_callback(timing.stop)
                state.modules["timing"] = timing
            if "execution" in settings.roles:
                from schedsvc.execution.service import ExecutionService

                async def on_run_recorded(tenant: str, job_id: str) -> None:
                    if redis is not None:  # a run changed the job's lastRun: cached reads must not hide it
                        await redis.bump_tenant(tenant)

                execution = ExecutionService(settings, db, bus, on_job_changed=on_run_recorded)
                await execution.start()
                modules.push_async_callback(execution.stop)
                state.modules["execution"] = execution
            state.bus = bus

        await stack.enter_async_context(_with_bus(settings, start_with_bus))
        yield


@asynccontextmanager
async def _with_bus(
    settings: Settings, start: Callable[[AsyncExitStack, NatsRunBus], Awaitable[None]]
) -> AsyncIterator[None]:
    """Connect to NATS and run ``start`` with it, in the background when NATS is down at start-up.

    A process started while NATS is down stays live (not ready) and keeps trying with backoff, instead
    of failing its start-up and being restarted in a loop. With NATS up, the app starts complete, as
    before: the first attempt is awaited. Whatever ``start`` opens is closed (in reverse) on shutdown.
    """
    first_attempt = asyncio.Event()

    async def run() -> None:
        delay = BUS_RETRY_MIN_SECONDS
        while True:
            async with AsyncExitStack() as opened:
                try:
                    bus = await NatsRunBus.connect(settings)
                    opened.push_async_callback(bus.close)
                    await start(opened, bus)
                except InfrastructureUnavailableError as exc:
                    log.warning("NATS at %s: %s (retrying in %.1fs)", settings.nats_url, exc, delay)
                else:
                    first_attempt.set()
                    await asyncio.Event().wait()  # until shutdown cancels this task
            first_attempt.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BUS_RETRY_MAX_SECONDS)

    task = asyncio.create_task(run(), name="schedsvc-bus")
    waiter = asyncio.create_task(first_attempt.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # an unexpected error at start-up fails the start, as it always did
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(settings: Settings | None = None) -> Litestar:
    """The service's ASGI app; the modules that run are chosen by ``settings.roles``."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    prometheus = PrometheusConfig(
        app_name="schedsvc", prefix="schedsvc_http", group_path=True, exclude=["^/metrics", "^/health"]
    )
    handlers: list[Any] = [HealthController, MetricsController]
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
        stores["response_cache"] = ResilientStore(redis, namespace=f"{settings.prefix}:cache")
    limiter: RateLimiter = RedisRateLimiter(redis) if redis is not None else MemoryRateLimiter()
    return Litestar(
        route_handlers=handlers,
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
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
        state=State({"settings": settings, "redis": redis, "rate_limiter": limiter}),
    )


def create_app_from_env() -> Litestar:
    """Entry point for granian (``factory=True``)."""
    app = create_app(Settings.from_env())
    tune_gc()
    return app
