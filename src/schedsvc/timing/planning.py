"""Planning a batch of due jobs: the fires to publish, the missed fires to record, the new ``nextRun``.

The common case, one fire due and on time, is planned for the whole batch by one call into the Rust core
(``next_fires``, which runs without the GIL): it gives every job's next fire and that fire's due instant,
which is also the deadline the job goes back into the wheel with. Jobs with several overdue fires, or
just resumed, go through the catch-up planner; their overdue fires are enumerated with ``fires_between``.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from schedsvc._timing import NO_FIRE, next_fires
from schedsvc._timing import Schedule as CompiledSchedule
from schedsvc.domain.models import Schedule
from schedsvc.observability.metrics import CATCHUP_DECISIONS
from schedsvc.timing.catchup import MISFIRE_GRACE_SECONDS, PlannedRun, Policy, plan_catchup

log = logging.getLogger(__name__)

OVERDUE_ENUMERATION_LIMIT = 10_000
"""Most overdue fires enumerated one by one; beyond, fires before the catch-up window are skipped."""
_DEFAULT_GRACE_MS = MISFIRE_GRACE_SECONDS * 1000
_NONE_MISSED: tuple[int, ...] = ()


def job_seed(job_id: str) -> int:
    """The jitter seed of a job: a stable hash of its id (the same on every replica)."""
    return int.from_bytes(hashlib.blake2b(job_id.encode(), digest_size=8).digest(), "big") >> 1


@dataclass(slots=True)
class TimedJob:
    """What the wheel needs to fire one job; ``next_run_ms`` mirrors the job's ``nextRun``."""

    id: str
    tenant: str
    partition: int
    epoch: int
    """Lease epoch of the partition when the job was loaded: publishing checks it is still held."""
    version: int
    schedule: Schedule
    compiled: CompiledSchedule
    seed: int
    policy: Policy
    window_seconds: int
    next_run_ms: int
    due_ms: int
    """``next_run_ms`` plus the job's jitter: when the fire is due."""
    resumed_at: datetime | None
    resumed_at_ms: int | None
    grace_ms: int = _DEFAULT_GRACE_MS
    """The job's misfire grace: a fire older than this when planned is late (its catch-up policy applies)."""
    key: int = 0
    handle: int | None = None
    loaded_at: float = 0.0


@dataclass(slots=True)  # not frozen: a frozen dataclass costs ~1 µs more per job to build
class Plan:
    """What one fire batch does for one job."""

    job: TimedJob
    runs: list[PlannedRun]
    """Fires to publish, oldest first."""
    missed: Sequence[int]
    """Nominal instants to record as ``missed`` runs."""
    next_run_ms: int | None
    """The new ``nextRun`` (None: the job is complete)."""
    next_due_ms: int | None
    """When ``next_run_ms`` is due (jitter included): the job's next wheel deadline."""


def due_instants(jobs: Sequence[TimedJob]) -> list[int]:
    """Each job's due instant for its ``next_run_ms`` (jitter applied only where a schedule has some)."""
    return [
        job.next_run_ms if job.compiled.jitter_ms == 0 else int(job.compiled.fire_instant(job.next_run_ms, job.seed))
        for job in jobs
    ]


def plan_batch(jobs: Sequence[TimedJob], now_ms: int) -> list[Plan]:
    """Plan every job of a batch popped from the wheel at ``now_ms``."""
    if not jobs:
        return []
    nominals_raw, dues_raw = next_fires(
        [job.compiled for job in jobs],
        array("q", [job.next_run_ms for job in jobs]),
        array("q", [job.seed for job in jobs]),
    )
    nominals, dues = array("q"), array("q")
    nominals.frombytes(nominals_raw)
    dues.frombytes(dues_raw)
    plans: list[Plan] = []
    for job, nominal, due in zip(jobs, nominals, dues, strict=True):
        following_is_later = nominal == NO_FIRE or due > now_ms
        if following_is_later and job.resumed_at_ms is None and job.due_ms <= now_ms <= job.due_ms + job.grace_ms:
            # The common case: exactly one fire due, within the grace period.
            runs = [PlannedRun(job.next_run_ms, job.due_ms, "scheduled")]
            if nominal == NO_FIRE:
                plans.append(Plan(job, runs, _NONE_MISSED, None, None))
            else:
                plans.append(Plan(job, runs, _NONE_MISSED, nominal, due))
        else:
            plans.append(plan_overdue(job, now_ms))
    return plans


def plan_overdue(job: TimedJob, now_ms: int) -> Plan:
    """Plan a job with several overdue fires, late ones, or a resume, through the catch-up planner."""
    fires, dropped, following = _overdue_fires(job, now_ms)
    plan = plan_catchup(
        fires,
        now_ms=now_ms,
        policy=job.policy,
        window_seconds=job.window_seconds,
        resumed_at_ms=job.resumed_at_ms,
        grace_seconds=job.grace_ms // 1000,
        dropped=dropped,
    )
    if plan.late:
        caught_up = sum(1 for r in plan.runs if r.trigger == "catchup")
        missed = plan.late - caught_up
        CATCHUP_DECISIONS.labels(policy=job.policy, decision="run").inc(caught_up)
        CATCHUP_DECISIONS.labels(policy=job.policy, decision="missed").inc(missed - plan.unrecorded)
        CATCHUP_DECISIONS.labels(policy=job.policy, decision="missed_unrecorded").inc(plan.unrecorded)
        log.info("job %s: %d late fires (%s): %d run, %d missed", job.id, plan.late, job.policy, caught_up, missed)
    next_due = None if following is None else int(job.compiled.fire_instant(following, job.seed))
    return Plan(job, plan.runs, plan.missed, following, next_due)


def _overdue_fires(job: TimedJob, now_ms: int) -> tuple[list[tuple[int, int]], int, int | None]:
    """The job's fires due by ``now_ms`` as ``(nominal, due)`` pairs, how many older ones were skipped
    without enumeration, and the first fire not yet due (None: the schedule has no more)."""
    compiled, seed = job.compiled, job.seed
    fires: list[tuple[int, int]] = []
    dropped = 0
    nominal: int | None = job.next_run_ms
    ahead: list[int] = []  # fires after `nominal` up to now, fetched in one call, latest first
    while nominal is not None:
        due = int(compiled.fire_instant(nominal, seed))
        if due > now_ms:
            break
        fires.append((nominal, due))
        if len(fires) >= OVERDUE_ENUMERATION_LIMIT:
            # A very long outage: skip the oldest fires wholesale (missed, counted, not recorded),
            # first to the catch-up window, then, if the window alone is too long, to the grace
            # period (whose fires run anyway and so stand in for "latest").
            grace_or_window_ms = job.grace_ms + (job.window_seconds * 1000 if dropped == 0 else 0)
            dropped += len(fires)
            fires, ahead = [], []
            nominal = compiled.next_after(max(nominal, now_ms - grace_or_window_ms - 1))
            continue
        if not ahead:
            ahead = compiled.fires_between(nominal, now_ms, OVERDUE_ENUMERATION_LIMIT)[::-1]
        nominal = ahead.pop() if ahead else compiled.next_after(nominal)
    return fires, dropped, nominal
