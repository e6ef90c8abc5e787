"""The rules a job's schedule and target must meet when they are stored, for every way in: ``/jobs`` and
the console's forms call these, so the two cannot drift apart."""

from __future__ import annotations

from datetime import datetime

from litestar.datastructures import State

from schedsvc.cache import NoticedCache
from schedsvc.domain import InvalidRequestError, InvalidScheduleError, Schedule, Target, target_problems
from schedsvc.store import MongoTenantStore
from schedsvc.timing import compile_schedule, from_ms, to_ms, with_defaults

GRANTS_CACHE_SECONDS = 300.0
"""As long as execution keeps the same grants (``execution/_tenants.py``)."""


class SubjectGrants:
    """Tenants' NATS subject grants, read once per process and kept like execution keeps them: a tenant
    change notice drops the tenant's entry, :data:`GRANTS_CACHE_SECONDS` bounds the rest (grants are set
    by operators in the tenant document; execution checks them again before every publish)."""

    def __init__(self, tenants: MongoTenantStore, default_pattern: str, cache: NoticedCache[str, list[str]]) -> None:
        self._tenants = tenants
        self._default = default_pattern
        self._cache = cache

    def forget(self, tenant: str) -> None:
        self._cache.drop(lambda name, _grants: name == tenant)

    async def of(self, tenant: str) -> list[str]:
        hit = self._cache.get(tenant)
        if hit is not None:
            return hit
        epoch = self._cache.epoch
        grants = await self._tenants.subject_grants(tenant, self._default)
        self._cache.put(tenant, grants, epoch)
        return grants


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
    state: State, tenant: str, now: datetime, schedule: Schedule | None, target: Target | None
) -> tuple[Schedule, datetime] | None:
    """Check the schedule and the target together, so one answer lists the problems of both (422);
    returns the planned schedule when one was given."""
    problems: list[tuple[str, str]] = []
    planned = None
    if schedule is not None:
        try:
            planned = _planned(schedule, now)
        except InvalidScheduleError as exc:
            problems.append((exc.field, str(exc)))
    if target is not None:
        # The target policy, also applied before every call (execution/targets.py).
        subject_grants: SubjectGrants = state.subject_grants
        grants = await subject_grants.of(tenant)
        problems += target_problems(
            target,
            allow=state.settings.target_allow_networks,
            grants=grants,
            reserved_roots=state.names.reserved_subject_roots,
        )
    if problems:
        raise InvalidRequestError(problems)
    return planned
