"""What the pages show beyond the raw fields: schedules in words, upcoming fires with DST changes marked,
and the run chart (an SVG drawn on the server, so the page needs no script)."""

from __future__ import annotations

import dataclasses
import functools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cron_descriptor import get_description  # a maintained cron-to-English library, not a hand-written one

from schedsvc.domain.models import (
    CalendarSchedule,
    CronSchedule,
    IntervalSchedule,
    OnceSchedule,
    Run,
    RunStatus,
    Schedule,
)
from schedsvc.timing import upcoming_fires


@functools.lru_cache(maxsize=4096)
def _cron_words(expression: str) -> str:
    try:
        return str(get_description(expression))
    except Exception:  # the library's errors have no common base; the expression itself then
        return expression


def schedule_in_words(schedule: Schedule) -> str:
    match schedule:
        case CronSchedule():
            return f"{_cron_words(schedule.expression)} ({schedule.timezone})"
        case IntervalSchedule():
            return f"Every {_duration(schedule.seconds)}"
        case CalendarSchedule():
            unit = schedule.unit[:-1] if schedule.every == 1 else schedule.unit
            every = "" if schedule.every == 1 else f"{schedule.every} "
            return f"Every {every}{unit} at {schedule.time} ({schedule.timezone})"
        case OnceSchedule():
            return f"Once, at {schedule.at.isoformat()}"
    return str(schedule)


def _duration(seconds: int) -> str:
    for size, name in ((86_400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0:
            count = seconds // size
            return name if count == 1 else f"{count} {name}s"
    return "second" if seconds == 1 else f"{seconds} seconds"


@dataclasses.dataclass(frozen=True)
class Fire:
    at: datetime
    offset_change: str | None
    """e.g. "UTC offset +01:00 → +02:00": the first fire after a daylight-saving transition."""


def next_fires(schedule: Schedule, now: datetime, count: int = 10) -> list[Fire]:
    """The next fires in the schedule's zone, each fire after an offset change marked."""
    fires = upcoming_fires(schedule, now, count)
    zone = ZoneInfo(getattr(schedule, "timezone", "UTC"))
    previous = now.astimezone(zone).utcoffset()
    marked = []
    for at in fires:
        offset = at.utcoffset()
        change = None
        if previous is not None and offset is not None and offset != previous:
            change = f"UTC offset {_offset(previous)} → {_offset(offset)}"
        marked.append(Fire(at, change))
        previous = offset
    return marked


def _offset(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def lateness_seconds(run: Run) -> float | None:
    if run.started_at is None:
        return None
    return max(0.0, (run.started_at - run.scheduled_at).total_seconds())


@dataclasses.dataclass(frozen=True)
class Bar:
    x: float
    y: float
    height: float
    status: str
    label: str


@dataclasses.dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    max_label: str
    bar_width: float


MAX_BAR_WIDTH = 24.0


def run_chart(runs: list[Run], width: int = 600, height: int = 120) -> Chart | None:
    """One bar per run, oldest left: its height the lateness (started minus scheduled), its class the outcome.

    Runs that never started (missed, queued) get a short bar so their outcome still shows.
    """
    if not runs:
        return None
    ordered = sorted(runs, key=lambda r: r.scheduled_at)
    lateness = [lateness_seconds(r) for r in ordered]
    top = max([v for v in lateness if v is not None] + [1.0])
    slot = min(width / len(ordered), MAX_BAR_WIDTH + 2)
    bars = []
    for i, (run, late) in enumerate(zip(ordered, lateness, strict=True)):
        bar_height = max(4.0, (late or 0.0) / top * (height - 4)) if late is not None else 4.0
        status = run.status.value if isinstance(run.status, RunStatus) else str(run.status)
        late_text = "not started" if late is None else f"{late:.1f}s late"
        label = f"{run.scheduled_at:%Y-%m-%d %H:%M:%S} UTC: {status}, {late_text}"
        bars.append(Bar(i * slot + 1, height - bar_height, bar_height, status, label))
    return Chart(width, height, bars, f"{top:.1f}s", max(1.0, slot - 2))
