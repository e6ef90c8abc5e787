"""The tenant settings a run needs (signing keys, NATS subject grants), cached briefly per process.

A secret rotation becomes visible to workers within :data:`CACHE_SECONDS`; the previous secret keeps
signing during the rotation window anyway, so receivers never see a gap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from schedsvc.config import Settings
from schedsvc.store.tenants import MongoTenantStore

CACHE_SECONDS = 10.0
_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class TenantDelivery:
    signing_keys: tuple[bytes, ...]
    """HMAC keys of the current signing secrets, newest first."""
    subject_grants: tuple[str, ...]
    """Subject patterns the tenant's NATS targets may publish under."""


class TenantDirectory:
    """Reads :class:`TenantDelivery` through the tenant store and caches it per tenant."""

    def __init__(self, tenants: MongoTenantStore, settings: Settings) -> None:
        self._tenants = tenants
        self._grant = settings.nats_subject_grant
        self._cache: dict[str, tuple[float, TenantDelivery]] = {}

    async def delivery(self, tenant: str) -> TenantDelivery:
        now = time.monotonic()
        hit = self._cache.get(tenant)
        if hit is not None and hit[0] > now:
            return hit[1]
        keys = await self._tenants.signing_secrets(tenant)
        grants = await self._tenants.subject_grants(tenant, self._grant)
        value = TenantDelivery(tuple(keys), tuple(grants))
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[tenant] = (now + CACHE_SECONDS, value)
        return value
