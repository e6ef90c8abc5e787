"""Publishes again the retries on demand whose message may never have reached the run stream (an outbox
re-publisher).

A retry on demand reopens its run in the database and only then publishes its message (``job_service/runs.py``);
when the publish fails it undoes the reopen. Two holes remain: the undo fails too (the database is down at that
moment), or the API process dies between the reopen and the publish. Either leaves the run ``queued`` with no
message, for ever. The reopen marks the run (``reopenedAt``) until its attempt is claimed, it ends, or the
reopen is undone, so a run still marked minutes after its reopen is one whose message may be lost: the sweeper
publishes it again under the reopen's own message id (``domain.runs.retry_message_id``).

Publishing again is always safe. Within the stream's 15-minute duplicate window the stream drops the message if
the first one was stored after all; beyond it a second message is harmless, because the attempt is claimed in
the run ledger (``claim_attempt``): the message that comes second finds the run running or final. For the same
reason every execution replica sweeps, with no lease or leader: two replicas publishing the same run at once
publish the same message id, and the stream keeps one. Runs waiting for an automatic retry are ``queued`` too,
but carry no mark (their message is in the stream, delayed), so they are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import timedelta

from schedsvc.domain.rules import partition_of
from schedsvc.domain.time import utcnow
from schedsvc.observability.metrics import RETRIES_REPUBLISHED
from schedsvc.store.base import RunLedger, RunPublisher

log = logging.getLogger(__name__)

SWEEP_INTERVAL_SECONDS = 60.0
"""Between sweeps. A stranded retry waits at most about this long beyond :data:`STRANDED_AFTER_SECONDS`; the
sweep itself is one indexed read of a few documents, so once a minute costs nothing per replica."""
SWEEP_JITTER = 0.2
"""Each pause is the interval ± this fraction, so replicas started together do not sweep in lockstep."""
FIRST_SWEEP_SECONDS = 10.0
"""The first sweep, soon after start (or after one interval, if shorter): a retry stranded while no execution
process ran (the whole service restarted after a crash) goes out within seconds, not a full interval later."""
STRANDED_AFTER_SECONDS = 120.0
"""How old a reopen must be before its run counts as stranded. The API publishes within a second of the reopen
and a worker claims the attempt soon after; two minutes leaves room for a busy stream, while every re-publish
stays well inside the 15-minute duplicate window that makes it a no-op when the first message was stored."""
SWEEP_BATCH = 200
"""Runs published per sweep at most (one bounded read and one batch publish); more wait for the next sweep,
oldest first."""


class RetrySweeper:
    """Every ``interval`` seconds (with jitter), publishes again the runs reopened more than ``stranded_after``
    seconds ago whose attempt has not been claimed (``RunLedger.stranded_retries``).

    Never raises out of its task: a sweep that fails (the database or NATS down) is logged and the next one tries
    again. Lifecycle: :meth:`start` once, :meth:`stop` to end the task.
    """

    def __init__(
        self,
        runs: RunLedger,
        publisher: RunPublisher,
        partitions: int,
        *,
        interval: float = SWEEP_INTERVAL_SECONDS,
        stranded_after: float = STRANDED_AFTER_SECONDS,
        batch: int = SWEEP_BATCH,
        rng: random.Random | None = None,
    ) -> None:
        self._runs = runs
        self._publisher = publisher
        self._partitions = partitions
        self._interval = interval
        self._stranded_after = timedelta(seconds=stranded_after)
        self._batch = batch
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("RetrySweeper already started")
        self._task = asyncio.create_task(self._loop(), name="schedsvc-execution-retry-sweeper")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stopping = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def sweep(self) -> int:
        """One sweep: publish the stranded retries again; returns how many the stream took as new (the others
        were duplicates of a message it already had). Raises what the ledger or the bus raise."""
        stranded = await self._runs.stranded_retries(utcnow() - self._stranded_after, self._batch)
        if not stranded:
            return 0
        new = await self._publisher.publish_runs(
            [s.message for s in stranded],
            # The rule every publisher of a job's fires uses; the one consumer reads every partition's subject.
            [partition_of(s.message.job_id, self._partitions) for s in stranded],
            [s.message_id for s in stranded],
        )
        RETRIES_REPUBLISHED.inc(new)
        log.info(
            "re-published %d stranded retr%s on demand (%d already in the stream)",
            len(stranded),
            "y" if len(stranded) == 1 else "ies",
            len(stranded) - new,
        )
        return new

    async def _loop(self) -> None:
        pause = min(FIRST_SWEEP_SECONDS, self._interval)
        # Not `while True`: a cancellation that lands inside the NATS client can come out as its own error
        # (publish_async turns CancelledError into TooManyStalledMsgsError), which would keep the loop alive.
        while not self._stopping:
            await asyncio.sleep(pause)
            try:
                await self.sweep()
            except Exception as exc:  # an outage: the runs stay marked, the next sweep finds them again
                if not self._stopping:
                    log.warning("sweeping stranded retries on demand failed: %s: %s", type(exc).__name__, exc)
            pause = self._interval * self._rng.uniform(1 - SWEEP_JITTER, 1 + SWEEP_JITTER)
