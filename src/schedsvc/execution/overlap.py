"""A job's running slot, as a worker takes, keeps and gives it up (overlaps ``skip`` and ``bufferOne``).

Overlap ``skip``: a run's first attempt must take its job's running slot (one atomic conditional upsert,
see ``RunLedger.acquire_job_slot``); a fire that finds it held by a live run is recorded ``skipped``.
The run keeps the slot from its first attempt to its final outcome, across retries: while it waits for a
retry the slot's lease runs until the retry is due (plus an ack deadline), and an interrupted attempt
keeps it for its redelivery. Only a final outcome (succeeded, failed, skipped) releases it.

Overlap ``bufferOne`` uses the same slot, plus one waiting place on it (``buffered``). A first attempt that
finds the slot held tries to take that place (one conditional write: of several fires, exactly one gets it);
the others are skipped as under ``skip``. The waiting fire's message goes back to JetStream, unacknowledged,
first for about a lease and then for longer as the wait grows (``lifecycle.on_buffer``), so it cannot be
lost: whichever replica gets it next looks at the slot again. The holder's final outcome hands the slot to
the waiting fire in the same conditional write that would free it, and then publishes a wake-up message for
it (its own message id), so it starts at once rather than when its message comes back. If the holder's
worker dies before the hand-over, its run's redelivery (already final) does the hand-over; if it dies after
it, the waiting fire's own message comes back at its next recheck and finds the slot its own. A fire woken twice
(wake-up and its own message) still calls the target once: its attempt is claimed in the run ledger like any
other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from schedsvc.domain.jobs import JobForRun
from schedsvc.domain.lifecycle import Decision, on_buffer, on_slot
from schedsvc.domain.models import RunMessage, run_id
from schedsvc.domain.runs import BufferedFire
from schedsvc.store.base import RunBus, RunLedger

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Claim:
    """What one delivery holds: the attempt it claimed, if any (the error paths hand it back), and its
    job's slot."""

    run_id: str
    job_id: str
    attempt: int | None = None
    slot: bool = False
    """This delivery took (or re-took) its job's running slot (overlap ``skip``)."""
    overlap_skip: bool = False
    """The job's overlap policy is ``skip``: a final outcome releases whatever slot the run still holds."""
    buffer_one: bool = False
    """The job's overlap policy is ``bufferOne``: a final outcome hands the slot to the fire waiting behind
    it, if the run holds the slot."""
    settled: bool = False
    """The delivery was acked or nak'd (nothing left to hand back)."""


class JobSlots:
    """Takes, keeps and gives up jobs' running slots in the run ledger, and wakes a fire handed one."""

    def __init__(self, runs: RunLedger, bus: RunBus, lease: timedelta) -> None:
        self._runs = runs
        self._bus = bus
        self._lease = lease

    async def take(self, msg: RunMessage, claim: Claim, job: JobForRun, attempts: int, age_seconds: float) -> Decision:
        """Take the job's slot, or wait behind its holder (``bufferOne``), or be skipped. ``age_seconds``:
        how long ago the fire was due (about as long as it has been waiting)."""
        now = datetime.now(UTC)
        claim.slot = await self._runs.acquire_job_slot(job.id, claim.run_id, now, now + self._lease)
        if claim.slot and job.overlap == "bufferOne" and attempts == 0:
            await self._runs.unbuffer(job.id, claim.run_id)  # it may have taken a lapsed slot while waiting
        if claim.slot or attempts > 0 or job.overlap != "bufferOne":
            return on_slot(claim.slot, attempts)
        waited = await self._runs.buffer_behind_job_slot(msg, job.partition, now)
        # A holder keeps the slot until its retries stop: the fire's age limit, plus one backoff and attempt.
        longest_wait = job.retry.max_event_age_seconds + job.retry.max_backoff_seconds + self._lease.total_seconds()
        return on_buffer(waited, self._lease.total_seconds() + 1.0, age_seconds, longest_wait)

    async def keep(self, claim: Claim, until: datetime) -> None:
        """The run is not over (a retry is due, or the attempt is still running): its slot's lease runs
        until ``until``."""
        if claim.slot:
            await self._runs.extend_job_slot(claim.job_id, claim.run_id, until)

    async def release(self, claim: Claim) -> None:
        """The run is final: free its job's slot if it holds it (a no-op write for another holder), or, for
        ``bufferOne``, hand it to the fire waiting behind it and wake that fire."""
        if claim.buffer_one:
            claim.slot = claim.buffer_one = False
            waiting = await self._runs.hand_over_job_slot(claim.job_id, claim.run_id, datetime.now(UTC) + self._lease)
            if waiting is not None:
                await self._wake(waiting)
        elif claim.slot or claim.overlap_skip:
            claim.slot = claim.overlap_skip = False
            await self._runs.release_job_slot(claim.job_id, claim.run_id)

    async def _wake(self, waiting: BufferedFire) -> None:
        """Publish a wake-up for a fire that was waiting and now holds its job's slot. Best effort: if it is
        lost, the fire's own message comes back at its next recheck and finds the slot its own."""
        msg = waiting.message
        try:
            await self._bus.publish_runs(
                [msg], [waiting.partition], [f"{run_id(msg.job_id, msg.scheduled_ms)}:unbuffered"]
            )
        except Exception as exc:
            log.warning("could not wake the fire waiting behind run of job %s: %s", msg.job_id, exc)
