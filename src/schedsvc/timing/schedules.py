"""Compile domain schedules into the Rust core's schedules; preview fires.

This package is the only importer of the extension ``schedsvc._timing``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from schedsvc import _timing
from schedsvc._timing import Schedule as CompiledSchedule
from schedsvc.domain.errors import InvalidScheduleError
from schedsvc.domain.models import (
    CalendarSchedule,
    CronSchedule,
    IntervalSchedule,
    OnceSchedule,
    Schedule,
)
from schedsvc.domain.time import from_ms, to_ms
from schedsvc.domain.wire import field_from_message


def _opt_ms(instant: datetime | None) -> int | None:
    return None if instant is None else to_ms(instant)


def compile_schedule(schedule: Schedule, *, created: datetime | None = None) -> CompiledSchedule:
    """The Rust schedule for a domain schedule; :class:`InvalidScheduleError` names the bad field.

    ``created`` fills the defaults that depend on when a job was made: an interval's anchor and a
    calendar schedule's anchor date (both otherwise default to the start bound or to now).
    """
    base = created or datetime.now(UTC)
    start, end, jitter = _opt_ms(schedule.start_at), _opt_ms(schedule.end_at), schedule.jitter_seconds * 1000
    try:
        match schedule:
            case CronSchedule():
                _zone(schedule.timezone)
                return _timing.Schedule.cron(schedule.expression, schedule.timezone, start, end, jitter)
            case IntervalSchedule():
                anchor = schedule.anchor or schedule.start_at or base
                return _timing.Schedule.interval(schedule.seconds * 1000, to_ms(anchor), start, end, jitter)
            case CalendarSchedule():
                zone = _zone(schedule.timezone)
                anchor_date = schedule.anchor or (schedule.start_at or base).astimezone(zone).date()
                return _timing.Schedule.calendar(
                    schedule.every,
                    schedule.unit,
                    schedule.time,
                    schedule.timezone,
                    anchor_date.isoformat(),
                    start,
                    end,
                    jitter,
                )
            case OnceSchedule():
                return _timing.Schedule.once(to_ms(schedule.at), start, end, jitter)
    except InvalidScheduleError:
        raise
    except ValueError as exc:
        raise InvalidScheduleError(str(exc), _field_of(str(exc))) from None
    raise InvalidScheduleError(f"unknown schedule kind {type(schedule).__name__}", "schedule.kind")


def with_defaults(schedule: Schedule, created: datetime) -> Schedule:
    """The schedule with creation-time defaults made explicit, so every replica computes the same fires."""
    match schedule:
        case IntervalSchedule(anchor=None):
            return msgspec.structs.replace(schedule, anchor=schedule.start_at or created)
        case CalendarSchedule(anchor=None):
            local: date = (schedule.start_at or created).astimezone(_zone(schedule.timezone)).date()
            return msgspec.structs.replace(schedule, anchor=local)
    return schedule


def preview(schedule: dict[str, Any], after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire instants strictly after ``after``, as aware datetimes in the schedule's zone.

    Takes the same JSON shape as the API (e.g. ``{"kind": "cron", "expression": "0 9 * * MON-FRI",
    "timezone": "Europe/Berlin"}``); raises ``ValueError`` with a clear message for an invalid schedule.
    """
    if after.tzinfo is None:
        raise ValueError("after must be an aware datetime")
    if not 1 <= count <= 10_000:
        raise ValueError("count must be between 1 and 10000")
    try:
        parsed: Schedule = msgspec.convert(schedule, Schedule, strict=False)  # type: ignore[arg-type,unused-ignore]
    except msgspec.ValidationError as exc:
        # The field named the way the API names it in a problem detail (``schedule.timezone``).
        error = field_from_message(str(exc), None, "")
        raise InvalidScheduleError(error.message, f"schedule.{error.field}" if error.field else "schedule") from None
    return upcoming_fires(parsed, after, count)


def upcoming_fires(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` nominal fires of a domain schedule strictly after ``after``, in its zone."""
    compiled = compile_schedule(schedule, created=after)
    zone = _zone(getattr(schedule, "timezone", "UTC"))
    return [from_ms(ms, zone) for ms in compiled.next_n(to_ms(after), count)]


def fires_in_range(schedule: Schedule, created: datetime, first: datetime, last: datetime, limit: int) -> list[int]:
    """Nominal fires (epoch ms) of a stored job's schedule from ``first`` to ``last``, both inclusive,
    earliest first, at most ``limit``: one batch call into the Rust core. ``created`` is the job's
    creation instant (the defaults of its schedule depend on it)."""
    compiled = compile_schedule(schedule, created=created)
    return compiled.fires_between(to_ms(first) - 1, to_ms(last), limit)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as "America"
        raise InvalidScheduleError(f"unknown time zone {name!r}", "schedule.timezone") from None


_FIELD_BY_MESSAGE = (
    ("time zone", "schedule.timezone"),
    ("end before start", "schedule.endAt"),
    ("cron", "schedule.expression"),
    ("every_ms", "schedule.seconds"),
    ("unit", "schedule.unit"),
    ("time must", "schedule.time"),
    ("every must", "schedule.every"),
)
"""Words of the core's error messages, and the request field each one is about (the first match wins)."""


def _field_of(message: str) -> str:
    """Best guess of the offending field from the core's message, for problem details."""
    lowered = message.lower()
    return next((field for words, field in _FIELD_BY_MESSAGE if words in lowered), "schedule")
