"""The run lifecycle's pure decisions that issue 14 changed: the overlap slot across retries, and the
attempt limit of a retry on demand."""

from __future__ import annotations

from datetime import UTC, datetime

from schedsvc.domain.lifecycle import JobFacts, RunFacts, Step, on_delivery, on_slot
from schedsvc.domain.models import RunStatus

NOW = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)
JOB = JobFacts(paused=False, max_attempts=3, max_event_age_seconds=60)


def facts(attempts: int, *, age: float = 1.0, limit: int | None = None, status: RunStatus | None = None) -> RunFacts:
    return RunFacts(
        status=status if status is not None else (RunStatus.QUEUED if attempts else None),
        attempts=attempts,
        lease_until=None,
        next_attempt_at=None,
        deliveries=attempts + 1,
        age_seconds=age,
        attempt_limit=limit,
    )


def test_a_first_attempt_without_the_slot_is_skipped_a_retry_waits_for_it() -> None:
    assert on_slot(True, 0).step == Step.ATTEMPT
    assert on_slot(True, 2).step == Step.ATTEMPT
    assert on_slot(False, 0).step == Step.SKIP
    waiting = on_slot(False, 1)  # a newer fire took the slot a retry lost: never run beside it
    assert waiting.step == Step.WAIT and waiting.delay > 0


def test_the_policy_bounds_attempts_and_age_but_not_a_retry_on_demand() -> None:
    assert on_delivery(facts(3), JOB, manual=False, now=NOW).step == Step.FAIL
    assert on_delivery(facts(1, age=120), JOB, manual=False, now=NOW).step == Step.FAIL
    # Retried on demand after 3 failed attempts, long after the fire: one more attempt, not two.
    assert on_delivery(facts(3, age=86_400, limit=4), JOB, manual=False, now=NOW).step == Step.ATTEMPT
    assert on_delivery(facts(4, age=86_400, limit=4), JOB, manual=False, now=NOW).step == Step.FAIL
    paused = JobFacts(paused=True, max_attempts=3, max_event_age_seconds=60)
    assert on_delivery(facts(3, limit=4), paused, manual=False, now=NOW).step == Step.ATTEMPT
    assert on_delivery(facts(0), paused, manual=False, now=NOW).step == Step.SKIP
