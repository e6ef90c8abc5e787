"""The composition root: every adapter is built here, once per process, and handed to the modules.

Entry points (the Litestar lifespan, ``python -m schedsvc.timing``, ``python -m schedsvc.execution``,
tests and benchmarks) call :func:`open_adapters` and then build the modules they run with
:func:`timing_service` and :func:`execution_service` (the API: :func:`job_service`, :func:`run_service`);
the API's Redis adapters (response cache, rate limits) come from :func:`cache_adapters`. Nothing else
constructs a MongoDB, NATS or Redis adapter.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pymongo.asynchronous.database import AsyncDatabase

from schedsvc.bus import NatsRunBus
from schedsvc.cache import (
    MemoryFailureCounter,
    MemoryRateLimiter,
    RedisFailureCounter,
    RedisLink,
    RedisRateLimiter,
    ResilientStore,
)
from schedsvc.config import Settings
from schedsvc.domain.errors import BusUnavailableError
from schedsvc.domain.jobs import JobNotice
from schedsvc.execution.job_updates import JobChanged
from schedsvc.execution.notifications import NotificationReporter
from schedsvc.execution.service import ExecutionService
from schedsvc.job_service import JobService, RunService, TargetPolicy
from schedsvc.names import Names
from schedsvc.observability.logging import configure_logging
from schedsvc.observability.runtime import tune_gc
from schedsvc.store import MongoJobStore, MongoTenantStore, connect, database
from schedsvc.store.base import FailureCounter, RateLimiter
from schedsvc.store.leases import MongoLeaseStore
from schedsvc.store.migrate import apply_migrations
from schedsvc.store.replies import MongoReplies
from schedsvc.store.retention import RunRetention
from schedsvc.store.run_history import MongoRunHistory
from schedsvc.store.runs import MongoRunStore
from schedsvc.store.timing import MongoTimingStore
from schedsvc.timing.service import TimingService

log = logging.getLogger(__name__)
S = TypeVar("S", bound="HeadlessService")


@dataclass(frozen=True, slots=True)
class Adapters:
    """The MongoDB and NATS adapters of one process."""

    settings: Settings
    db: AsyncDatabase[dict[str, Any]]
    bus: NatsRunBus | None
    """None only in an API process started while NATS was down (``open_adapters(require_bus=False)``):
    it serves what needs only MongoDB and keeps trying (``api/app.py``)."""
    partitions: int
    """The cluster's partition count (recorded in the database on first start; it wins over settings)."""
    jobs: MongoJobStore
    timing: MongoTimingStore
    leases: MongoLeaseStore
    runs: MongoRunStore
    """The run ledger (execution)."""
    run_history: MongoRunHistory
    """The tenant's runs as the API reads them."""
    replies: MongoReplies
    """Answers kept under an ``Idempotency-Key`` (``POST /runs/retry``, and ``POST /jobs`` through the job
    store)."""
    tenants: MongoTenantStore
    retention: RunRetention
    """How long each tenant's runs are kept (cached; ``forget`` a tenant whose settings changed)."""

    @classmethod
    async def over(
        cls,
        settings: Settings,
        db: AsyncDatabase[dict[str, Any]],
        bus: NatsRunBus | None,
        *,
        redis: RedisLink | None = None,
    ) -> Adapters:
        """The adapters over an open database handle and bus (which the caller closes).

        Job changes are announced to timing replicas on the bus and, with ``redis``, to the response
        cache of every API replica.
        """

        async def announce(notice: JobNotice) -> None:
            if redis is not None:
                new_job = notice.timing is not None and notice.timing.version == 1
                await redis.bump(notice.tenant, notice.job_id, new_job=new_job)
            if bus is not None:  # without NATS, timing replicas see the change on their next scan
                await bus.publish_job_change(notice)

        tenants = MongoTenantStore(db)
        retention = RunRetention(tenants, settings)
        if bus is not None:
            await retention.follow(bus)  # a tenant's new runRetentionDays applies at once on every replica
        timing = MongoTimingStore(
            db, retention, on_missed=NotificationReporter(bus).missed if bus is not None else None
        )
        partitions = await timing.cluster_partitions(settings.partitions)
        if partitions != settings.partitions:
            log.warning(
                "using the cluster's %d partitions, not SCHEDSVC_PARTITIONS=%d", partitions, settings.partitions
            )
        replies = MongoReplies(db)
        return cls(
            settings=settings,
            db=db,
            bus=bus,
            partitions=partitions,
            jobs=MongoJobStore(db, partitions, replies, on_change=announce),
            timing=timing,
            leases=MongoLeaseStore(db),
            runs=MongoRunStore(db, retention),
            run_history=MongoRunHistory(db, retention),
            replies=replies,
            tenants=tenants,
            retention=retention,
        )


@dataclass(frozen=True, slots=True)
class CacheAdapters:
    """The API's Redis adapters, or their in-process stand-ins when no Redis is configured."""

    redis: RedisLink | None
    rate_limiter: RateLimiter
    auth_failures: FailureCounter
    responses: ResilientStore | None
    """The response cache's Litestar store (None: no response cache)."""


def cache_adapters(settings: Settings) -> CacheAdapters:
    """Built before the app (Litestar takes its stores at construction); the client connects on first use."""
    if not settings.redis_url:
        return CacheAdapters(
            None, MemoryRateLimiter(), MemoryFailureCounter(settings.failed_auth_per_minute), responses=None
        )
    redis = RedisLink(settings.redis_url, Names(settings.prefix).redis_prefix)
    return CacheAdapters(
        redis,
        RedisRateLimiter(redis),
        RedisFailureCounter(redis, settings.failed_auth_per_minute),
        responses=ResilientStore(redis),
    )


async def open_adapters(
    settings: Settings, stack: AsyncExitStack, *, redis: RedisLink | None = None, require_bus: bool = True
) -> Adapters:
    """Connect to MongoDB and NATS (closed by ``stack``), ensure the streams, and build the adapters.

    With ``require_bus=False`` a NATS that cannot be reached leaves ``bus`` None instead of failing.
    """
    client = connect(settings)
    stack.push_async_callback(client.close)
    db = database(client, settings)
    if settings.dev_mode:
        await apply_migrations(db, settings)
    try:
        bus: NatsRunBus | None = await open_bus(settings, stack)
    except BusUnavailableError as exc:
        if require_bus:
            raise
        log.warning("NATS at %s: %s (starting without it)", settings.nats_url, exc)
        bus = None
    return await Adapters.over(settings, db, bus, redis=redis)


async def open_bus(settings: Settings, stack: AsyncExitStack) -> NatsRunBus:
    """Connect to NATS (closed by ``stack``) and ensure the streams; :class:`BusUnavailableError` if down."""
    bus = await NatsRunBus.connect(settings)
    stack.push_async_callback(bus.close)
    await bus.ensure_streams(replicas=settings.stream_replicas)
    return bus


def _bus(adapters: Adapters) -> NatsRunBus:
    if adapters.bus is None:
        raise BusUnavailableError("NATS is not connected")
    return adapters.bus


def timing_service(adapters: Adapters, *, member: str | None = None) -> TimingService:
    return TimingService(
        adapters.settings,
        partitions=adapters.partitions,
        jobs=adapters.timing,
        fires=adapters.timing,
        leases=adapters.leases,
        publisher=_bus(adapters),
        changes=_bus(adapters),
        member=member,
    )


def job_service(adapters: Adapters) -> JobService:
    """The job use cases over this process's adapters (the API and the console share them)."""
    settings = adapters.settings
    policy = TargetPolicy(
        allow_networks=settings.target_allow_networks,
        default_grant=settings.nats_subject_grant,
        reserved_roots=Names(settings.prefix).reserved_subject_roots,
        grants=adapters.tenants,
    )
    return JobService(adapters.jobs, policy, adapters.bus)


def run_service(adapters: Adapters) -> RunService:
    """Retries on demand over this process's adapters (``/runs`` and the console share it)."""
    return RunService(adapters.run_history, adapters.jobs, adapters.bus, adapters.replies)


def execution_service(
    adapters: Adapters, *, on_job_changed: JobChanged | None = None, **options: Any
) -> ExecutionService:
    return ExecutionService(
        adapters.settings,
        _bus(adapters),
        runs=adapters.runs,
        tenants=adapters.tenants,
        on_job_changed=on_job_changed,
        **options,
    )


class HeadlessService(Protocol):
    """A module that runs without HTTP (timing, execution) and stops gracefully."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def run_headless(build: Callable[[Adapters], S], ready_line: Callable[[S], str]) -> None:
    """``python -m schedsvc.<module>``: build the module from ``SCHEDSVC_*`` settings and run it until
    SIGTERM/SIGINT, then stop it gracefully. One ``ready_line`` on stdout tells a parent it is serving."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    tune_gc()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with AsyncExitStack() as stack:
            service = build(await open_adapters(settings, stack))
            await service.start()
            print(ready_line(service), flush=True)
            await stop.wait()
            await service.stop()

    asyncio.run(run())
