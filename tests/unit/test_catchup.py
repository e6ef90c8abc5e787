"""The catch-up planner: grace, pause, window, policies and record bounds (no I/O)."""

from __future__ import annotations

import pytest

from schedsvc.domain.models import IntervalSchedule
from schedsvc.timing import compile_schedule, from_ms
from schedsvc.timing.catchup import (
    CATCHUP_ALL_LIMIT,
    MISFIRE_GRACE_SECONDS,
    MISSED_RECORD_LIMIT,
    CatchupPlan,
    PlannedRun,
    plan_catchup,
)
from schedsvc.timing.planning import TimedJob, job_seed, plan_batch

MIN = 60_000
NOW = 1_800_000_000_000


def minutes_ago(*ago: int) -> list[tuple[int, int]]:
    """Fires (without jitter) the given numbers of minutes before NOW, oldest first."""
    return [(NOW - a * MIN, NOW - a * MIN) for a in sorted(ago, reverse=True)]


def test_no_overdue_fires_is_an_empty_plan() -> None:
    plan = plan_catchup([], now_ms=NOW, policy="latest", window_seconds=3600)
    assert plan == CatchupPlan()


@pytest.mark.parametrize("policy", ["skip", "latest", "all"])
def test_fires_within_grace_run_as_scheduled_under_every_policy(policy: str) -> None:
    fires = [(NOW - 50_000, NOW - 50_000), (NOW - 20_000, NOW - 20_000), (NOW, NOW)]
    plan = plan_catchup(fires, now_ms=NOW, policy=policy, window_seconds=3600)
    assert plan.runs == [PlannedRun(n, d, "scheduled") for n, d in fires]
    assert plan.missed == []
    assert plan.late == 0


def test_grace_is_judged_from_the_due_instant_with_jitter() -> None:
    grace = MISFIRE_GRACE_SECONDS * 1000
    nominal = NOW - grace - 30_000
    plan = plan_catchup([(nominal, nominal + 40_000)], now_ms=NOW, policy="skip", window_seconds=3600)
    assert plan.runs == [PlannedRun(nominal, nominal + 40_000, "scheduled")]


def test_skip_records_every_late_fire_and_runs_none() -> None:
    fires = minutes_ago(5, 4, 3, 2)
    plan = plan_catchup(fires, now_ms=NOW, policy="skip", window_seconds=3600)
    assert plan.runs == []
    assert plan.missed == [n for n, _ in fires]
    assert plan.late == 4


def test_latest_runs_the_newest_late_fire_as_catchup() -> None:
    fires = minutes_ago(5, 4, 3, 2)
    plan = plan_catchup(fires, now_ms=NOW, policy="latest", window_seconds=3600)
    assert plan.runs == [PlannedRun(NOW - 2 * MIN, NOW - 2 * MIN, "catchup")]
    assert plan.missed == [NOW - 5 * MIN, NOW - 4 * MIN, NOW - 3 * MIN]


def test_latest_is_superseded_by_a_newer_timely_fire() -> None:
    fires = [*minutes_ago(5, 4, 3, 2), (NOW - 10_000, NOW - 10_000)]
    plan = plan_catchup(fires, now_ms=NOW, policy="latest", window_seconds=3600)
    assert plan.runs == [PlannedRun(NOW - 10_000, NOW - 10_000, "scheduled")]
    assert len(plan.missed) == 4


def test_latest_outside_the_window_runs_nothing() -> None:
    plan = plan_catchup(minutes_ago(50, 40), now_ms=NOW, policy="latest", window_seconds=30 * 60)
    assert plan.runs == []
    assert plan.missed == [NOW - 50 * MIN, NOW - 40 * MIN]


def test_all_runs_every_late_fire_within_the_window_and_misses_older_ones() -> None:
    fires = minutes_ago(50, 40, 20, 10, 5)
    plan = plan_catchup(fires, now_ms=NOW, policy="all", window_seconds=30 * 60)
    assert [r.nominal_ms for r in plan.runs] == [NOW - 20 * MIN, NOW - 10 * MIN, NOW - 5 * MIN]
    assert {r.trigger for r in plan.runs} == {"catchup"}
    assert plan.missed == [NOW - 50 * MIN, NOW - 40 * MIN]


def test_all_is_bounded() -> None:
    fires = [(NOW - i * 1000 - 61_000, NOW - i * 1000 - 61_000) for i in range(CATCHUP_ALL_LIMIT + 50, 0, -1)]
    plan = plan_catchup(fires, now_ms=NOW, policy="all", window_seconds=86_400)
    assert len(plan.runs) == CATCHUP_ALL_LIMIT
    assert plan.runs[-1].nominal_ms == fires[-1][0]  # the newest ones run
    assert plan.missed == [n for n, _ in fires[:50]]


def test_fires_before_resumed_at_are_late_even_within_grace() -> None:
    resumed = NOW - 5_000
    fires = [(NOW - 30_000, NOW - 30_000), (NOW - 20_000, NOW - 20_000), (NOW - 1_000, NOW - 1_000)]
    plan = plan_catchup(fires, now_ms=NOW, policy="skip", window_seconds=3600, resumed_at_ms=resumed)
    assert plan.missed == [NOW - 30_000, NOW - 20_000]
    assert plan.runs == [PlannedRun(NOW - 1_000, NOW - 1_000, "scheduled")]


def test_latest_after_a_pause_runs_the_last_fire_while_paused() -> None:
    fires = [(NOW - 30_000, NOW - 30_000), (NOW - 20_000, NOW - 20_000)]
    plan = plan_catchup(fires, now_ms=NOW, policy="latest", window_seconds=3600, resumed_at_ms=NOW - 1)
    assert plan.runs == [PlannedRun(NOW - 20_000, NOW - 20_000, "catchup")]
    assert plan.missed == [NOW - 30_000]


def test_missed_records_are_bounded_and_the_rest_counted() -> None:
    fires = [(NOW - i * MIN, NOW - i * MIN) for i in range(500, 1, -1)]
    plan = plan_catchup(fires, now_ms=NOW, policy="skip", window_seconds=3600, dropped=7)
    assert len(plan.missed) == MISSED_RECORD_LIMIT
    assert plan.missed[-1] == NOW - 2 * MIN  # the newest are recorded
    assert plan.unrecorded == len(fires) - MISSED_RECORD_LIMIT + 7
    assert plan.late == len(fires) + 7


def test_zero_window_runs_no_late_fire() -> None:
    plan = plan_catchup(minutes_ago(3, 2), now_ms=NOW, policy="all", window_seconds=0)
    assert plan.runs == []
    assert len(plan.missed) == 2


def _timed_job(next_run_ms: int, *, grace_seconds: int, every: int = 1, policy: str = "skip") -> TimedJob:
    schedule = IntervalSchedule(seconds=every, anchor=from_ms(next_run_ms))
    return TimedJob(
        id="job-grace",
        tenant="acme",
        partition=0,
        epoch=1,
        version=1,
        schedule=schedule,
        compiled=compile_schedule(schedule),
        seed=job_seed("job-grace"),
        policy=policy,
        window_seconds=3600,
        next_run_ms=next_run_ms,
        due_ms=next_run_ms,
        resumed_at=None,
        resumed_at_ms=None,
        grace_ms=grace_seconds * 1000,
    )


@pytest.mark.parametrize("grace_seconds", [2, MISFIRE_GRACE_SECONDS])
def test_a_job_s_own_grace_decides_which_fires_of_an_outage_are_late(grace_seconds: int) -> None:
    """A 16 s outage of an every-second ``skip`` job: with the default grace all 16 overdue fires run at
    once; with a 2 s grace only those of the last 2 s run and the rest are recorded missed."""
    [plan] = plan_batch([_timed_job(NOW - 15_000, grace_seconds=grace_seconds)], NOW)
    fires = [NOW - 15_000 + k * 1000 for k in range(16)]
    timely = [f for f in fires if NOW - f <= grace_seconds * 1000]
    assert [r.nominal_ms for r in plan.runs] == timely
    assert {r.trigger for r in plan.runs} == {"scheduled"}
    assert list(plan.missed) == [f for f in fires if f not in timely]
    assert plan.next_run_ms == NOW + 1000


def test_the_common_path_honours_a_short_grace() -> None:
    """One fire due, 3 s late: within the default grace it runs; with a 2 s grace it is late (missed)."""
    [default] = plan_batch([_timed_job(NOW - 3000, grace_seconds=MISFIRE_GRACE_SECONDS, every=60)], NOW)
    assert default.runs == [PlannedRun(NOW - 3000, NOW - 3000, "scheduled")]
    assert list(default.missed) == []
    [short] = plan_batch([_timed_job(NOW - 3000, grace_seconds=2, every=60)], NOW)
    assert short.runs == []
    assert list(short.missed) == [NOW - 3000]
    assert short.next_run_ms == NOW + 57_000


def test_the_job_codec_stores_the_grace_and_reads_the_default_for_older_jobs() -> None:
    from datetime import UTC, datetime

    from schedsvc.domain.models import CatchupPolicy, JobCreate, JobStatus, NatsTarget
    from schedsvc.store import job_codec

    now = datetime(2026, 11, 29, tzinfo=UTC)
    body = JobCreate(
        name="graceful",
        schedule=IntervalSchedule(seconds=60, anchor=now),
        target=NatsTarget(subject="tenant.acme.ping"),
        catchup=CatchupPolicy(policy="skip", misfire_grace_seconds=5),
    )
    stored = job_codec.encode(
        job_codec.new_document("j1", "acme", body, status=JobStatus.ACTIVE, next_run=now, partition=0, now=now)
    )
    assert stored["catchup"]["misfireGraceSeconds"] == 5
    assert job_codec.read_timing(stored).catchup.misfire_grace_seconds == 5
    del stored["catchup"]["misfireGraceSeconds"]  # a job stored before the setting existed
    assert job_codec.read_timing(stored).catchup.misfire_grace_seconds == MISFIRE_GRACE_SECONDS == 60
