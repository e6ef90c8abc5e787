"""Values of the API's types that unit tests start from, so each test states only what it relies on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schedsvc.domain.models import CatchupPolicy, CronSchedule, Job, JobStatus, NatsTarget, RetryPolicy

CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def a_job(**fields: Any) -> Job:
    """An active job as the API returns it, at version 1, created at :data:`CREATED`; ``fields`` replace
    any of its fields (by their Python names)."""
    defaults: dict[str, Any] = {
        "id": "j1",
        "name": "nightly",
        "schedule": CronSchedule(expression="0 3 * * *"),
        "target": NatsTarget(subject="tenant.dev.x"),
        "retry": RetryPolicy(),
        "catchup": CatchupPolicy(),
        "overlap": "allow",
        "tags": [],
        "metadata": {},
        "status": JobStatus.ACTIVE,
        "next_run": None,
        "last_run": None,
        "last_run_status": None,
        "created_at": CREATED,
        "updated_at": CREATED,
        "version": 1,
    }
    return Job(**(defaults | fields))
