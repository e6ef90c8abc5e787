"""When the client waits out a refusal and tries again: 429 and 503, within bounds, as ``Retry-After`` asks.

Policy only, no I/O: both clients ask :meth:`RequestRetry.delay` after every answer and do the waiting.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass

RETRY_AFTER = "Retry-After"
RETRIED_STATUSES = frozenset({429, 503})


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None when absent or bad."""
    value = headers.get(RETRY_AFTER)
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RequestRetry:
    """How often and how long the client waits out a 429 or 503 before raising it."""

    max_retries: int = 3
    """Retries after the first attempt (0: never retry)."""
    max_wait_seconds: float = 30.0
    """Longest single wait, whatever ``Retry-After`` says; a longer ask is raised at once."""
    backoff_seconds: float = 0.5
    """First wait when the answer has no ``Retry-After``; doubles with every retry."""

    def delay(self, status: int, headers: Mapping[str, str], retries_done: int) -> float | None:
        """Seconds to wait before trying again, or None to give the answer to the caller."""
        if status not in RETRIED_STATUSES or retries_done >= self.max_retries:
            return None
        asked = retry_after_seconds(headers)
        if asked is None:
            return min(self.backoff_seconds * 2.0**retries_done, self.max_wait_seconds)
        # Waiting less than asked would only be refused again; waiting longer than the bound is the
        # caller's call, so the error (with its retry_after) goes to them.
        return asked if asked <= self.max_wait_seconds else None
