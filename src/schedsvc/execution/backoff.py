"""Retry policy arithmetic: exponential backoff with full jitter, bounded by attempts and event age. Pure."""

from __future__ import annotations

import random

from schedsvc.domain.models import RetryPolicy

# With minBackoffSeconds = 0 the exponential would stay at zero; grow from this base instead so that
# maxBackoffSeconds still means something.
_ZERO_MIN_BASE_SECONDS = 1.0
# 2**60 seconds is far beyond any maxBackoffSeconds; capping the exponent avoids float overflow.
_MAX_EXPONENT = 60


def backoff_ceiling(failed_attempts: int, min_seconds: float, max_seconds: float) -> float:
    """Upper bound of the wait after ``failed_attempts`` failures: ``min * 2**failed``, capped at ``max``."""
    if failed_attempts < 1:
        raise ValueError("failed_attempts must be at least 1")
    base = min_seconds if min_seconds > 0 else min(_ZERO_MIN_BASE_SECONDS, max_seconds)
    ceiling = base * 2.0 ** min(failed_attempts, _MAX_EXPONENT)
    return max(min_seconds, min(max_seconds, ceiling))


def backoff_delay(
    failed_attempts: int, min_seconds: float, max_seconds: float, rng: random.Random | None = None
) -> float:
    """Full jitter: a uniform wait between ``min_seconds`` and the exponential ceiling.

    Full jitter (rather than "exponential plus a little noise") spreads retries of many runs that failed
    together, e.g. during a target's outage, over the whole window instead of re-synchronising them.
    """
    ceiling = backoff_ceiling(failed_attempts, min_seconds, max_seconds)
    draw = (rng or random).random()
    return min_seconds + draw * (ceiling - min_seconds)


def next_retry_delay(
    policy: RetryPolicy,
    failed_attempts: int,
    age_seconds: float,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before the next attempt, or None when the run must fail now.

    ``failed_attempts`` is how many attempts have been made (all failed); ``age_seconds`` is the time since
    the fire's scheduled instant. A retry is allowed while attempts remain and the retry would still start
    within ``maxEventAgeSeconds`` of the scheduled instant. The first attempt is never refused for age:
    the age only bounds retries (a catch-up fire may legitimately start late).
    """
    if failed_attempts >= policy.max_attempts:
        return None
    delay = backoff_delay(failed_attempts, policy.min_backoff_seconds, policy.max_backoff_seconds, rng)
    if age_seconds + delay > policy.max_event_age_seconds:
        return None
    return delay
