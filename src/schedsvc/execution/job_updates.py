"""What a run's end changes on its job besides the run record: its ``lastRun`` (and the API's response cache
of the job), its failing mark, and the notifications of a failure or a recovery."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from schedsvc.domain.models import RunMessage, RunStatus
from schedsvc.domain.runs import scheduled_at
from schedsvc.execution.notifications import JobHealth
from schedsvc.store.base import RunLedger

JobChanged = Callable[[str, str], Awaitable[None]]
"""Called with (tenant, job id) after a run changed a job's lastRun (the app bumps the cache version)."""


class JobUpdates:
    """Updates a run's job when the run ends. Every update is idempotent, so the redelivery of a run already
    final makes them again: its worker may have died between recording the run and updating the job."""

    def __init__(self, runs: RunLedger, health: JobHealth, on_job_changed: JobChanged | None = None) -> None:
        self._runs = runs
        self._health = health
        self._on_job_changed = on_job_changed

    async def failed(self, msg: RunMessage, attempts: int, error: str | None, http_status: int | None) -> None:
        """Before a failure is recorded, like its dead letter: report it, mark the job failing (never raises)."""
        await self._health.failed(msg, attempts, error, http_status)

    async def ended(self, msg: RunMessage, status: RunStatus, *, repeat: bool = False) -> None:
        """Once the run's end is recorded (``repeat``: again, for a redelivery of a run already final): record
        it as the job's lastRun, then, for a success, clear the failing mark and report a recovery."""
        if await self._runs.update_job_last_run(msg.job_id, scheduled_at(msg), status) and self._on_job_changed:
            await self._on_job_changed(msg.tenant, msg.job_id)
        if status == RunStatus.SUCCEEDED:
            await self._health.succeeded(msg, repeat=repeat)
