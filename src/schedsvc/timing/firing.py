"""The firing pipeline: due jobs out of the wheel, planned, published, advanced, and armed again.

Stages, each with its own concurrency limit so a slow database delays the advances (and the jobs'
return to the wheel) without holding up the publication of the batches behind:

1. *dispatch*: pop up to ``FIRE_BATCH`` due jobs and hand them to a batch task;
2. *plan* the batch in one call into the Rust core (:func:`~schedsvc.timing.planning.plan_batch`);
3. *lease check* (the only one on this path): drop the plans of partitions no longer held;
4. *publish* the runs to JetStream;
5. *advance*: a writer records the missed fires and moves every ``nextRun`` on, combining waiting
   batches into one bulk (group commit);
6. *re-arm* the jobs whose next fire is within the horizon, in one batch insert into the wheel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from schedsvc.domain.models import RunMessage
from schedsvc.domain.timing import Advance, MissedFire
from schedsvc.observability.metrics import FIRE_LATENESS, FIRES_PUBLISHED, TIMING_DB_OPERATIONS, WHEEL_TIMERS
from schedsvc.store.base import FireRecorder, RunPublisher
from schedsvc.timing.leases import PartitionLeases
from schedsvc.timing.planning import Plan, TimedJob, plan_batch
from schedsvc.timing.registry import WheelRegistry, now_ms

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
GATHER_SECONDS = 0.005
"""After a partial batch, how long due timers gather before the next pop (adds at most this to lateness)."""
RETRY_DELAY_MS = 1000
"""When a batch could not be published or advanced, its jobs are tried again this much later."""


@dataclass(frozen=True, slots=True)
class _PendingAdvance:
    """A published batch waiting for a writer to advance its jobs."""

    plans: list[Plan]
    done: asyncio.Future[bool]


class FiringPipeline:
    """Fires the registry's due jobs; ``reload(ids)`` re-reads jobs whose database state won over ours."""

    def __init__(
        self,
        registry: WheelRegistry,
        leases: PartitionLeases,
        publisher: RunPublisher,
        recorder: FireRecorder,
        *,
        horizon_ms: int,
        reload: Callable[[list[str]], Awaitable[None]],
    ) -> None:
        self._registry = registry
        self._leases = leases
        self._publisher = publisher
        self._recorder = recorder
        self._horizon_ms = horizon_ms
        self._reload = reload
        self._batch_slots = asyncio.Semaphore(MAX_BATCHES_IN_FLIGHT)
        self._publish_slots = asyncio.Semaphore(MAX_PUBLISHING_BATCHES)
        self._advance_queue: deque[_PendingAdvance] = deque()
        self._advance_ready = asyncio.Event()
        self._batches: set[asyncio.Task[None]] = set()
        self._publishing: set[asyncio.Event] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            *(asyncio.create_task(self._advance_writer(), name="timing-advance") for _ in range(MAX_ADVANCING_BATCHES)),
            asyncio.create_task(self._dispatch_loop(), name="timing-dispatch"),
        ]

    async def stop_dispatching(self) -> None:
        dispatcher = self._tasks.pop()
        dispatcher.cancel()
        await asyncio.gather(dispatcher, return_exceptions=True)

    async def stop(self) -> None:
        """Let every batch finish, advances included, then stop the writers (dispatching stopped first)."""
        while self._batches:
            await asyncio.gather(*list(self._batches), return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain_publishes(self) -> None:
        """Wait for the batches publishing now (they passed their lease check; later ones check again)."""
        await asyncio.gather(*(publishing.wait() for publishing in list(self._publishing)))

    # -- dispatch ---------------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        registry = self._registry
        while True:
            jobs = registry.take_due(now_ms(), FIRE_BATCH)
            if jobs:
                await self._batch_slots.acquire()
                task = asyncio.create_task(self._fire_batch(jobs), name="timing-batch")
                self._batches.add(task)
                task.add_done_callback(self._batch_done)
                # After a partial batch, let the next due timers gather for a moment: at a steady few
                # thousand fires/s, one batch (a task, a publish round trip, a queued advance) per timer
                # costs more than the fires themselves. A full batch means a backlog: go on at once.
                await asyncio.sleep(0 if len(jobs) == FIRE_BATCH else GATHER_SECONDS)
                continue
            registry.wake.clear()
            deadline = registry.next_deadline()
            registry.sleeping_until_ms = deadline
            timeout = None if deadline is None else max(0, deadline - now_ms()) / 1000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(registry.wake.wait(), timeout)
            registry.sleeping_until_ms = None

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._batch_slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("fire batch crashed", exc_info=task.exception())

    # -- one batch --------------------------------------------------------------------------------

    async def _fire_batch(self, jobs: list[TimedJob]) -> None:
        """Publish a batch (stages 2-4), then record missed fires and advance ``nextRun`` (stage 5)."""
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
            stale = self._registry.landed(jobs)
            self._rearm([job for job in jobs if job.id not in stale], now_ms() + RETRY_DELAY_MS)
            if stale:
                await self._reload(stale)
            return
        stale = self._registry.landed(jobs)
        if not advanced_all:
            # Some job changed under us (an API write, or another replica): trust the database.
            await self._reload([plan.job.id for plan in plans])
        else:
            self._rearm_plans([plan for plan in plans if plan.job.id not in stale])
        if stale:
            await self._reload(stale)
        WHEEL_TIMERS.set(len(self._registry))

    async def _publish(self, jobs: list[TimedJob]) -> list[Plan]:
        """Plan the batch's fires and publish them, for the jobs whose lease is still held."""
        leases = self._leases
        planned = plan_batch(jobs, now_ms())
        # The lease check comes after planning (which takes a while for a large batch), right before
        # the publish it guards.
        plans = [plan for plan in planned if leases.holds(plan.job.partition, plan.job.epoch)]
        messages: list[RunMessage] = []
        partitions: list[int] = []
        for plan in plans:
            job = plan.job
            for run in plan.runs:
                messages.append(RunMessage(job.id, job.tenant, run.nominal_ms, run.due_ms, run.trigger, job.epoch))
                partitions.append(job.partition)
        if messages:
            await self._publisher.publish_runs(messages, partitions)
            published_ms = now_ms()
            for trigger, count in Counter(m.trigger for m in messages).items():
                FIRES_PUBLISHED.labels(trigger=trigger).inc(count)
            for m in messages:
                if m.trigger == "scheduled":
                    FIRE_LATENESS.observe(max(0, published_ms - m.due_ms) / 1000)
        return plans

    def _rearm_plans(self, plans: Sequence[Plan]) -> None:
        """Arm the advanced jobs whose next fire falls within the horizon (still under their lease)."""
        horizon = now_ms() + self._horizon_ms
        jobs = []
        registry, leases = self._registry, self._leases
        for plan in plans:
            job, following, due = plan.job, plan.next_run_ms, plan.next_due_ms
            if following is None or due is None or following > horizon or registry.armed(job.id) is not None:
                continue
            if leases.holds(job.partition, job.epoch):
                job.next_run_ms, job.due_ms, job.resumed_at, job.resumed_at_ms = following, due, None, None
                jobs.append(job)
        registry.arm(jobs)

    def _rearm(self, jobs: Sequence[TimedJob], at_ms: int) -> None:
        """Arm jobs again unchanged, due at ``at_ms`` (a failed batch is retried)."""
        retry = [
            job for job in jobs if self._registry.armed(job.id) is None and self._leases.holds(job.partition, job.epoch)
        ]
        self._registry.arm(retry, [at_ms] * len(retry))

    # -- advancing --------------------------------------------------------------------------------

    async def _advance(self, plans: list[Plan]) -> bool:
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

    async def _write_advances(self, plans: list[Plan]) -> int:
        """Record the missed fires, then move every job's ``nextRun`` on; return how many matched."""
        missed = [MissedFire(plan.job.id, plan.job.tenant, ms) for plan in plans for ms in plan.missed]
        if missed:
            await self._recorder.record_missed(missed, datetime.now(UTC))
            TIMING_DB_OPERATIONS.labels(kind="insert").inc(len(missed))
            TIMING_DB_OPERATIONS.labels(kind="bulk").inc()
        advances = [Advance(plan.job.id, plan.job.next_run_ms, plan.next_run_ms, plan.job.resumed_at) for plan in plans]
        matched = await self._recorder.advance(advances)
        TIMING_DB_OPERATIONS.labels(kind="update").inc(len(advances))
        TIMING_DB_OPERATIONS.labels(kind="bulk").inc()
        return matched
