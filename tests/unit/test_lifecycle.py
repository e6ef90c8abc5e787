"""The run lifecycle's pure decisions: every path from what is stored and what happened to what comes next."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from schedsvc.domain.errors import StoreUnavailableError
from schedsvc.domain.lifecycle import (
    JOB_GONE,
    MAX_DELIVERIES,
    OVERLAP_BUFFER_FULL,
    OVERLAP_SKIPPED,
    JobFacts,
    RunFacts,
    Step,
    is_permanent,
    on_buffer,
    on_delivery,
    on_error,
    on_outcome,
    on_slot,
)
from schedsvc.domain.models import RunStatus

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
JOB = JobFacts(paused=False, max_attempts=3, max_event_age_seconds=3600)


def run(**changes: object) -> RunFacts:
    base = RunFacts(status=None, attempts=0, lease_until=None, next_attempt_at=None, deliveries=1, age_seconds=1.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.MISSED])
def test_a_final_run_is_acknowledged_whatever_else_holds(status: RunStatus) -> None:
    assert on_delivery(run(status=status, attempts=9, deliveries=10**6), None, manual=False, now=NOW).step == Step.ACK


def test_a_fire_of_a_deleted_job_never_recorded_is_acknowledged() -> None:
    d = on_delivery(run(), None, manual=False, now=NOW)
    assert d.step == Step.ACK and d.reason == JOB_GONE


@pytest.mark.parametrize(
    "stored",
    [
        # reopened for a retry on demand, its attempt not claimed yet
        run(status=RunStatus.QUEUED, attempts=2, attempt_limit=3),
        # waiting for an automatic retry (its delayed message came back, early or not)
        run(status=RunStatus.QUEUED, attempts=1, next_attempt_at=NOW + timedelta(seconds=30)),
        # its worker died mid-attempt
        run(status=RunStatus.RUNNING, attempts=1, lease_until=NOW - timedelta(seconds=1)),
    ],
)
def test_a_recorded_run_of_a_deleted_job_is_skipped_rather_than_left_unfinished(stored: RunFacts) -> None:
    d = on_delivery(stored, None, manual=False, now=NOW)
    assert d.step == Step.SKIP and d.reason == JOB_GONE


def test_a_run_of_a_deleted_job_running_under_a_live_lease_is_left_to_its_worker() -> None:
    live = run(status=RunStatus.RUNNING, attempts=1, lease_until=NOW + timedelta(seconds=7))
    assert on_delivery(live, None, manual=False, now=NOW).step == Step.ACK


def test_a_live_lease_elsewhere_puts_the_message_back_until_it_ends() -> None:
    d = on_delivery(
        run(status=RunStatus.RUNNING, attempts=1, lease_until=NOW + timedelta(seconds=7)), JOB, manual=False, now=NOW
    )
    assert d.step == Step.WAIT and 7 < d.delay < 8


def test_an_expired_lease_counts_the_interrupted_attempt() -> None:
    expired = NOW - timedelta(seconds=1)
    assert (
        on_delivery(run(status=RunStatus.RUNNING, attempts=1, lease_until=expired), JOB, manual=False, now=NOW).step
        == Step.ATTEMPT
    )
    d = on_delivery(run(status=RunStatus.RUNNING, attempts=3, lease_until=expired), JOB, manual=False, now=NOW)
    assert d.step == Step.FAIL and "no attempts left" in (d.reason or "")


def test_a_retry_not_yet_due_waits_for_it() -> None:
    d = on_delivery(
        run(status=RunStatus.QUEUED, attempts=1, next_attempt_at=NOW + timedelta(seconds=3)), JOB, manual=False, now=NOW
    )
    assert d == d.__class__(Step.WAIT, 3.0)


def test_a_retry_past_the_event_age_fails() -> None:
    d = on_delivery(run(status=RunStatus.QUEUED, attempts=1, age_seconds=7200), JOB, manual=False, now=NOW)
    assert d.step == Step.FAIL and "maxEventAgeSeconds" in (d.reason or "")


def test_a_message_delivered_too_often_fails() -> None:
    d = on_delivery(run(deliveries=MAX_DELIVERIES + 1), JOB, manual=False, now=NOW)
    assert d.step == Step.FAIL and "delivered" in (d.reason or "")


def test_paused_jobs_skip_scheduled_fires_but_run_manual_ones() -> None:
    paused = JobFacts(paused=True, max_attempts=3, max_event_age_seconds=3600)
    assert on_delivery(run(), paused, manual=False, now=NOW).step == Step.SKIP
    assert on_delivery(run(), paused, manual=True, now=NOW).step == Step.ATTEMPT


def test_overlap_skip_skips_only_first_attempts() -> None:
    assert on_slot(False, 0).step == Step.SKIP and on_slot(False, 0).reason == OVERLAP_SKIPPED
    # A retry that lost the slot waits for it: a fire holds the slot to its final outcome (issue 14).
    assert on_slot(False, 1).step == Step.WAIT
    assert on_slot(True, 0).step == Step.ATTEMPT


def test_overlap_buffer_one_waits_for_one_fire_and_skips_the_rest() -> None:
    # A fresh waiting fire's message comes back after about a lease, unless it is woken before.
    first = on_buffer("buffered", 31.0, 0.0, 3690.0)
    assert (first.step, first.delay) == (Step.WAIT, 31.0)
    full = on_buffer("full", 31.0, 0.0, 3690.0)
    assert full.step == Step.SKIP and full.reason == OVERLAP_BUFFER_FULL
    assert "still running" in OVERLAP_BUFFER_FULL  # reads like the skip reason, which clients may match
    freed = on_buffer("free", 31.0, 500.0, 3690.0)  # released in between: back at once to take the slot
    assert freed.step == Step.WAIT and freed.delay < 1.0


def _deliveries_while_waiting(wait_seconds: float, lease: float, longest_wait: float) -> int:
    """How often a waiting fire's message is delivered while its holder keeps the slot for ``wait_seconds``."""
    waited, deliveries = 0.0, 0
    while waited < wait_seconds:
        deliveries += 1
        decision = on_buffer("buffered", lease, waited, longest_wait)
        assert decision.step == Step.WAIT and decision.delay >= lease
        waited += decision.delay
    return deliveries


@pytest.mark.parametrize(
    ("max_event_age", "max_backoff"),
    [(3600.0, 60.0), (86_400.0, 3600.0), (7 * 86_400.0, 86_400.0)],  # the default; a day; the largest allowed
)
def test_a_fire_waits_behind_a_long_holder_without_running_out_of_deliveries(
    max_event_age: float, max_backoff: float
) -> None:
    # Before: a recheck every lease, so a holder retrying for ~52 minutes made the waiting fire fail as
    # "delivered too often". Now the recheck grows with the wait, up to the holder's longest possible hold.
    lease = 31.0
    longest = max_event_age + max_backoff + lease
    deliveries = _deliveries_while_waiting(longest, lease, longest)
    assert deliveries <= 45  # about BUFFER_RECHECKS plus the doubling from a lease, whatever the policy
    assert deliveries + 50 < MAX_DELIVERIES  # and leaves room for the fire's own attempts (at most 50)
    # Early rechecks stay short, so a lost wake-up costs a fresh wait little.
    assert on_buffer("buffered", lease, 40.0, longest).delay <= 2 * lease


def test_outcomes() -> None:
    assert on_outcome(True, None, None).step == Step.SUCCEED
    assert on_outcome(False, "HTTP 500", 2.5) == on_outcome(False, "HTTP 500", 2.5)
    retry = on_outcome(False, "HTTP 500", 2.5)
    assert (retry.step, retry.delay, retry.reason) == (Step.RETRY, 2.5, "HTTP 500")
    fail = on_outcome(False, "HTTP 404", None)
    assert (fail.step, fail.reason) == (Step.FAIL, "HTTP 404")


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (msgspec.ValidationError("bad job"), True),
        (RecursionError("deep"), True),
        (OverflowError("big"), True),
        (KeyError("x"), True),
        (TypeError("bug"), True),
        (StoreUnavailableError("down"), False),
        (ConnectionResetError("reset"), False),
        (TimeoutError(), False),
        (RuntimeError("unknown"), False),
    ],
)
def test_worker_errors_are_classified(error: Exception, permanent: bool) -> None:
    assert is_permanent(error) is permanent
    decision = on_error(error, deliveries=1)
    assert decision.step == (Step.FAIL if permanent else Step.WAIT)
    assert type(error).__name__ in (decision.reason or "")


def test_transient_errors_are_bounded_by_deliveries() -> None:
    assert on_error(StoreUnavailableError("down"), MAX_DELIVERIES - 1).step == Step.WAIT
    assert on_error(StoreUnavailableError("down"), MAX_DELIVERIES).step == Step.FAIL
