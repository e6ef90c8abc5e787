"""The catch-up planner: which overdue fires of a job run, and which are recorded as missed.

Pure (no I/O, no clock): the caller enumerates the job's overdue fires and passes the current instant,
so every replica that plans the same job at the same instant reaches the same decision.

A fire is *overdue* when its due instant (nominal plus jitter) is at or before now. An overdue fire is
*late* when it is older than the job's misfire grace (``catchup.misfireGraceSeconds``, by default
:data:`MISFIRE_GRACE_SECONDS`) or nominally before the job's ``resumedAt``
(it fell while the job was paused); other overdue fires are merely delayed (a lease hand-off, a slow
batch) and run as ``scheduled``. Late fires follow the job's policy, within its window:

- ``skip``: none runs; all are recorded missed.
- ``latest``: the most recent late fire runs (trigger ``catchup``) unless a delayed fire newer than it
  runs anyway; the others are recorded missed.
- ``all``: every late fire runs (the newest :data:`CATCHUP_ALL_LIMIT`), the rest are recorded missed.

Late fires older than the window are always missed. Only the newest :data:`MISSED_RECORD_LIMIT` missed
fires are recorded as runs; the rest are only counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from schedsvc.domain.models import DEFAULT_MISFIRE_GRACE_SECONDS

MISFIRE_GRACE_SECONDS = DEFAULT_MISFIRE_GRACE_SECONDS
"""The default misfire grace: a fire this much past its due instant counts as late. Larger than a lease
TTL plus a takeover, so that the fires a crashed replica left behind still run on the replica that takes
over. A job may set its own (``catchup.misfireGraceSeconds``)."""
CATCHUP_ALL_LIMIT = 1000
"""Most fires the ``all`` policy runs at once; older late fires are recorded missed."""
MISSED_RECORD_LIMIT = 100
"""Most missed fires recorded as ``runs`` documents per plan; the rest are counted in a metric only."""

Policy = Literal["skip", "latest", "all"]
Trigger = Literal["scheduled", "catchup"]


class PlannedRun(NamedTuple):
    """One fire to publish (immutable; a named tuple because one is built per fire on the hot path,
    at a fraction of a frozen dataclass's cost)."""

    nominal_ms: int
    due_ms: int
    trigger: Trigger


@dataclass(frozen=True, slots=True)
class CatchupPlan:
    """What to do with a job's overdue fires."""

    runs: list[PlannedRun] = field(default_factory=list)
    """Fires to publish, oldest first."""
    missed: list[int] = field(default_factory=list)
    """Nominal instants to record as ``missed`` runs, oldest first (at most ``MISSED_RECORD_LIMIT``)."""
    unrecorded: int = 0
    """Missed fires beyond the record limit: counted, not recorded."""
    late: int = 0
    """How many of the fires were late (the policy applied to them)."""


def plan_catchup(
    fires: Sequence[tuple[int, int]],
    *,
    now_ms: int,
    policy: Policy,
    window_seconds: int,
    resumed_at_ms: int | None = None,
    grace_seconds: int = MISFIRE_GRACE_SECONDS,
    dropped: int = 0,
) -> CatchupPlan:
    """Plan a job's overdue ``fires`` (``(nominal_ms, due_ms)`` pairs, ascending, every due <= now).

    ``dropped`` counts even older fires the caller did not enumerate (a job stopped for a very long
    time): they are missed and unrecorded.
    """
    grace_ms = grace_seconds * 1000
    window_start = now_ms - window_seconds * 1000
    late: list[tuple[int, int]] = []
    timely: list[tuple[int, int]] = []
    for nominal, due in fires:
        paused = resumed_at_ms is not None and nominal < resumed_at_ms
        (late if paused or now_ms - due > grace_ms else timely).append((nominal, due))

    in_window = [f for f in late if f[0] >= window_start]
    if policy == "all":
        caught_up = in_window[-CATCHUP_ALL_LIMIT:]
    elif policy == "latest" and in_window and not (timely and timely[-1][0] > in_window[-1][0]):
        caught_up = in_window[-1:]
    else:
        caught_up = []

    chosen = {nominal for nominal, _ in caught_up}
    missed = [nominal for nominal, _ in late if nominal not in chosen]
    runs = [PlannedRun(n, d, "catchup") for n, d in caught_up] + [PlannedRun(n, d, "scheduled") for n, d in timely]
    runs.sort(key=lambda r: r.nominal_ms)
    recorded = missed[-MISSED_RECORD_LIMIT:]
    return CatchupPlan(
        runs=runs,
        missed=recorded,
        unrecorded=len(missed) - len(recorded) + dropped,
        late=len(late) + dropped,
    )
