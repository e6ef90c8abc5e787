"""Fuzzing the extension's inputs: only a result or ``ValueError``, never a panic or a hang.

A Rust panic would surface as ``pyo3_runtime.PanicException`` (a ``BaseException``), which these
tests let propagate; the Hypothesis deadline catches a search that does not terminate promptly.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.property.schedules import schedule_or_error

from schedsvc._timing import NO_FIRE, Schedule, TimingWheel, next_fires

FUZZ = settings(
    max_examples=int(os.environ.get("TIMING_EXAMPLES", "200")),
    deadline=timedelta(seconds=5),
    derandomize=not os.environ.get("TIMING_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow],
)

I64 = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([-(2**63), -(2**63) + 1, -1, 0, 1, 2**63 - 2, 2**63 - 1, 253_402_300_799_999]),
    st.integers(-(10**13), 10**13),
)
CRON_ALPHABET = "0123456789*/,-#?@LW lwJANFEBMRPYUGSOCTVDHIWEDTHUFRISATSUNyearlymonthdaily\t"
CRON_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=CRON_ALPHABET, max_size=40),
    st.lists(st.text(alphabet="0123456789*/,-#LW", min_size=1, max_size=8), min_size=1, max_size=7).map(" ".join),
    # Huge numbers as values, steps and occurrence counts.
    st.tuples(
        st.sampled_from(["*", "5", "1-10", "MON", "L"]),
        st.sampled_from(["/", "-", "#", ","]),
        st.one_of(st.integers(0, 10**30), st.sampled_from([60, 2**32, 2**63, 2**64 - 1, 2**64, 10**30])),
        st.integers(0, 4),
    ).map(lambda t: " ".join(["*"] * t[3] + [f"{t[0]}{t[1]}{t[2]}"] + ["*"] * (4 - t[3]))),
)
ZONES = st.one_of(
    st.sampled_from(["UTC", "Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]),
    st.text(max_size=20),
)


def valid_schedules() -> st.SearchStrategy[Schedule]:
    cron = st.sampled_from(
        ["* * * * *", "0 0 29 2 */7", "*/7 1-5 L * 5#5", "0 30 2 * * *", "0 0 LW * *", "@yearly", "0 0 31 * FRIL"]
    )
    zone = st.sampled_from(["UTC", "America/New_York", "Australia/Lord_Howe", "Pacific/Apia"])
    jitter = st.integers(0, 2**62)
    bounds = st.one_of(st.none(), I64)
    return st.one_of(
        st.builds(Schedule.cron, cron, zone, jitter_ms=jitter),
        st.builds(Schedule.interval, st.integers(1000, 2**63 - 1), I64, jitter_ms=jitter),
        st.builds(
            Schedule.calendar,
            st.integers(1, 2**63 - 1),
            st.sampled_from(["days", "weeks", "months"]),
            st.sampled_from(["00:00", "02:30", "23:59:59"]),
            zone,
            st.sampled_from(["0001-01-01", "2024-02-29", "9999-12-31"]),
        ),
        st.builds(Schedule.once, I64, jitter_ms=jitter),
        st.tuples(bounds, bounds).flatmap(
            lambda b: (
                st.just(Schedule.interval(60_000, 0, min(b, key=_key), max(b, key=_key)))
                if None not in b
                else st.just(Schedule.cron("* * * * *", "UTC", b[0], b[1]))
            )
        ),
    )


def _key(v: int | None) -> int:
    return 0 if v is None else v


@FUZZ
@given(text=CRON_TEXT, zone=ZONES)
def test_cron_parser_only_raises_value_error(text: str, zone: str) -> None:
    schedule = schedule_or_error(lambda: Schedule.cron(text, zone))
    if isinstance(schedule, str):
        assert schedule.startswith(("cron: ", "unknown time zone")), schedule
        return
    fire = schedule.next_after(0)
    assert fire is None or fire > 0


@FUZZ
@given(
    every=I64,
    unit=st.one_of(st.sampled_from(["days", "weeks", "months"]), st.text(max_size=8)),
    time=st.one_of(st.sampled_from(["09:00", "24:00", "9:00", "12:60", "23:59:59"]), st.text(max_size=9)),
    zone=ZONES,
    anchor=st.one_of(st.sampled_from(["2026-01-31", "2026-02-30", "0000-01-01"]), st.text(max_size=11)),
)
def test_calendar_parser_only_raises_value_error(every: int, unit: str, time: str, zone: str, anchor: str) -> None:
    schedule = schedule_or_error(lambda: Schedule.calendar(every, unit, time, zone, anchor))
    if isinstance(schedule, str):
        assert schedule.startswith(("calendar: ", "unknown time zone")), schedule
        return
    schedule.next_n(-(2**63), 3)


@FUZZ
@given(schedule=valid_schedules(), after=I64, until=I64, seed=st.integers(-(2**63), 2**64 - 1))
def test_extreme_instants_give_results_not_panics(schedule: Schedule, after: int, until: int, seed: int) -> None:
    fire = schedule.next_after(after)
    assert fire is None or fire > after
    fires = schedule.next_n(after, 5)
    assert all(a < b for a, b in zip([after, *fires], fires, strict=False))
    between = schedule.fires_between(after, until, 5)
    assert all(after < f <= until for f in between)
    due = schedule.fire_instant(after, seed)
    assert after <= due <= max(after, min(after + schedule.jitter_ms, 2**63 - 1))
    nominal, jittered = next_fires([schedule], [after], [seed])
    assert len(nominal) == len(jittered) == 8
    expected = NO_FIRE if fire is None else fire
    assert int.from_bytes(nominal, sys.byteorder, signed=True) == expected


@FUZZ
@given(
    start=I64,
    tick=st.one_of(st.integers(1, 1000), I64),
    deadlines=st.lists(I64, max_size=20),
    nows=st.lists(I64, max_size=5),
)
def test_wheel_accepts_any_instants(start: int, tick: int, deadlines: list[int], nows: list[int]) -> None:
    try:
        wheel = TimingWheel(start, tick)
    except ValueError:
        assert tick < 1
        return
    handles = wheel.insert_many(deadlines, list(range(len(deadlines))))
    popped: list[int] = []
    for now in sorted(nows):
        keys, due = wheel.pop_due(now)
        assert all(d <= now for d in due)
        assert due == sorted(due)
        popped.extend(keys)
    assert len(set(popped)) == len(popped)
    remaining = len(deadlines) - len(popped)
    assert len(wheel) == remaining
    assert wheel.cancel_many(handles) == remaining
    assert wheel.next_deadline() is None


@FUZZ
@given(bad=st.sampled_from([2**64, -(2**64), 2**100]))
def test_out_of_range_ints_are_value_errors(bad: int) -> None:
    schedule = Schedule.cron("* * * * *")
    for call in (
        lambda: schedule.next_after(bad),
        lambda: schedule.next_n(0, bad),
        lambda: Schedule.interval(bad, 0),
        lambda: TimingWheel(bad),
        lambda: TimingWheel(0).insert(bad, 1),
        lambda: TimingWheel(0).insert(1, bad),
        lambda: next_fires([schedule], [bad]),
    ):
        try:
            call()
        except ValueError:
            continue
        raise AssertionError("expected ValueError")
    assert TimingWheel(0).cancel(bad) is False


def test_batch_length_mismatch_and_bad_arguments_are_value_errors() -> None:
    schedule = Schedule.cron("* * * * *")
    wheel = TimingWheel(0)
    for call in (
        lambda: next_fires([schedule, schedule], [0]),
        lambda: next_fires([schedule], [0], [1, 2]),
        lambda: next_fires([schedule], b"\x00" * 7),
        lambda: wheel.insert_many([1, 2], [1]),
        lambda: wheel.insert_many([1], [-1]),
        lambda: wheel.pop_due(0, -1),
        lambda: TimingWheel(0, 0),
        lambda: schedule.next_n(0, 1_000_001),
        lambda: schedule.fires_between(0, 1, -1),
        lambda: Schedule.once(0, jitter_ms=-5),
    ):
        try:
            call()
        except ValueError:
            continue
        raise AssertionError("expected ValueError")
