"""The rules a job's schedule and target must meet when they are stored, for every way in: ``/jobs`` and
the console's forms call these, so the two cannot drift apart."""

from __future__ import annotations

from datetime import datetime

from litestar.datastructures import State

from schedsvc.domain import InvalidRequestError, InvalidScheduleError, Schedule, Target, target_problems
from schedsvc.domain.models import NotificationTarget
from schedsvc.domain.targets import notification_problems
from schedsvc.timing import compile_schedule, from_ms, to_ms, with_defaults


def first_fire_after(schedule: Schedule, now: datetime) -> datetime | None:
    """The schedule's first fire after ``now``, or None (none left, or beyond what a datetime holds)."""
    compiled = compile_schedule(schedule, created=now)
    nominal = compiled.next_after(to_ms(now))
    try:
        return None if nominal is None else from_ms(nominal)
    except (OverflowError, ValueError, OSError):  # a fire beyond what a datetime holds
        return None


def _planned(schedule: Schedule, now: datetime) -> tuple[Schedule, datetime]:
    """The schedule with its creation-time defaults and its first fire after now."""
    schedule = with_defaults(schedule, now)
    next_run = first_fire_after(schedule, now)
    if next_run is None:
        raise InvalidScheduleError("the schedule has no fire after now", "schedule")
    return schedule, next_run


async def check_job_input(
    state: State,
    tenant: str,
    now: datetime,
    schedule: Schedule | None,
    target: Target | None,
    *,
    notify: NotificationTarget | None = None,
) -> tuple[Schedule, datetime] | None:
    """Check the schedule, the target and the notification target together, so one answer lists the
    problems of all (422); returns the planned schedule when one was given."""
    problems: list[tuple[str, str]] = []
    planned = None
    if schedule is not None:
        try:
            planned = _planned(schedule, now)
        except InvalidScheduleError as exc:
            problems.append((exc.field, str(exc)))
    if target is not None:
        # The target policy, also applied before every call (execution/targets.py).
        grants = await state.tenants.subject_grants(tenant, state.settings.nats_subject_grant)
        problems += target_problems(
            target,
            allow=state.settings.target_allow_networks,
            grants=grants,
            reserved_roots=state.names.reserved_subject_roots,
        )
    if notify is not None:
        problems += notification_problems(notify, allow=state.settings.target_allow_networks)
    if problems:
        raise InvalidRequestError(problems)
    return planned
