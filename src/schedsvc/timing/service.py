"""The timing service: owned partitions' due jobs in the Rust timing wheel, fires published to JetStream.

Order of writes for every fire (``docs/design/timing.md`` has the crash analysis):

1. publish the run message (message id = run id ``jobId:scheduledMs``; JetStream drops a repeat),
2. insert the ``missed`` run records the catch-up plan produced (idempotent: ``_id`` = run id),
3. advance ``nextRun`` with a conditional update ``{_id, nextRun: <old>, status: "active"}``.

A crash before 3 leaves ``nextRun`` where it was, so whoever serves the partition next publishes the
same fires again and JetStream (then the run record) drops them; a crash after 3 left nothing undone.

This module is the thin service: lifecycle and lease events. :mod:`~schedsvc.timing.registry` holds the
wheel, :mod:`~schedsvc.timing.sync` keeps it in line with the database (gained partitions, change
notices, rescans), :mod:`~schedsvc.timing.firing` fires it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence

from schedsvc.config import Settings
from schedsvc.domain.rules import describe_partitions
from schedsvc.observability.metrics import WHEEL_TIMERS
from schedsvc.store.base import DueJobReader, FireRecorder, JobChangeFeed, LeaseStore, RunPublisher
from schedsvc.timing.firing import FiringPipeline
from schedsvc.timing.leases import PartitionLeases
from schedsvc.timing.registry import WheelRegistry
from schedsvc.timing.sync import WheelSync

log = logging.getLogger(__name__)


class TimingService:
    """Leaderless timing: leases partitions, keeps their due jobs in the wheel, publishes fires.

    ``start()`` joins the cluster and returns once this replica holds its share; ``stop()`` releases
    every lease as soon as in-flight publishes are done. ``ready`` says whether it is heartbeating.
    Started once: a replica that stopped is not started again (build a new one).

    ``partitions`` is the cluster's partition count (recorded in the database; it wins over settings).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        partitions: int,
        jobs: DueJobReader,
        fires: FireRecorder,
        leases: LeaseStore,
        publisher: RunPublisher,
        changes: JobChangeFeed,
        member: str | None = None,
    ) -> None:
        self.member = member or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._publisher = publisher
        self._changes = changes
        self._registry = WheelRegistry()
        self._leases = PartitionLeases(
            leases,
            self.member,
            partitions,
            ttl_seconds=settings.lease_ttl_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            listener=self,
        )
        self._sync = WheelSync(jobs, self._registry, self._leases, horizon_seconds=settings.horizon_seconds)
        self._pipeline = FiringPipeline(
            self._registry,
            self._leases,
            publisher,
            fires,
            horizon_ms=int(settings.horizon_seconds * 1000),
            reload=self._sync.reload,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._loads: set[asyncio.Task[None]] = set()
        self._unsubscribe: Callable[[], Awaitable[None]] | None = None
        self._started = False

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._unsubscribe is not None:
            raise RuntimeError("TimingService already started")
        sync = self._sync
        self._unsubscribe = await self._changes.job_changes(sync.on_job_change)
        self._pipeline.start()
        self._tasks = [
            asyncio.create_task(sync.changes_loop(), name="timing-changes"),
            asyncio.create_task(sync.rescan_loop(), name="timing-rescan"),
        ]
        await self._leases.start()
        self._started = True
        log.info("timing member %s started with partitions %s", self.member, describe_partitions(self._leases.owned))

    async def stop(self) -> None:
        """Release every lease once in-flight publishes are done, then let pending advances finish.

        Another replica takes over at once; an advance landing after the hand-off is a conditional
        write, harmless whichever replica gets there first.
        """
        if not self._started:
            return
        self._started = False
        if self._unsubscribe is not None:
            try:
                await self._unsubscribe()
            except Exception:
                log.warning("could not unsubscribe from job changes", exc_info=True)
        for task in [*self._tasks, *self._loads]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._loads, return_exceptions=True)
        await self._pipeline.stop_dispatching()
        await self._leases.stop()  # stops publishing for every partition before releasing it
        await self._pipeline.stop()
        WHEEL_TIMERS.set(0)

    @property
    def ready(self) -> bool:
        """Started, heartbeating within the lease TTL, and connected to NATS."""
        return self._started and self._leases.alive and self._publisher.connected

    @property
    def owned_partitions(self) -> dict[int, int]:
        """Partitions this replica holds now, with their lease epochs."""
        return self._leases.owned

    @property
    def wheel_size(self) -> int:
        return len(self._registry)

    # -- lease listener ---------------------------------------------------------------------------

    async def partitions_gained(self, grants: dict[int, int]) -> None:
        task = asyncio.create_task(self._sync.load(grants), name="timing-load")
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)

    async def partitions_lost(self, partitions: Sequence[int]) -> None:
        self._registry.forget_partitions(set(partitions))
        # A batch that passed its lease check before the loss may still be publishing: let it finish
        # before the lease is given to someone else. Its conditional advance may land later: harmless.
        await self._pipeline.drain_publishes()
