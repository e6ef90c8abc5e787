"""Notifications: what the service tells a tenant about its jobs, as pure values and builders.

Three events, each reported once (never per retry): a run failed for good (its retries were exhausted and
it was dead-lettered), a failing job recovered (the first success after a final failure), and fires were
recorded as missed (one event per job per recording, with the count). The events travel from the
module that saw them to the notification sender over JetStream (``execution/notifications.py`` says why);
:class:`Notification` is also the JSON body the tenant's notification target receives.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import msgspec

from schedsvc.domain.models import run_id
from schedsvc.domain.time import from_ms
from schedsvc.domain.timing import MissedFire

NotificationType = Literal["run.failed", "job.recovered", "fires.missed"]
ERROR_CHARS = 512
"""Characters of a run's error carried in a ``run.failed`` notification."""


class Notification(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """The body of a notification call; fields that do not apply to its ``type`` are left out."""

    id: str
    """Unique per event, also sent as ``webhook-id`` (signed): a receiver deduplicates on it."""
    type: NotificationType
    job_id: str
    occurred_at: datetime
    run_id: str | None = None
    """``run.failed``, ``job.recovered``: the run that failed, or the first one that succeeded again."""
    scheduled_at: datetime | None = None
    attempts: int | None = None
    """``run.failed``: attempts made."""
    http_status: int | None = None
    """``run.failed``: the last attempt's status, when the target answered."""
    error: str | None = None
    """``run.failed``: why the last attempt failed."""
    missed_count: int | None = None
    """``fires.missed``: fires recorded as missed by this recording."""
    first_missed_at: datetime | None = None
    last_missed_at: datetime | None = None


class NotificationMessage(msgspec.Struct, frozen=True):
    """A notification on its way to the sender: the event and the tenant it belongs to."""

    tenant: str
    notification: Notification


def run_failed(
    tenant: str,
    job_id: str,
    scheduled_ms: int,
    *,
    attempts: int,
    error: str | None,
    http_status: int | None,
    now: datetime,
) -> NotificationMessage:
    """A run failed for good. The attempt count is part of the id, so a run that fails again after a
    retry on demand is a new event while a repeated report of the same failure is not."""
    notification = _about_run("run.failed", f"failed:{attempts}", job_id, scheduled_ms, now)
    notification.attempts = attempts
    notification.http_status = http_status
    notification.error = None if error is None else error[:ERROR_CHARS]
    return NotificationMessage(tenant, notification)


def job_recovered(tenant: str, job_id: str, scheduled_ms: int, now: datetime) -> NotificationMessage:
    """The first run to succeed after a run of the job failed for good."""
    return NotificationMessage(tenant, _about_run("job.recovered", "recovered", job_id, scheduled_ms, now))


def _about_run(kind: NotificationType, event: str, job_id: str, scheduled_ms: int, now: datetime) -> Notification:
    """An event about one run (one fire of the job); its id is the run id and ``event``."""
    rid = run_id(job_id, scheduled_ms)
    return Notification(
        id=f"{rid}:{event}",
        type=kind,
        job_id=job_id,
        occurred_at=now,
        run_id=rid,
        scheduled_at=from_ms(scheduled_ms),
    )


def fires_missed(fires: Sequence[MissedFire], now: datetime) -> list[NotificationMessage]:
    """One event per job among the fires one recording stored as missed, with their count and range."""
    by_job: dict[tuple[str, str], list[int]] = {}
    for fire in fires:
        by_job.setdefault((fire.tenant, fire.job_id), []).append(fire.scheduled_ms)
    messages = []
    for (tenant, job_id), instants in by_job.items():
        first, last = min(instants), max(instants)
        notification = Notification(
            id=f"{job_id}:missed:{first}:{len(instants)}",
            type="fires.missed",
            job_id=job_id,
            occurred_at=now,
            missed_count=len(instants),
            first_missed_at=from_ms(first),
            last_missed_at=from_ms(last),
        )
        messages.append(NotificationMessage(tenant, notification))
    return messages
