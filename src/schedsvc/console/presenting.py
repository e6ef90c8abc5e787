"""What the pages show beyond the raw fields: schedules in words, upcoming fires with DST changes marked,
the run chart (an SVG drawn on the server, so the page needs no script), where notifications go, a job's
JSON without its header values, and a bulk action's outcome in words."""

from __future__ import annotations

import dataclasses
import functools
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from cron_descriptor import get_description  # a maintained cron-to-English library, not a hand-written one

from schedsvc.domain.models import (
    CalendarSchedule,
    CronSchedule,
    IntervalSchedule,
    Job,
    NotificationTarget,
    OnceSchedule,
    Run,
    RunStatus,
    Schedule,
)
from schedsvc.domain.wire import MAX_COUNTED_MATCHES, BulkJobResult
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


# -- notifications and headers --------------------------------------------------------------------

HIDDEN_VALUE = "(hidden)"
"""What the console shows instead of a header's value: values may hold credentials (the API returns them)."""


@dataclasses.dataclass(frozen=True)
class NotificationShown:
    """Where a job's notifications go, as its page says it: never a header's value, only its name."""

    source: Literal["job", "tenant", "none"]
    """The job's own target, the tenant's default (``/tenant/settings``), or neither."""
    url: str | None
    header_names: list[str]


def notification_shown(own: NotificationTarget | None, tenant_default: NotificationTarget | None) -> NotificationShown:
    """The job's own target wins; without one, the tenant's default applies (as execution decides it)."""
    if own is not None:
        return NotificationShown("job", own.url, sorted(own.headers))
    if tenant_default is not None:
        return NotificationShown("tenant", tenant_default.url, sorted(tenant_default.headers))
    return NotificationShown("none", None, [])


def definition_json(job: Job) -> str:
    """The job as the API returns it, indented, with every header value (target's, notify's) hidden."""
    data: dict[str, Any] = msgspec.to_builtins(job)
    for section in ("target", "notify"):
        headers = (data.get(section) or {}).get("headers")
        if headers:
            data[section]["headers"] = dict.fromkeys(headers, HIDDEN_VALUE)
    return msgspec.json.format(msgspec.json.encode(data), indent=2).decode()


# -- bulk actions ---------------------------------------------------------------------------------

_BULK_DONE = {"pause": "paused", "resume": "resumed", "delete": "deleted"}
_BULK_LEFT = {"pause": "not active", "resume": "not paused", "delete": "changed meanwhile"}
"""Why a matched job was not changed (the action applies only to jobs in one status; a write is pinned to
the version the job was selected at)."""


def bulk_outcome_in_words(action: str, result: BulkJobResult) -> str:
    """``{matched, changed, more}`` as a sentence, saying what to do when more jobs remain."""
    done, left = _BULK_DONE[action], _BULK_LEFT[action]
    if result.matched == 0:
        return f"No job matches these conditions; none was {done}."
    at_least = "At least " if result.matched >= MAX_COUNTED_MATCHES else ""
    matched = f"{at_least}{result.matched:,} {'job' if result.matched == 1 else 'jobs'} matched"
    if result.more:
        return f"{matched}; {result.changed:,} {_were(result.changed)} {done}. More remain: repeat the action."
    if result.changed == 0:
        return f"{matched}; none was {done}: {'it was' if result.matched == 1 else 'they were'} {left}."
    sentence = f"{matched}; {result.changed:,} {_were(result.changed)} {done}."
    return sentence if result.changed >= result.matched else f"{sentence} The others were {left}."


def _were(count: int) -> str:
    return "was" if count == 1 else "were"
