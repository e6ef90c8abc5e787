"""The timing service: owned partitions' due jobs in the Rust timing wheel, fires published to JetStream.

Order of writes for every fire (``docs/design/timing.md`` has the crash analysis):

1. publish the run message (message id = run id ``jobId:scheduledMs``; JetStream drops a repeat),
2. insert the ``missed`` run records the catch-up plan produced (idempotent: ``_id`` = run id),
3. advance ``nextRun`` with a conditional update ``{_id, nextRun: <old>, status: "active"}``.

A crash before 3 leaves ``nextRun`` where it was, so whoever serves the partition next publishes the
same fires again and JetStream (then the run record) drops them; a crash after 3 left nothing undone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from pymongo.asynchronous.database import AsyncDatabase

from schedsvc._timing import Schedule as CompiledSchedule
from schedsvc._timing import TimingWheel
from schedsvc.bus.nats import NatsRunBus
from schedsvc.config import Settings
from schedsvc.domain import RunMessage, Schedule, describe_partitions
from schedsvc.observability.metrics import (
    CATCHUP_DECISIONS,
    FIRE_LATENESS,
    FIRES_PUBLISHED,
    TIMING_DB_OPERATIONS,
    WHEEL_TIMERS,
)
from schedsvc.store.leases import MongoLeaseStore
from schedsvc.store.timing import Advance, MissedFire, MongoTimingStore
from schedsvc.timing.catchup import MISFIRE_GRACE_SECONDS, PlannedRun, Policy, plan_catchup
from schedsvc.timing.leases import PartitionLeases
from schedsvc.timing.schedules import compile_schedule, from_ms, to_ms

log = logging.getLogger(__name__)

FIRE_BATCH = 1000
"""Most fires taken from the wheel, planned, published and advanced together."""
MAX_PUBLISHING_BATCHES = 4
"""Batches publishing at once (overlaps JetStream round trips)."""
MAX_ADVANCING_BATCHES = 2
"""Bulk writes at once: bounds how much a burst queues in front of lease renewal and the API on the
shared MongoDB connections."""
ADVANCE_BULK_MAX = 2000
"""Most advances one bulk write carries: batches waiting for a writer are combined (group commit), so
bulks grow with the load instead of staying as small as the batches the wheel hands out."""
MAX_BATCHES_IN_FLIGHT = 128
"""Batches popped from the wheel but not yet advanced: how far publication may run ahead of a slow
database (a crash then re-publishes at most this many batches, which JetStream drops as duplicates)."""
RETRY_DELAY_MS = 1000
"""When a batch could not be published or advanced, its jobs are tried again this much later."""
OVERDUE_ENUMERATION_LIMIT = 10_000
"""Most overdue fires enumerated one by one; beyond, fires before the catch-up window are skipped."""
CHANGE_BATCH = 500
FULL_RESCAN_EVERY = 6
"""Every sixth horizon scan reads every due job (the others only those entering the horizon)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def job_seed(job_id: str) -> int:
    """The jitter seed of a job: a stable hash of its id (the same on every replica)."""
    return int.from_bytes(hashlib.blake2b(job_id.encode(), digest_size=8).digest(), "big") >> 1


_Plan = tuple["_Job", list[PlannedRun], list[int], int | None]
"""A job with its fires to publish, missed fires to record, and new ``nextRun``."""


@dataclass(frozen=True, slots=True)
class _PendingAdvance:
    """A published batch waiting for a writer to advance its jobs."""

    plans: list[_Plan]
    done: asyncio.Future[bool]


@dataclass(slots=True)
class _Job:
    """What the wheel needs to fire one job; ``next_run_ms`` mirrors the job's ``nextRun``."""

    id: str
    tenant: str
    partition: int
    epoch: int
    version: int
    compiled: CompiledSchedule
    seed: int
    policy: Policy
    window_seconds: int
    next_run_ms: int
    resumed_at: datetime | None
    key: int
    handle: int | None = None
    loaded_at: float = 0.0


class TimingService:
    """Leaderless timing: leases partitions, keeps their due jobs in the wheel, publishes fires.

    ``start()`` joins the cluster and returns once this replica holds its share; ``stop()`` releases
    every lease as soon as in-flight publishes are done. ``ready`` says whether it is heartbeating.
    """

    def __init__(
        self, settings: Settings, db: AsyncDatabase[dict[str, Any]], bus: NatsRunBus, *, member: str | None = None
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._store = MongoTimingStore(db, settings.run_retention_days)
        self._lease_store = MongoLeaseStore(db)
        self.member = member or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._horizon_ms = int(settings.horizon_seconds * 1000)
        self._wheel = TimingWheel(_now_ms(), 1)
        self._leases: PartitionLeases | None = None
        self._jobs: dict[str, _Job] = {}
        self._by_key: dict[int, _Job] = {}
        self._next_key = 0
        self._in_flight: set[str] = set()
        self._stale: set[str] = set()
        self._changed: set[str] = set()
        self._changed_event = asyncio.Event()
        self._wake = asyncio.Event()
        self._sleep_until_ms: int | None = None
        self._batch_slots = asyncio.Semaphore(MAX_BATCHES_IN_FLIGHT)
        self._publish_slots = asyncio.Semaphore(MAX_PUBLISHING_BATCHES)
        self._advance_queue: deque[_PendingAdvance] = deque()
        self._advance_ready = asyncio.Event()
        self._advancers: list[asyncio.Task[None]] = []
        self._batches: set[asyncio.Task[None]] = set()
        self._publishing: set[asyncio.Event] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._loads: set[asyncio.Task[None]] = set()
        self._unsubscribe: Any = None
        self._started = False
        self._scanned_until_ms: int | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        partitions = await self._store.cluster_partitions(self._settings.partitions)
        if partitions != self._settings.partitions:
            log.warning(
                "the cluster has %d partitions (settings say %d); using the cluster's",
                partitions,
                self._settings.partitions,
            )
        self._leases = PartitionLeases(
            self._lease_store,
            self.member,
            partitions,
            ttl_seconds=self._settings.lease_ttl_seconds,
            heartbeat_seconds=self._settings.heartbeat_seconds,
            listener=self,
        )
        self._unsubscribe = await self._bus.job_changes(self._on_job_change)
        self._advancers = [
            asyncio.create_task(self._advance_writer(), name="timing-advance") for _ in range(MAX_ADVANCING_BATCHES)
        ]
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="timing-dispatch"),
            asyncio.create_task(self._changes_loop(), name="timing-changes"),
            asyncio.create_task(self._rescan_loop(), name="timing-rescan"),
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
        assert self._leases is not None
        await self._leases.stop()  # stops publishing for every partition before releasing it
        await self._drain_batches()
        for task in self._advancers:
            task.cancel()
        await asyncio.gather(*self._advancers, return_exceptions=True)
        WHEEL_TIMERS.set(0)

    @property
    def ready(self) -> bool:
        """Started, heartbeating within the lease TTL, and connected to NATS."""
        return self._started and self._leases is not None and self._leases.alive and self._bus.connected

    @property
    def owned_partitions(self) -> dict[int, int]:
        """Partitions this replica holds now, with their lease epochs."""
        return {} if self._leases is None else self._leases.owned

    @property
    def wheel_size(self) -> int:
        return len(self._wheel)

    # -- lease listener ---------------------------------------------------------------------------

    async def partitions_gained(self, grants: dict[int, int]) -> None:
        task = asyncio.create_task(self._load(grants), name="timing-load")
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)

    async def partitions_lost(self, partitions: Sequence[int]) -> None:
        lost = set(partitions)
        for job in [j for j in self._jobs.values() if j.partition in lost]:
            self._forget(job.id)
        # A batch that passed its lease check before the loss may still be publishing: let it finish
        # before the lease is given to someone else. Its conditional advance may land later: harmless.
        await self._drain_publishes()

    # -- loading ----------------------------------------------------------------------------------

    async def _load(self, grants: Mapping[int, int]) -> None:
        until = from_ms(_now_ms() + self._horizon_ms)
        loaded = 0
        try:
            async for batch in self._store.due_jobs(sorted(grants), until):
                TIMING_DB_OPERATIONS.labels(kind="read").inc()
                for doc in batch:
                    loaded += self._admit(doc)
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("loading partitions %s failed; the next rescan retries", sorted(grants))
        log.info("loaded %d due jobs of partitions %s", loaded, describe_partitions(grants))

    def _admit(self, doc: Mapping[str, Any]) -> bool:
        """Bring the wheel in line with one job document; True if the job is (now) in the wheel."""
        job_id = str(doc["_id"])
        assert self._leases is not None
        epoch = self._leases.epoch_of(int(doc.get("partition", -1)))
        next_run: datetime | None = doc.get("nextRun")
        if epoch is None or doc.get("status") != "active" or next_run is None:
            self._forget(job_id)
            return False
        if job_id in self._in_flight:
            self._stale.add(job_id)  # reloaded when its batch is done
            return False
        next_ms = to_ms(next_run)
        if next_ms > _now_ms() + self._horizon_ms:
            self._forget(job_id)
            return False
        version = int(doc.get("version") or 0)
        resumed_at: datetime | None = doc.get("resumedAt")
        current = self._jobs.get(job_id)
        if (
            current is not None
            and current.version == version
            and current.epoch == epoch
            and current.next_run_ms >= next_ms
            and current.resumed_at == resumed_at
            and current.handle is not None
        ):
            return True  # this replica is already as far as the database, or further (a stale read)
        if current is not None and current.version == version:
            compiled = current.compiled
        else:
            try:
                schedule: Schedule = msgspec.convert(doc["schedule"], Schedule, strict=False)
                compiled = compile_schedule(schedule, created=doc.get("createdAt"))
            except Exception:
                log.exception("job %s has a schedule that does not compile; skipped", job_id)
                self._forget(job_id)
                return False
        self._forget(job_id)
        catchup = doc.get("catchup") or {}
        job = _Job(
            id=job_id,
            tenant=str(doc.get("tenant", "")),
            partition=int(doc["partition"]),
            epoch=epoch,
            version=version,
            compiled=compiled,
            seed=job_seed(job_id),
            policy=catchup.get("policy", "latest"),
            window_seconds=int(catchup.get("windowSeconds", 3600)),
            next_run_ms=next_ms,
            resumed_at=resumed_at,
            key=self._new_key(),
        )
        self._schedule(job)
        return True

    def _new_key(self) -> int:
        self._next_key += 1
        return self._next_key

    def _schedule(self, job: _Job) -> None:
        due = int(job.compiled.fire_instant(job.next_run_ms, job.seed))
        job.handle = self._wheel.insert(due, job.key)
        job.loaded_at = time.monotonic()
        self._jobs[job.id] = job
        self._by_key[job.key] = job
        if self._sleep_until_ms is None or due < self._sleep_until_ms:
            self._wake.set()

    def _forget(self, job_id: str) -> None:
        job = self._jobs.pop(job_id, None)
        if job is not None:
            self._by_key.pop(job.key, None)
            if job.handle is not None:
                self._wheel.cancel(job.handle)
                job.handle = None

    # -- job changes and rescans ------------------------------------------------------------------

    async def _on_job_change(self, job_id: str, partition: int) -> None:
        if self._leases is not None and self._leases.epoch_of(partition) is not None:
            self._changed.add(job_id)
            self._changed_event.set()

    async def _changes_loop(self) -> None:
        while True:
            await self._changed_event.wait()
            self._changed_event.clear()
            while self._changed:
                ids = [self._changed.pop() for _ in range(min(CHANGE_BATCH, len(self._changed)))]
                try:
                    await self._reload(ids)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("reloading changed jobs failed; the next rescan catches up")

    async def _reload(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        docs = await self._store.jobs_by_id(ids)
        TIMING_DB_OPERATIONS.labels(kind="read").inc()
        found = {str(d["_id"]) for d in docs}
        for job_id in ids:
            if job_id not in found:
                if job_id in self._in_flight:
                    self._stale.add(job_id)
                else:
                    self._forget(job_id)  # deleted
        for doc in docs:
            self._admit(doc)

    async def _rescan_loop(self) -> None:
        """Load jobs as they enter the horizon; now and then rescan everything as a safety net."""
        period = max(0.5, self._settings.horizon_seconds / 3)
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
        assert self._leases is not None
        owned = self._leases.owned
        if not owned:
            return
        started = time.monotonic()
        until_ms = _now_ms() + self._horizon_ms
        after = None if full or self._scanned_until_ms is None else from_ms(self._scanned_until_ms - 1000)
        seen: set[str] = set()
        async for batch in self._store.due_jobs(sorted(owned), from_ms(until_ms), after=after):
            TIMING_DB_OPERATIONS.labels(kind="read").inc()
            for doc in batch:
                seen.add(str(doc["_id"]))
                self._admit(doc)
            await asyncio.sleep(0)
        self._scanned_until_ms = until_ms
        if full:
            # Jobs the scan no longer returns were paused, deleted or moved out of the horizon, unless
            # they were (re)loaded after the scan began and the scan could not see the change.
            for job in [j for j in self._jobs.values() if j.id not in seen and j.loaded_at < started]:
                if job.partition in owned and job.id not in self._in_flight:
                    self._forget(job.id)
        WHEEL_TIMERS.set(len(self._wheel))

    # -- firing -----------------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            now = _now_ms()
            keys, _deadlines = self._wheel.pop_due(now, FIRE_BATCH)
            if keys:
                jobs = [job for job in map(self._by_key.pop, keys, [None] * len(keys)) if job is not None]
                for job in jobs:
                    job.handle = None
                    self._jobs.pop(job.id, None)
                    self._in_flight.add(job.id)
                await self._batch_slots.acquire()
                task = asyncio.create_task(self._fire_batch(jobs), name="timing-batch")
                self._batches.add(task)
                task.add_done_callback(self._batch_done)
                await asyncio.sleep(0)
                continue
            self._wake.clear()
            deadline = self._wheel.next_deadline()
            self._sleep_until_ms = deadline
            timeout = None if deadline is None else max(0, deadline - _now_ms()) / 1000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._sleep_until_ms = None

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._batch_slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("fire batch crashed", exc_info=task.exception())

    async def _drain_batches(self) -> None:
        """Wait until every batch has finished, advances included (on stop)."""
        while self._batches:
            await asyncio.gather(*list(self._batches), return_exceptions=True)

    async def _drain_publishes(self) -> None:
        """Wait for the batches publishing now (they passed their lease check; later ones check again)."""
        await asyncio.gather(*(publishing.wait() for publishing in list(self._publishing)))

    def _plan(self, job: _Job, now: int) -> tuple[list[PlannedRun], list[int], int | None]:
        """Runs, missed fires to record, and the new ``nextRun`` (None: the job is complete)."""
        compiled, seed = job.compiled, job.seed
        fires: list[tuple[int, int]] = []
        dropped = 0
        nominal: int | None = job.next_run_ms
        while nominal is not None:
            due = int(compiled.fire_instant(nominal, seed))
            if due > now:
                break
            fires.append((nominal, due))
            if len(fires) >= OVERDUE_ENUMERATION_LIMIT:
                # A very long outage: skip the oldest fires wholesale (missed, counted, not recorded),
                # first to the catch-up window, then, if the window alone is too long, to the grace
                # period (whose fires run anyway and so stand in for "latest").
                grace_or_window = MISFIRE_GRACE_SECONDS + (job.window_seconds if dropped == 0 else 0)
                dropped += len(fires)
                fires = []
                nominal = compiled.next_after(max(nominal, now - grace_or_window * 1000 - 1))
                continue
            nominal = compiled.next_after(nominal)
        resumed_ms = None if job.resumed_at is None else to_ms(job.resumed_at)
        if len(fires) == 1 and resumed_ms is None and now - fires[0][1] <= MISFIRE_GRACE_SECONDS * 1000:
            return [PlannedRun(fires[0][0], fires[0][1], "scheduled")], [], nominal  # the common case
        plan = plan_catchup(
            fires,
            now_ms=now,
            policy=job.policy,
            window_seconds=job.window_seconds,
            resumed_at_ms=resumed_ms,
            dropped=dropped,
        )
        if plan.late:
            caught_up = sum(1 for r in plan.runs if r.trigger == "catchup")
            missed = plan.late - caught_up
            CATCHUP_DECISIONS.labels(policy=job.policy, decision="run").inc(caught_up)
            CATCHUP_DECISIONS.labels(policy=job.policy, decision="missed").inc(missed - plan.unrecorded)
            CATCHUP_DECISIONS.labels(policy=job.policy, decision="missed_unrecorded").inc(plan.unrecorded)
            log.info("job %s: %d late fires (%s): %d run, %d missed", job.id, plan.late, job.policy, caught_up, missed)
        return plan.runs, plan.missed, nominal

    async def _fire_batch(self, jobs: list[_Job]) -> None:
        """Publish a batch (stage 1), then record missed fires and advance ``nextRun`` (stage 2).

        The stages have separate concurrency limits, so a slow database delays the advances (and the
        jobs' return to the wheel) without holding up the publication of the batches behind.
        """
        try:
            async with self._publish_slots:
                publishing = asyncio.Event()
                self._publishing.add(publishing)
                try:
                    plans = await self._publish(jobs)
                finally:
                    self._publishing.discard(publishing)
                    publishing.set()
            advanced_all = await self._advance(plans)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Nothing is lost: nextRun did not move, and re-publishing is dropped as a duplicate.
            log.exception("a batch of %d jobs failed; retrying in %d ms", len(jobs), RETRY_DELAY_MS)
            self._retry(jobs)
            return
        finally:
            self._in_flight.difference_update(j.id for j in jobs)
        if not advanced_all:
            # Some job changed under us (an API write, or another replica): trust the database.
            await self._reload([job.id for job, *_ in plans])
        else:
            assert self._leases is not None
            horizon = _now_ms() + self._horizon_ms
            for job, _, _, nxt in plans:
                if nxt is None or nxt > horizon or job.id in self._stale or job.id in self._jobs:
                    continue
                if self._leases.holds(job.partition, job.epoch):
                    job.next_run_ms, job.resumed_at, job.key = nxt, None, self._new_key()
                    self._schedule(job)
        stale = [j.id for j in jobs if j.id in self._stale]
        if stale:
            self._stale.difference_update(stale)
            await self._reload(stale)
        WHEEL_TIMERS.set(len(self._wheel))

    async def _publish(self, jobs: list[_Job]) -> list[_Plan]:
        """Plan the batch's fires and publish them, for the jobs whose lease is still held."""
        assert self._leases is not None
        leases = self._leases
        now = _now_ms()
        plans = [(job, *self._plan(job, now)) for job in jobs if leases.holds(job.partition, job.epoch)]
        # Planning a large batch takes a while: publish only for leases that are still ours.
        plans = [p for p in plans if leases.holds(p[0].partition, p[0].epoch)]
        messages = [
            RunMessage(job.id, job.tenant, run.nominal_ms, run.due_ms, run.trigger, job.epoch)
            for job, runs, _, _ in plans
            for run in runs
        ]
        if messages:
            await self._bus.publish_runs(messages, [job.partition for job, runs, _, _ in plans for _ in runs])
            published_ms = _now_ms()
            for m in messages:
                FIRES_PUBLISHED.labels(trigger=m.trigger).inc()
                if m.trigger == "scheduled":
                    FIRE_LATENESS.observe(max(0, published_ms - m.due_ms) / 1000)
        return plans

    async def _advance(self, plans: list[_Plan]) -> bool:
        """Have a writer advance these jobs; True if every conditional update matched."""
        if not plans:
            return True
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._advance_queue.append(_PendingAdvance(plans, done))
        self._advance_ready.set()
        return await done

    async def _advance_writer(self) -> None:
        """Take every waiting batch (up to ``ADVANCE_BULK_MAX`` advances) and write them together."""
        queue = self._advance_queue
        while True:
            if not queue:
                self._advance_ready.clear()
                await self._advance_ready.wait()
                continue
            group = [queue.popleft()]
            size = len(group[0].plans)
            while queue and size + len(queue[0].plans) <= ADVANCE_BULK_MAX:
                size += len(queue[0].plans)
                group.append(queue.popleft())
            plans = [plan for pending in group for plan in pending.plans]
            try:
                matched = await self._write_advances(plans)
            except asyncio.CancelledError:
                for pending in group:
                    pending.done.cancel()
                raise
            except Exception as exc:
                for pending in group:
                    pending.done.set_exception(exc)
            else:
                # The count is for the whole bulk: on a shortfall every batch of the group re-reads.
                for pending in group:
                    pending.done.set_result(matched == len(plans))

    async def _write_advances(self, plans: list[_Plan]) -> int:
        """Record the missed fires, then move every job's ``nextRun`` on; return how many matched."""
        missed = [MissedFire(job.id, job.tenant, ms) for job, _, missed_ms, _ in plans for ms in missed_ms]
        if missed:
            await self._store.record_missed(missed, datetime.now(UTC))
            TIMING_DB_OPERATIONS.labels(kind="insert").inc(len(missed))
            TIMING_DB_OPERATIONS.labels(kind="bulk").inc()
        advances = [
            Advance(job.id, from_ms(job.next_run_ms), None if nxt is None else from_ms(nxt), job.resumed_at)
            for job, _, _, nxt in plans
        ]
        matched = await self._store.advance(advances)
        TIMING_DB_OPERATIONS.labels(kind="update").inc(len(advances))
        TIMING_DB_OPERATIONS.labels(kind="bulk").inc()
        return matched

    def _retry(self, jobs: Sequence[_Job]) -> None:
        assert self._leases is not None
        retry_at = _now_ms() + RETRY_DELAY_MS
        for job in jobs:
            self._in_flight.discard(job.id)
            if job.id in self._jobs or not self._leases.holds(job.partition, job.epoch):
                continue
            job.key = self._new_key()
            job.handle = self._wheel.insert(retry_at, job.key)
            self._jobs[job.id] = job
            self._by_key[job.key] = job
