"""Instants: the one conversion between epoch milliseconds (the Rust core's and BSON's precision) and
aware datetimes, and the service's notion of now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_ms(instant: datetime) -> int:
    """Epoch milliseconds of an aware datetime (exact: no float rounding)."""
    return (instant - _EPOCH) // _MS


def from_ms(ms: int, tz: tzinfo | None = None) -> datetime:
    """Aware datetime of epoch milliseconds (UTC unless ``tz`` is given); integer arithmetic, so exact in
    every year (a float is not, far from 1970)."""
    instant = _EPOCH + ms * _MS
    return instant.astimezone(tz) if tz is not None else instant


def utcnow() -> datetime:
    """Now, truncated to the millisecond BSON stores, so responses equal what a re-read returns."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
