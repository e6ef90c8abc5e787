"""The status a new job is inserted with: decided by the job service's value, before the store writes it."""

from __future__ import annotations

from tests.unit.samples import CREATED

from schedsvc.domain.jobs import NewJob
from schedsvc.domain.models import CronSchedule, JobCreate, JobStatus, NatsTarget


def new_job(*, paused: bool, first_fire: bool) -> NewJob:
    body = JobCreate(
        name="nightly", schedule=CronSchedule(expression="0 3 * * *"), target=NatsTarget(subject="t.x"), paused=paused
    )
    return NewJob("acme", body, CREATED if first_fire else None, created_at=CREATED)


def test_a_job_with_a_fire_ahead_starts_active_and_one_without_starts_completed() -> None:
    assert new_job(paused=False, first_fire=True).status == JobStatus.ACTIVE
    assert new_job(paused=False, first_fire=False).status == JobStatus.COMPLETED


def test_a_job_created_paused_stays_paused_whether_or_not_a_fire_is_left() -> None:
    assert new_job(paused=True, first_fire=True).status == JobStatus.PAUSED
    assert new_job(paused=True, first_fire=False).status == JobStatus.PAUSED
