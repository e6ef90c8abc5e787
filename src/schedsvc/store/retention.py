"""How long a tenant's runs are kept: its own ``runRetentionDays`` within the operator's maximum, else the
deployment's default. Every run record carries its expiry (``expireAt``, removed by the TTL index of
migration 1), computed from this when the record is written; records written before a change keep theirs.

Read on every run write, so it is cached per process. A change through ``PATCH /tenant/settings`` is
announced on NATS and every process forgets the tenant at once (:meth:`RunRetention.follow`);
:data:`CACHE_SECONDS` bounds how long a process that missed the notice keeps the old value.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Protocol

from schedsvc.config import Settings
from schedsvc.domain.tenants import TENANT_DATA_CHANGES, TenantChangeKind, TenantPreferences, effective_settings

CACHE_SECONDS = 60.0
_MAX_ENTRIES = 10_000


class PreferenceReader(Protocol):
    async def preferences(self, tenant: str) -> TenantPreferences: ...


class TenantChangeFeed(Protocol):
    async def tenant_changes(
        self, handler: Callable[[TenantChangeKind, str], None]
    ) -> Callable[[], Awaitable[None]]: ...


class RunRetention:
    """``await of(tenant)``: how long after it ends a run of ``tenant`` is kept.

    Every adapter that writes run records is given one (``schedsvc.wiring`` builds it once per process);
    without a reader of tenant settings (``tenants`` None) it answers the deployment's default.
    """

    def __init__(self, tenants: PreferenceReader | None, settings: Settings) -> None:
        self._tenants = tenants
        self._default = settings.run_retention_days
        self._max = settings.run_retention_max_days
        self._cache: dict[str, tuple[float, timedelta]] = {}
        self._forgotten = 0
        """Counts :meth:`forget` calls: a value read while one happened may be the old one, and is not kept."""

    async def of(self, tenant: str) -> timedelta:
        if self._tenants is None:
            return timedelta(days=self._default)
        hit = self._cache.get(tenant)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        forgotten = self._forgotten
        preferences = await self._tenants.preferences(tenant)
        retention = timedelta(days=effective_settings(preferences, self._default, self._max).run_retention_days)
        if forgotten == self._forgotten:
            if len(self._cache) >= _MAX_ENTRIES:
                self._cache.clear()
            self._cache[tenant] = (now + CACHE_SECONDS, retention)
        return retention

    def forget(self, tenant: str) -> None:
        self._forgotten += 1
        self._cache.pop(tenant, None)

    async def follow(self, changes: TenantChangeFeed) -> Callable[[], Awaitable[None]]:
        """Forget a tenant when a change to it is announced; returns an unsubscribe."""

        def on_change(kind: TenantChangeKind, value: str) -> None:
            if kind in TENANT_DATA_CHANGES:
                self.forget(value)

        return await changes.tenant_changes(on_change)
