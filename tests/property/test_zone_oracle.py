"""Cron and calendar schedules of ``schedsvc._timing`` against ``zoneinfo``, in every zone and every year.

The Rust core builds its zones from the TZif bytes ``zoneinfo`` reads (``schedsvc.timing.zonedb``), so
both must agree on every offset from year 1 to 9999: local mean time before a zone's first transition,
the explicit transitions, and the zone's POSIX rule after the last one (which the core maps into one
400-year cycle). Zones are drawn from ``zoneinfo.available_timezones()``; instants from anywhere in the
supported range, or right around one of the zone's transitions in a random year, so the DST rules of
docs/schedules.md are exercised in every era:

* fixed-time cron expressions (``S M H * * *``, ``M H * * *``) and calendar schedules name a wall time:
  in a gap it fires at the end of the gap, in an overlap once, at the first pass, and a search that
  starts in the second pass moves on to the next day;
* wildcard cron expressions (``S <minutes> * * * *``) fire at every instant whose wall clock matches:
  never in a gap, in both passes of an overlap.

The references use only ``zoneinfo`` and ``datetime`` arithmetic. Example counts follow the
``TIMING_EXAMPLES`` / ``TIMING_RANDOM`` variables, like the other timing property tests.
"""

from __future__ import annotations

import calendar
import os
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedsvc._timing import Schedule

PROFILE = settings(
    max_examples=int(os.environ.get("TIMING_EXAMPLES", "200")),
    deadline=None,
    derandomize=not os.environ.get("TIMING_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow],
)

ZONES = sorted(zoneinfo.available_timezones())
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)
# A few days inside 0001-01-01 .. 9999-12-31, so every local date the references visit exists.
LOW = (datetime(1, 1, 4, tzinfo=UTC) - EPOCH) // SECOND
HIGH = (datetime(9999, 12, 27, tzinfo=UTC) - EPOCH) // SECOND
# Wall times on earlier local dates may denote instants before year 1, which datetime cannot hold; they
# are all before LOW, so the references skip them.
FIRST_DAY = date(1, 1, 3)


def local(t: int, tz: ZoneInfo) -> datetime:
    """Naive local wall time of epoch second ``t``."""
    return (EPOCH + t * SECOND).astimezone(tz).replace(tzinfo=None)


def offset(t: int, tz: ZoneInfo) -> int:
    return int(((EPOCH + t * SECOND).astimezone(tz).utcoffset() or timedelta()) // SECOND)


def transitions_in_year(tz: ZoneInfo, year: int) -> list[int]:
    """Epoch seconds of the offset changes in ``year`` (daily scan, then bisection)."""
    start = (datetime(year, 1, 1, tzinfo=UTC) - EPOCH) // SECOND
    out = []
    for day in range(366):
        lo, hi = start + day * 86_400, start + (day + 1) * 86_400
        if offset(lo, tz) != offset(hi, tz):
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if offset(mid, tz) == offset(lo, tz) else (lo, mid)
            out.append(hi)
    return out


@st.composite
def zones_and_instants(draw: st.DrawFn) -> tuple[str, int]:
    """A zone, and an epoch second anywhere in years 1-9999 or within a day and a half of a transition."""
    zone = draw(st.sampled_from(ZONES))
    if draw(st.booleans()):
        year = draw(st.one_of(st.integers(2, 9998), st.integers(1840, 2100)))
        changes = transitions_in_year(ZoneInfo(zone), year)
        if changes:
            edge = st.sampled_from([-3601, -3600, -1800, -61, -1, 0, 1, 60, 1800, 3600])
            return zone, draw(st.sampled_from(changes)) + draw(st.one_of(edge, st.integers(-129_600, 129_600)))
    return zone, draw(st.integers(LOW, HIGH))


def wall_instant(day: date, at: time, tz: ZoneInfo) -> int:
    """Epoch second of a local wall time: its first occurrence if repeated, the end of the gap if skipped."""
    naive = datetime.combine(day, at)
    candidates = [(naive.replace(tzinfo=tz, fold=fold) - EPOCH) // SECOND for fold in (0, 1)]
    shown = [t for t in candidates if local(t, tz) == naive]
    if shown:
        return min(shown)
    # Skipped: read with the offsets before and after the jump, the wall time gives an instant after
    # and one before the gap's end; bisect for the first instant past the wall time.
    lo, hi = min(candidates), max(candidates)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if local(mid, tz) > naive else (mid, hi)
    return hi


def next_fixed_time(at: time, tz: ZoneInfo, after: int) -> int:
    """First daily fire of wall time ``at`` strictly after ``after`` under the fixed-time rule."""
    today = local(after, tz).date()
    for days in range(-2, 4):
        day = today + timedelta(days=days)
        if day < FIRST_DAY:
            continue
        fire = wall_instant(day, at, tz)
        if fire > after:
            return fire
    raise AssertionError("no fire within three days")


def next_wildcard(second: int, minutes: set[int], tz: ZoneInfo, after: int) -> int:
    """First instant strictly after ``after`` whose wall clock shows ``second`` in one of ``minutes``."""
    t = after + 1
    while True:
        wall = local(t, tz)
        if wall.second == second and wall.minute in minutes:
            return t
        jump = (second - wall.second) % 60 or 60
        # The wall clock moves with real time unless the offset changes on the way (never twice within a
        # minute); across a change, step one second at a time.
        t = t + jump if offset(t + jump, tz) == offset(t, tz) else t + 1


@PROFILE
@given(
    zone_instant=zones_and_instants(),
    hour=st.one_of(st.sampled_from([0, 1, 2, 3, 23]), st.integers(0, 23)),
    minute=st.one_of(st.sampled_from([0, 30, 59]), st.integers(0, 59)),
    second=st.one_of(st.none(), st.integers(0, 59)),
)
def test_fixed_time_cron_matches_zoneinfo(
    zone_instant: tuple[str, int], hour: int, minute: int, second: int | None
) -> None:
    zone, after = zone_instant
    expr = f"{minute} {hour} * * *" if second is None else f"{second} {minute} {hour} * * *"
    expected = next_fixed_time(time(hour, minute, second or 0), ZoneInfo(zone), after)
    assert Schedule.cron(expr, zone).next_after(after * 1000) == expected * 1000, (expr, zone, after)


@PROFILE
@given(
    zone_instant=zones_and_instants(),
    second=st.one_of(st.just(0), st.integers(0, 59)),
    minutes=st.one_of(
        st.just(("*", set(range(60)))),
        st.integers(2, 30).map(lambda k: (f"*/{k}", set(range(0, 60, k)))),
        st.integers(0, 59).map(lambda m: (str(m), {m})),
        st.lists(st.integers(0, 59), min_size=2, max_size=4, unique=True).map(
            lambda ms: (",".join(map(str, ms)), set(ms))
        ),
    ),
)
def test_wildcard_cron_matches_zoneinfo(
    zone_instant: tuple[str, int], second: int, minutes: tuple[str, set[int]]
) -> None:
    zone, after = zone_instant
    field, allowed = minutes
    expr = f"{second} {field} * * * *"
    schedule = Schedule.cron(expr, zone)
    expected = next_wildcard(second, allowed, ZoneInfo(zone), after)
    assert schedule.next_after(after * 1000) == expected * 1000, (expr, zone, after)
    following = next_wildcard(second, allowed, ZoneInfo(zone), expected)
    assert schedule.next_after(expected * 1000) == following * 1000, (expr, zone, expected)


def _add_months(d: date, months: int) -> date:
    index = d.year * 12 + d.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(d.day, last))


@PROFILE
@given(
    zone_instant=zones_and_instants(),
    every=st.one_of(st.just(1), st.integers(1, 40)),
    unit=st.sampled_from(["days", "weeks", "months"]),
    hour=st.one_of(st.sampled_from([0, 1, 2, 3]), st.integers(0, 23)),
    minute=st.sampled_from([0, 15, 30, 45, 59]),
    second=st.one_of(st.none(), st.integers(0, 59)),
    anchor_days_before=st.one_of(st.integers(0, 3), st.integers(0, 400)),
)
def test_calendar_matches_zoneinfo(
    zone_instant: tuple[str, int],
    every: int,
    unit: str,
    hour: int,
    minute: int,
    second: int | None,
    anchor_days_before: int,
) -> None:
    zone, after = zone_instant
    tz = ZoneInfo(zone)
    anchor = date.fromordinal(max(1, local(after, tz).date().toordinal() - anchor_days_before))
    at = time(hour, minute, second or 0)
    text = f"{hour:02}:{minute:02}" + ("" if second is None else f":{second:02}")
    schedule = Schedule.calendar(every, unit, text, zone, anchor.isoformat())

    expected: list[int] = []
    k = 0
    while len(expected) < 3:
        try:
            if unit == "months":
                day = _add_months(anchor, k * every)
            else:
                day = anchor + timedelta(days=k * every * (7 if unit == "weeks" else 1))
        except (OverflowError, ValueError):  # past 9999-12-31
            break
        if day > date(9999, 12, 28):
            break
        if day < FIRST_DAY:
            k += 1
            continue
        instant = wall_instant(day, at, tz)
        if instant > after:
            expected.append(instant * 1000)
        k += 1
    assert schedule.next_n(after * 1000, len(expected)) == expected, (zone, anchor, text, every, unit, after)
