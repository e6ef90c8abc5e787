"""What each follower of tenant change notices drops for each kind: a revocation (``key``, ``tenant``) ends
what a key opened; a settings or secret change (``data``) makes cached tenant data be read again and leaves
keys and console sessions alone. The notices come from an in-process feed here; tests/integration covers the
same followers over NATS."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest

from schedsvc.api.auth import follow_key_changes
from schedsvc.config import Settings
from schedsvc.console.session import RevokedKeys
from schedsvc.domain.tenants import TENANT_CHANGE_KINDS, TenantChangeKind, TenantPreferences
from schedsvc.execution._tenants import TenantDirectory
from schedsvc.store.retention import RunRetention
from schedsvc.store.tenants import key_id_of

TENANT = "acme"
KEY = "sk_00000000000000aa_" + "a" * 43
Handler = Callable[[TenantChangeKind, str], None]


class NoticeFeed:
    """Hands every announced notice to the handlers that follow it, as the NATS subscription does."""

    reconnects = 0

    def __init__(self) -> None:
        self.handlers: list[Handler] = []

    async def tenant_changes(self, handler: Handler) -> Callable[[], Awaitable[None]]:
        self.handlers.append(handler)

        async def unsubscribe() -> None:
            self.handlers.remove(handler)

        return unsubscribe

    def announce(self, kind: TenantChangeKind, value: str) -> None:
        for handler in self.handlers:
            handler(kind, value)


class CountingTenantStore:
    """A tenant store that counts its reads: a read after a notice means the cached entry was dropped."""

    def __init__(self) -> None:
        self.reads = 0

    async def delivery_settings(self, tenant: str, default_pattern: str) -> tuple[list[bytes], list[str]]:
        self.reads += 1
        return [b"secret"], [default_pattern]

    async def preferences(self, tenant: str) -> TenantPreferences:
        self.reads += 1
        return TenantPreferences(run_retention_days=7)


def value_of(kind: TenantChangeKind) -> str:
    return key_id_of(KEY) if kind == "key" else TENANT


@pytest.mark.parametrize("kind", TENANT_CHANGE_KINDS)
async def test_the_api_key_cache_drops_keys_only_on_a_revocation(kind: TenantChangeKind) -> None:
    feed = NoticeFeed()
    cache, _ = await follow_key_changes(feed)  # type: ignore[arg-type]  # the feed is all it follows
    cache.put(KEY, TENANT, cache.epoch)
    feed.announce(kind, value_of(kind))
    assert (cache.get(KEY) is None) == (kind in ("key", "tenant"))


@pytest.mark.parametrize("kind", TENANT_CHANGE_KINDS)
async def test_console_sessions_end_only_on_a_revocation(kind: TenantChangeKind) -> None:
    feed = NoticeFeed()
    revoked = RevokedKeys()
    await revoked.follow(feed)
    session = {"tenant": TENANT, "key_id": key_id_of(KEY), "signed_in": time.time() - 1}
    feed.announce(kind, value_of(kind))
    assert revoked.revoked(session) == (kind in ("key", "tenant"))


@pytest.mark.parametrize("kind", TENANT_CHANGE_KINDS)
async def test_cached_tenant_data_is_read_again_after_a_tenant_or_data_notice(kind: TenantChangeKind) -> None:
    settings = Settings()
    feed = NoticeFeed()
    store = CountingTenantStore()
    directory = TenantDirectory(store, settings)
    retention = RunRetention(store, settings)
    await directory.follow(feed)  # type: ignore[arg-type]
    await retention.follow(feed)
    await directory.delivery(TENANT)
    await retention.of(TENANT)
    before = store.reads  # the directory reads twice (secrets, preferences), the retention once
    await directory.delivery(TENANT)
    await retention.of(TENANT)
    assert store.reads == before  # cached

    feed.announce(kind, value_of(kind))
    await directory.delivery(TENANT)
    await retention.of(TENANT)
    assert store.reads - before == (3 if kind in ("tenant", "data") else 0)
