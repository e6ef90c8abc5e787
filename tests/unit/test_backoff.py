"""Retry arithmetic: exponential ceilings, full jitter within [min, ceiling], attempt and age bounds."""

from __future__ import annotations

import random

import pytest

from schedsvc.domain.models import RetryPolicy
from schedsvc.execution.backoff import backoff_ceiling, backoff_delay, next_retry_delay


def test_ceiling_doubles_from_min_and_caps_at_max() -> None:
    assert [backoff_ceiling(n, 1.0, 60.0) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]


def test_ceiling_never_below_min_and_huge_attempt_counts_do_not_overflow() -> None:
    assert backoff_ceiling(1, 5.0, 5.0) == 5.0
    assert backoff_ceiling(10_000, 1.0, 86_400.0) == 86_400.0


def test_zero_min_still_grows_towards_max() -> None:
    assert backoff_ceiling(1, 0.0, 60.0) == 2.0
    assert backoff_ceiling(10, 0.0, 60.0) == 60.0
    assert backoff_ceiling(3, 0.0, 0.0) == 0.0


def test_ceiling_rejects_zero_failures() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        backoff_ceiling(0, 1.0, 2.0)


@pytest.mark.parametrize("failed", [1, 2, 3, 6, 12])
def test_full_jitter_stays_within_min_and_ceiling_and_spreads(failed: int) -> None:
    rng = random.Random(1234)
    delays = [backoff_delay(failed, 1.0, 60.0, rng) for _ in range(2000)]
    ceiling = backoff_ceiling(failed, 1.0, 60.0)
    assert all(1.0 <= d <= ceiling for d in delays)
    # Full jitter: the draws cover the window rather than clustering at the ceiling.
    spread = ceiling - 1.0
    assert min(delays) < 1.0 + 0.1 * spread
    assert max(delays) > 1.0 + 0.9 * spread


def test_jitter_uses_the_given_rng_deterministically() -> None:
    a = [backoff_delay(3, 0.5, 30.0, random.Random(7)) for _ in range(3)]
    b = [backoff_delay(3, 0.5, 30.0, random.Random(7)) for _ in range(3)]
    assert a == b


def test_retry_until_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, min_backoff_seconds=1.0, max_backoff_seconds=10.0)
    rng = random.Random(0)
    assert next_retry_delay(policy, 1, age_seconds=0.0, rng=rng) is not None
    assert next_retry_delay(policy, 2, age_seconds=0.0, rng=rng) is not None
    assert next_retry_delay(policy, 3, age_seconds=0.0, rng=rng) is None
    assert next_retry_delay(policy, 4, age_seconds=0.0, rng=rng) is None


def test_single_attempt_policy_never_retries() -> None:
    assert next_retry_delay(RetryPolicy(max_attempts=1), 1, age_seconds=0.0) is None


def test_no_retry_that_would_start_after_max_event_age() -> None:
    policy = RetryPolicy(
        max_attempts=50, min_backoff_seconds=10.0, max_backoff_seconds=10.0, max_event_age_seconds=100.0
    )
    assert next_retry_delay(policy, 1, age_seconds=89.0) == 10.0
    assert next_retry_delay(policy, 1, age_seconds=90.5) is None
    assert next_retry_delay(policy, 1, age_seconds=500.0) is None
