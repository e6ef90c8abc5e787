"""The execution module's entry point: pulls run messages from JetStream and runs them, boundedly.

One durable pull consumer is shared by every worker process; each process fetches only as many messages
as it has free slots (``max_concurrent_runs``), so a busy process leaves work to idle ones and nothing
waits in a local queue past its ack deadline. Beside it, every process sweeps for retries on demand whose
message was lost and publishes them again (``execution/sweeper.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from schedsvc.config import Settings
from schedsvc.execution._pump import DeliveryPump
from schedsvc.execution._tenants import TenantDirectory
from schedsvc.execution.job_updates import JobChanged, JobUpdates
from schedsvc.execution.notifications import JobHealth, NotificationReporter, NotificationSender
from schedsvc.execution.sweeper import STRANDED_AFTER_SECONDS, SWEEP_INTERVAL_SECONDS, RetrySweeper
from schedsvc.execution.targets import TargetCaller
from schedsvc.execution.worker import RunWorker
from schedsvc.observability.metrics import RUN_QUEUE_PENDING, RUNS_IN_PROGRESS
from schedsvc.store.base import RunBus, RunDelivery, RunLedger, RunSubscription, TenantDeliveryStore

log = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 1.0
"""Longest a fetch waits for messages; also bounds how long :meth:`ExecutionService.stop` waits for it."""
FETCH_BATCH_MAX = 64
FETCH_ERROR_PAUSE_SECONDS = 1.0
PENDING_SAMPLE_SECONDS = 5.0
DEFAULT_SHUTDOWN_GRACE_SECONDS = 20.0
MAX_ACK_PENDING = 20_000
"""Consumer-wide: messages handed out and not yet acked. Runs waiting for a delayed retry (``nak`` with a
delay) stay pending, so this must be far above the concurrency; concurrency is bounded per process."""


class ExecutionService:
    """Runs jobs' targets for the run messages timing and the API publish.

    Lifecycle: ``await start()`` once; ``ready`` is True while it fetches; ``await stop()`` stops fetching,
    lets in-flight runs finish for up to ``shutdown_grace_seconds``, then interrupts the rest (their
    attempts count and their messages go back to JetStream at once).

    ``retry_sweep_seconds`` and ``stranded_retry_seconds`` are the sweeper's interval and how old a reopen
    must be to count as stranded (``execution/sweeper.py``; tests shorten them).
    """

    def __init__(
        self,
        settings: Settings,
        bus: RunBus,
        *,
        runs: RunLedger,
        tenants: TenantDeliveryStore,
        shutdown_grace_seconds: float = DEFAULT_SHUTDOWN_GRACE_SECONDS,
        on_job_changed: JobChanged | None = None,
        retry_sweep_seconds: float = SWEEP_INTERVAL_SECONDS,
        stranded_retry_seconds: float = STRANDED_AFTER_SECONDS,
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._runs = runs
        self._grace = shutdown_grace_seconds
        self._capacity = max(1, settings.max_concurrent_runs)
        # Shared by the worker and the notification sender; what needs I/O (following tenant changes, the
        # HTTP client) starts in start().
        self._directory = TenantDirectory(tenants, settings, bus)
        self._job_updates = JobUpdates(runs, JobHealth(NotificationReporter(bus), runs), on_job_changed)
        self._subscription: RunSubscription | None = None
        self._pump: DeliveryPump[RunDelivery] | None = None
        self._caller: TargetCaller | None = None
        self._worker: RunWorker | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._stopping = False
        self._unfollow_tenants: Callable[[], Awaitable[None]] | None = None
        self._notifications: NotificationSender | None = None
        # settings.partitions, which every replica must set to the cluster's count: the partition only names the
        # subject, and the one durable consumer reads every partition's subject whatever the count.
        self._sweeper = RetrySweeper(
            runs, bus, settings.partitions, interval=retry_sweep_seconds, stranded_after=stranded_retry_seconds
        )

    @property
    def ready(self) -> bool:
        """Fetching runs and connected to NATS (for the readiness probe)."""
        return self._pump is not None and self._pump.fetching and self._bus.connected

    async def start(self) -> None:
        """Bind the durable consumer and start fetching."""
        if self._pump is not None:
            raise RuntimeError("ExecutionService already started")
        self._subscription = await self._bus.run_subscription(
            ack_wait_seconds=self._settings.run_ack_wait_seconds, max_ack_pending=MAX_ACK_PENDING
        )
        self._caller = TargetCaller(self._settings, self._bus)
        self._unfollow_tenants = await self._directory.follow(self._bus)  # rotated secrets are used at once
        self._worker = RunWorker(
            self._settings, self._bus, self._runs, self._directory, self._caller, self._job_updates
        )
        # Notifications have their own consumer, tasks and HTTP client: they never hold up a run.
        self._notifications = NotificationSender(self._settings, self._bus, self._runs, self._directory)
        await self._notifications.start()
        self._pump = DeliveryPump(
            self._subscription,
            self._run,
            capacity=self._capacity,
            batch_max=FETCH_BATCH_MAX,
            fetch_timeout=FETCH_TIMEOUT_SECONDS,
            error_pause=FETCH_ERROR_PAUSE_SECONDS,
            what="run messages",
            hand_back_when_stopping=True,
        )
        self._pump.start("schedsvc-execution-fetch")
        self._sampler = asyncio.create_task(self._sample_pending(), name="schedsvc-execution-pending")
        self._sweeper.start()
        log.info("execution started: up to %d concurrent runs", self._capacity)

    async def stop(self) -> None:
        """Stop fetching, hand back what was received but not started, let in-flight runs finish up to the
        grace period, hand back the rest."""
        if self._pump is None or self._stopping:
            return
        self._stopping = True
        await self._sweeper.stop()
        await self._pump.stop_fetching()
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self._subscription is not None:
            # Before waiting for the runs in flight: a message this process received but did not start
            # goes back to the stream now (nak, no delay) for another replica, not after its ack deadline.
            with contextlib.suppress(Exception):
                handed = await self._subscription.hand_back_unfetched(FETCH_TIMEOUT_SECONDS)
                if handed:
                    log.info("handed back %d run message(s) received while stopping", handed)
        interrupted = await self._pump.drain(self._grace)
        if interrupted:
            log.warning("interrupting %d run(s) still in flight after %.0fs", interrupted, self._grace)
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.close()
        if self._notifications is not None:
            await self._notifications.stop()
        if self._unfollow_tenants is not None:
            with contextlib.suppress(Exception):
                await self._unfollow_tenants()
        if self._caller is not None:
            await self._caller.aclose()
        log.info("execution stopped")

    async def _run(self, delivery: RunDelivery) -> None:
        assert self._worker is not None
        RUNS_IN_PROGRESS.inc()
        try:
            await self._worker.process(delivery)
        finally:
            RUNS_IN_PROGRESS.dec()

    async def _sample_pending(self) -> None:
        assert self._subscription is not None
        while True:
            with contextlib.suppress(Exception):
                RUN_QUEUE_PENDING.set(await self._subscription.pending())
            await asyncio.sleep(PENDING_SAMPLE_SECONDS)
