"""Keeping the wheel in line with the database: gained partitions loaded, change notices applied,
horizon rescans as the safety net for lost notices."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping

from schedsvc.domain.jobs import JobNotice, JobTiming
from schedsvc.domain.models import JobStatus
from schedsvc.domain.rules import describe_partitions
from schedsvc.domain.time import from_ms, to_ms
from schedsvc.observability.metrics import TIMING_DB_OPERATIONS, WHEEL_TIMERS
from schedsvc.store.base import DueJobReader
from schedsvc.timing.leases import PartitionLeases
from schedsvc.timing.planning import TimedJob, due_instants, job_seed
from schedsvc.timing.registry import KnownVersions, WheelRegistry, now_ms
from schedsvc.timing.schedules import compile_schedule

log = logging.getLogger(__name__)

CHANGE_BATCH = 500
FULL_RESCAN_EVERY = 6
"""Every sixth horizon scan reads every due job (the others only those entering the horizon)."""


class WheelSync:
    """Brings the registry in line with what the database (or a change notice) says about jobs."""

    def __init__(
        self, reader: DueJobReader, registry: WheelRegistry, leases: PartitionLeases, *, horizon_seconds: float
    ) -> None:
        self._reader = reader
        self._registry = registry
        self._leases = leases
        self._horizon_seconds = horizon_seconds
        self._horizon_ms = int(horizon_seconds * 1000)
        self._known = KnownVersions()
        self._changed: set[str] = set()
        self._changed_event = asyncio.Event()
        self._scanned_until_ms: int | None = None

    async def load(self, grants: Mapping[int, int]) -> None:
        until = from_ms(now_ms() + self._horizon_ms)
        loaded = 0
        try:
            async for batch in self._reader.due_jobs(sorted(grants), until):
                TIMING_DB_OPERATIONS.labels(kind="read").inc()
                loaded += self._admit(batch)
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("loading partitions %s failed; the next rescan retries", sorted(grants))
        log.info("loaded %d due jobs of partitions %s", loaded, describe_partitions(grants))

    def _admit(self, views: Iterable[JobTiming]) -> int:
        """Bring the wheel in line with these jobs as read from the database; returns how many are armed."""
        registry = self._registry
        horizon = now_ms() + self._horizon_ms
        arm: list[TimedJob] = []
        gone: list[str] = []
        current_count = 0
        for view in views:
            self._known.saw(view.id, view.version)
            epoch = self._leases.epoch_of(view.partition)
            if epoch is None or view.status != JobStatus.ACTIVE or view.next_run is None:
                gone.append(view.id)
                continue
            if registry.in_flight(view.id):
                registry.mark_stale(view.id)  # reloaded when its batch is done
                continue
            next_ms = to_ms(view.next_run)
            if next_ms > horizon:
                gone.append(view.id)
                continue
            current = registry.armed(view.id)
            if current is not None and current.next_run_ms > next_ms and current.schedule == view.schedule:
                # Same schedule, nextRun behind this replica's own advance: the view was taken before
                # the advance landed (a change notice overtaken by a fire), and nothing else moves
                # nextRun back without changing the schedule.
                next_ms = current.next_run_ms
            if (
                current is not None
                and current.version == view.version
                and current.epoch == epoch
                and current.next_run_ms >= next_ms
                and current.resumed_at == view.resumed_at
            ):
                current_count += 1  # this replica is already as far as the database, or further (a stale read)
                continue
            if current is not None and current.schedule == view.schedule:
                compiled = current.compiled  # compiled once per schedule, not per change of the job
            else:
                try:
                    compiled = compile_schedule(view.schedule, created=view.created_at)
                except Exception:
                    log.exception("job %s has a schedule that does not compile; skipped", view.id)
                    gone.append(view.id)
                    continue
            arm.append(
                TimedJob(
                    id=view.id,
                    tenant=view.tenant,
                    partition=view.partition,
                    epoch=epoch,
                    version=view.version,
                    schedule=view.schedule,
                    compiled=compiled,
                    seed=job_seed(view.id),
                    policy=view.catchup.policy,
                    window_seconds=view.catchup.window_seconds,
                    next_run_ms=next_ms,
                    due_ms=0,
                    resumed_at=view.resumed_at,
                    resumed_at_ms=None if view.resumed_at is None else to_ms(view.resumed_at),
                    grace_ms=view.catchup.misfire_grace_seconds * 1000,
                )
            )
        registry.forget(gone)
        for job, due in zip(arm, due_instants(arm), strict=True):
            job.due_ms = due
        registry.arm(arm)
        return current_count + len(arm)

    async def on_job_change(self, notice: JobNotice) -> None:
        if self._leases.epoch_of(notice.partition) is None:
            return
        view = notice.timing
        if view is not None and not self._registry.in_flight(view.id):
            # The notice carries the job as the write left it: no read back. Notices from several API
            # replicas may arrive out of order, so one older than what this replica knows is ignored.
            if self._known.newer(view.id, view.version):
                self._admit([view])
            return
        self._changed.add(notice.job_id)  # deleted, or in flight: read it back
        self._changed_event.set()

    async def changes_loop(self) -> None:
        while True:
            await self._changed_event.wait()
            self._changed_event.clear()
            while self._changed:
                ids = [self._changed.pop() for _ in range(min(CHANGE_BATCH, len(self._changed)))]
                try:
                    await self.reload(ids)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("reloading changed jobs failed; the next rescan catches up")

    async def reload(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        views = await self._reader.jobs_by_id(ids)
        TIMING_DB_OPERATIONS.labels(kind="read").inc()
        found = {view.id for view in views}
        deleted = []
        for job_id in ids:
            if job_id not in found:
                if self._registry.in_flight(job_id):
                    self._registry.mark_stale(job_id)
                else:
                    deleted.append(job_id)
                    self._known.deleted(job_id)
        self._registry.forget(deleted)
        self._admit(views)

    async def rescan_loop(self) -> None:
        """Load jobs as they enter the horizon; now and then rescan everything as a safety net."""
        period = max(0.5, self._horizon_seconds / 3)
        rounds = 0
        while True:
            await asyncio.sleep(period)
            rounds += 1
            try:
                await self._rescan(full=rounds % FULL_RESCAN_EVERY == 0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rescan failed")

    async def _rescan(self, *, full: bool) -> None:
        """Admit the jobs due within the horizon.

        An incremental scan reads only jobs that entered the horizon since the previous scan (with a
        second of overlap); jobs already nearer were loaded then, or when their partition was gained,
        and changes reach the wheel through notices. A full scan also catches a change whose notice
        was lost, and forgets jobs the database no longer has due.
        """
        owned = self._leases.owned
        if not owned:
            return
        started = time.monotonic()
        until_ms = now_ms() + self._horizon_ms
        after = None if full or self._scanned_until_ms is None else from_ms(self._scanned_until_ms - 1000)
        seen: set[str] = set()
        async for batch in self._reader.due_jobs(sorted(owned), from_ms(until_ms), after=after):
            TIMING_DB_OPERATIONS.labels(kind="read").inc()
            seen.update(view.id for view in batch)
            self._admit(batch)
            await asyncio.sleep(0)
        self._scanned_until_ms = until_ms
        if full:
            # Jobs the scan no longer returns were paused, deleted or moved out of the horizon, unless
            # they were (re)loaded after the scan began and the scan could not see the change.
            self._registry.forget(
                job.id
                for job in self._registry.armed_jobs()
                if job.id not in seen and job.loaded_at < started and job.partition in owned
            )
        WHEEL_TIMERS.set(len(self._registry))
