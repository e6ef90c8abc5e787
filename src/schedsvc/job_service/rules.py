"""The rules a job's schedule and target must meet when they are stored, for every way in (``/jobs``, the
console): the schedule's creation-time defaults and first fire, and the target policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from schedsvc.domain.errors import InvalidRequestError, InvalidScheduleError
from schedsvc.domain.models import NotificationTarget, Schedule, Target
from schedsvc.domain.targets import IPNetwork, notification_problems, target_problems
from schedsvc.timing import compile_schedule, from_ms, to_ms, with_defaults


class SubjectGrants(Protocol):
    """Where a tenant's NATS subject grants are kept (the tenant store)."""

    async def subject_grants(self, tenant: str, default_pattern: str) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """The deployment's target policy: the same checks execution applies before every call
    (``execution/targets.py``), applied here before a target is stored."""

    allow_networks: Sequence[IPNetwork]
    """Networks webhooks may reach despite being private (``SCHEDSVC_TARGET_ALLOW_NETWORKS``)."""
    default_grant: str
    """The subject pattern a tenant without its own grants may publish under (``{tenant}`` filled in)."""
    reserved_roots: Sequence[str]
    """Subjects no tenant may publish to (the service's own, JetStream's, the system's)."""
    grants: SubjectGrants

    async def problems(self, tenant: str, target: Target) -> list[tuple[str, str]]:
        grants = await self.grants.subject_grants(tenant, self.default_grant)
        return target_problems(target, allow=self.allow_networks, grants=grants, reserved_roots=self.reserved_roots)


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
    policy: TargetPolicy,
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
        problems += await policy.problems(tenant, target)
    if notify is not None:
        problems += notification_problems(notify, allow=policy.allow_networks)
    if problems:
        raise InvalidRequestError(problems)
    return planned
