"""The tenant settings a run needs (signing keys, NATS subject grants, the default notification target),
cached per process.

Runs of a tenant would otherwise read the tenant document once each. ``schedsvc tenants rotate-secret``
announces the change on NATS and every execution process drops the tenant's entry at once
(:meth:`TenantDirectory.follow`), so the next delivery is signed with the new secret within about a
second; :data:`CACHE_SECONDS` only bounds how long a process that missed the notice (NATS unreachable
meanwhile) keeps the old one. The previous secret keeps signing during the rotation window anyway, so
receivers never see a gap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from schedsvc.cache import NoticedCache
from schedsvc.config import Settings
from schedsvc.domain.models import NotificationTarget
from schedsvc.domain.tenants import TENANT_DATA_CHANGES, TenantChangeKind
from schedsvc.store.base import RunBus, TenantDeliveryStore

CACHE_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class TenantDelivery:
    signing_keys: tuple[bytes, ...]
    """HMAC keys of the current signing secrets, newest first."""
    subject_grants: tuple[str, ...]
    """Subject patterns the tenant's NATS targets may publish under."""
    notify: NotificationTarget | None = None
    """The tenant's default notification target (``/tenant/settings``)."""


class TenantDirectory:
    """Reads :class:`TenantDelivery` through the tenant store and caches it per tenant."""

    def __init__(self, tenants: TenantDeliveryStore, settings: Settings, bus: RunBus | None = None) -> None:
        self._tenants = tenants
        self._grant = settings.nats_subject_grant
        self._cache: NoticedCache[str, TenantDelivery] = NoticedCache(
            CACHE_SECONDS, max_entries=10_000, gaps=(lambda: bus.reconnects) if bus is not None else None
        )

    async def follow(self, bus: RunBus) -> Callable[[], Awaitable[None]]:
        """Drop a tenant's entry when a change to it is announced; returns an unsubscribe."""

        def on_change(kind: TenantChangeKind, value: str) -> None:
            if kind in TENANT_DATA_CHANGES:
                self._cache.drop(lambda tenant, _delivery: tenant == value)

        return await bus.tenant_changes(on_change)

    async def delivery(self, tenant: str) -> TenantDelivery:
        hit = self._cache.get(tenant)
        if hit is not None:
            return hit
        epoch = self._cache.epoch
        (keys, grants), preferences = await asyncio.gather(
            self._tenants.delivery_settings(tenant, self._grant), self._tenants.preferences(tenant)
        )
        value = TenantDelivery(tuple(keys), tuple(grants), preferences.notify)
        self._cache.put(tenant, value, epoch)
        return value
