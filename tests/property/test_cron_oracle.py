"""Cron next-fire of ``schedsvc._timing`` against the ``cronsim`` package (test-only oracle).

This module checks the cron dialect; ``test_zone_oracle.py`` checks zones (every zone, years 1-9999,
cron and calendar schedules against ``zoneinfo``).

Expressions are built field by field from numbers, names, ranges, steps, lists, ``L``, ``LW``,
``W`` and ``#``; instants are drawn freely and around DST transitions in UTC, Europe/London,
America/New_York and Australia/Lord_Howe (whose summer time shifts by 30 minutes).

Documented differences from cronsim (docs/schedules.md, "Differences from cronsim"), each
checked rather than skipped blindly:

* extensions cronsim lacks: ``?`` and ``<NAME>L`` are rewritten to ``*`` and ``<n>L`` for the
  oracle; ``nW`` has no cronsim equivalent, so only acceptance is checked;
* expressions that can never fire: we reject them at parse time, cronsim gives up after 50 years;
* six-field expressions with a fixed minute and hour follow the DST fixed-time rule like
  five-field ones (cronsim treats them as wildcards), so around a transition they may differ;
* a search starting inside the second pass of a fall-back overlap: cronsim can return a time
  before the start instant, we return the next fire strictly after it;
* cronsim's whole-hour stepping skips matches in zones whose DST shift is 30 minutes; there we
  check our answer by brute force instead.

Example counts are bounded and derandomized for CI; for a deeper local run set
``TIMING_EXAMPLES=2000 TIMING_RANDOM=1`` (the other property tests of the timing core read the same
variables).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim, CronSimError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.property.schedules import schedule_or_error

from schedsvc._timing import Schedule

settings.register_profile(
    "timing-ci",
    max_examples=int(os.environ.get("TIMING_EXAMPLES", "200")),
    deadline=None,
    derandomize=not os.environ.get("TIMING_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
PROFILE = settings.get_profile("timing-ci")

ZONES = ["UTC", "Europe/London", "America/New_York", "Australia/Lord_Howe"]
MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
# cronsim searches 50 years at most and walks datetimes one field at a time; keep it well inside the
# datetime range (test_zone_oracle.py covers years 1-9999).
LOW_MS = int(datetime(1971, 1, 1, tzinfo=UTC).timestamp()) * 1000
HIGH_MS = int(datetime(2090, 1, 1, tzinfo=UTC).timestamp()) * 1000


def _transitions(zone: str) -> list[int]:
    """UTC seconds of the offset changes of ``zone`` in 2000-2040 (daily scan, then bisection)."""
    if zone == "UTC":
        return []
    tz = ZoneInfo(zone)

    def offset(t: int) -> timedelta | None:
        return datetime.fromtimestamp(t, tz).utcoffset()

    out = []
    t = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(2040, 1, 1, tzinfo=UTC).timestamp())
    while t < end:
        if offset(t) != offset(t + 86_400):
            lo, hi = t, t + 86_400
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if offset(mid) == offset(lo) else (lo, mid)
            out.append(hi)
        t += 86_400
    return out


TRANSITIONS = {zone: _transitions(zone) for zone in ZONES}


def _field(lo: int, hi: int, names: list[str] | None = None) -> st.SearchStrategy[str]:
    number = st.integers(lo, hi)

    def name_or_number(v: int) -> st.SearchStrategy[str]:
        if names is None:
            return st.just(str(v))
        index = v - lo if len(names) == hi - lo + 1 else v % 7
        return st.sampled_from([str(v), names[index]]) if index < len(names) else st.just(str(v))

    single = number.flatmap(name_or_number)
    pair = st.tuples(number, number).map(sorted)
    rng = pair.map(lambda p: f"{p[0]}-{p[1]}")
    step = st.integers(1, hi - lo + 2)
    stepped = st.one_of(
        step.map(lambda n: f"*/{n}"),
        st.tuples(rng, step).map(lambda t: f"{t[0]}/{t[1]}"),
        st.tuples(number, step).map(lambda t: f"{t[0]}/{t[1]}"),
    )
    term = st.one_of(single, rng, stepped)
    listed = st.lists(term, min_size=2, max_size=3).map(",".join)
    return st.one_of(st.just("*"), term, term, listed)


def _dom() -> st.SearchStrategy[str]:
    base = _field(1, 31)
    special = st.sampled_from(["L", "LW"])
    extension = st.one_of(st.integers(1, 31).map(lambda d: f"{d}W"), st.just("?"))
    return st.one_of(base, base, base, special, st.tuples(base, special).map(",".join), extension)


def _dow() -> st.SearchStrategy[str]:
    base = _field(0, 7, DAY_NAMES)
    day = st.integers(0, 7)
    special = st.one_of(
        day.map(lambda d: f"{d}L"),
        st.tuples(st.one_of(day.map(str), st.sampled_from(DAY_NAMES)), st.integers(1, 5)).map(
            lambda t: f"{t[0]}#{t[1]}"
        ),
    )
    extension = st.sampled_from(DAY_NAMES).map(lambda n: f"{n}L")
    return st.one_of(base, base, base, special, st.tuples(base, special).map(",".join), extension)


@st.composite
def expressions(draw: st.DrawFn) -> str:
    fields = [
        draw(_field(0, 59)),
        draw(_field(0, 23)),
        draw(_dom()),
        draw(_field(1, 12, MONTH_NAMES)),
        draw(_dow()),
    ]
    if draw(st.integers(0, 4)) == 0:
        fields.insert(0, draw(_field(0, 59)))
    text = " ".join(fields)
    return text.lower() if draw(st.booleans()) else text


@st.composite
def instants(draw: st.DrawFn, zone: str) -> int:
    """Epoch ms: anywhere, within a day and a half of a DST transition, or right at one."""
    transitions = TRANSITIONS[zone]
    if transitions and draw(st.booleans()):
        base = draw(st.sampled_from(transitions)) * 1000
        edge = st.sampled_from([-1001, -1000, -999, -1, 0, 1, 999, 1000])
        return base + draw(st.one_of(edge, st.integers(-36 * 3_600_000, 36 * 3_600_000)))
    return draw(st.integers(LOW_MS, HIGH_MS))


def for_cronsim(expr: str) -> str:
    """Rewrites our ``?`` and ``<NAME>L`` extensions into the forms cronsim understands."""
    fields = expr.upper().replace("?", "*").split()
    fields[-1] = ",".join(
        f"{DAY_NAMES.index(t[:-1])}L" if t.endswith("L") and t[:-1] in DAY_NAMES else t for t in fields[-1].split(",")
    )
    return " ".join(fields)


def uses_nearest_weekday(expr: str) -> bool:
    return any(t.endswith("W") and t != "LW" for t in expr.upper().split()[-3].split(","))


def fixed_time(expr: str) -> bool:
    fields = expr.split()
    return not fields[-5].startswith("*") and not fields[-4].startswith("*")


def tzinfo(zone: str) -> ZoneInfo | type[UTC]:
    return UTC if zone == "UTC" else ZoneInfo(zone)


def cronsim_next(expr: str, zone: str, after_ms: int) -> int | None:
    """cronsim's next fire strictly after ``after_ms`` (whole seconds), or None if it gives up."""
    start = datetime.fromtimestamp(after_ms // 1000, tzinfo(zone))
    try:
        fire = next(CronSim(expr, start))
    except StopIteration:
        return None
    return int(fire.timestamp()) * 1000


def transition_between(zone: str, lo_ms: int, hi_ms: int) -> bool:
    return any(lo_ms - 86_400_000 <= t * 1000 <= hi_ms + 86_400_000 for t in TRANSITIONS[zone])


def brute_force_next(expr: str, zone: str, after_ms: int, horizon_ms: int) -> int | None:
    """First real instant after ``after_ms`` whose local wall time matches (wildcard semantics)."""
    sim = CronSim(expr, datetime.fromtimestamp(0, UTC))
    tz = ZoneInfo(zone)
    only_second = min(sim.seconds) if len(sim.seconds) == 1 else None
    t = after_ms // 1000 + 1
    if only_second is not None:
        # Offsets here are whole minutes, so local and UTC seconds agree.
        t += (only_second - t % 60) % 60
    while t * 1000 <= horizon_ms:
        local = datetime.fromtimestamp(t, tz)
        if (
            local.month in sim.months
            and sim.match_day(local.date())
            and local.hour in sim.hours
            and local.minute in sim.minutes
            and local.second in sim.seconds
        ):
            return t * 1000
        t += 1 if only_second is None else 60
    return None


@PROFILE
@given(data=st.data(), expr=expressions(), zone=st.sampled_from(ZONES))
def test_next_fire_matches_cronsim(data: st.DataObject, expr: str, zone: str) -> None:
    after = data.draw(instants(zone))
    oracle_expr = for_cronsim(expr)
    try:
        CronSim(oracle_expr, datetime.fromtimestamp(0, UTC))
        cronsim_error = None
    except CronSimError as exc:
        cronsim_error = exc
    schedule = schedule_or_error(lambda: Schedule.cron(expr, zone))
    if isinstance(schedule, str):
        # We reject only what cronsim rejects, plus expressions that can never fire.
        if cronsim_error is None:
            assert "can never fire" in schedule, (expr, schedule)
            assert cronsim_next(oracle_expr, "UTC", after) is None, expr
        return
    if cronsim_error is not None:
        assert uses_nearest_weekday(expr), f"cronsim rejects {expr!r} ({cronsim_error}) but we accept it"
        return
    ours = schedule.next_after(after)
    theirs = cronsim_next(oracle_expr, zone, after)
    assert ours is not None, expr
    if theirs is None:
        # cronsim gives up after 50 years; our search covers the whole 400-year cycle.
        assert ours - after > 45 * 365 * 86_400_000, (expr, ours)
        return
    if ours == theirs:
        return
    assert zone != "UTC", (expr, after, ours, theirs)
    if theirs <= after:
        # cronsim started in the second pass of an overlap and went back to the first pass.
        assert fixed_time(expr)
        return
    assert transition_between(zone, after, max(ours, theirs)), (expr, zone, after, ours, theirs)
    if len(expr.split()) == 6 and fixed_time(expr):
        return
    # Remaining differences must be cronsim stepping over a match in a half-hour DST zone.
    assert zone == "Australia/Lord_Howe", (expr, zone, after, ours, theirs)
    assert not fixed_time(expr)
    assert ours < theirs
    assert brute_force_next(oracle_expr, zone, after, ours) == ours


@PROFILE
@given(data=st.data(), expr=expressions(), zone=st.sampled_from(ZONES))
def test_next_n_is_strictly_increasing_and_consistent(data: st.DataObject, expr: str, zone: str) -> None:
    after = data.draw(instants(zone))
    try:
        schedule = Schedule.cron(expr, zone)
    except ValueError:
        return
    fires = schedule.next_n(after, 8)
    assert len(fires) == 8
    assert all(a < b for a, b in zip([after, *fires], fires, strict=False))
    assert all(f % 1000 == 0 for f in fires)
    previous = after
    for fire in fires:
        assert schedule.next_after(previous) == fire
        previous = fire
    assert schedule.fires_between(after, fires[-1], 100) == fires
    assert schedule.fires_between(after, fires[-1], 3) == fires[:3]


@pytest.mark.parametrize(
    ("expr", "zone", "after", "expected"),
    [
        # The spring-forward gap: a fixed 02:30 fires at 03:00 EDT, the day is not lost.
        ("30 2 * * *", "America/New_York", "2026-03-08T00:00:00-05:00", "2026-03-08T03:00:00-04:00"),
        # The fall-back overlap: a fixed 01:30 fires once, at the first pass.
        ("30 1 * * *", "America/New_York", "2026-11-01T00:00:00-04:00", "2026-11-01T01:30:00-04:00"),
        ("30 1 * * *", "America/New_York", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"),
        # Wildcard minutes fire in both passes.
        ("*/30 * * * *", "America/New_York", "2026-11-01T01:30:00-04:00", "2026-11-01T01:00:00-05:00"),
        ("15 2 * * *", "Australia/Lord_Howe", "2026-10-04T00:00:00+10:30", "2026-10-04T02:30:00+11:00"),
    ],
)
def test_documented_dst_examples(expr: str, zone: str, after: str, expected: str) -> None:
    after_ms = int(datetime.fromisoformat(after).timestamp()) * 1000
    expected_ms = int(datetime.fromisoformat(expected).timestamp()) * 1000
    assert Schedule.cron(expr, zone).next_after(after_ms) == expected_ms
    assert cronsim_next(expr, zone, after_ms) == expected_ms
