"""The notice-emptied cache behind API-key and signing-secret caching (no I/O)."""

from __future__ import annotations

import time

import pytest

from schedsvc.cache import MemoryFailureCounter, NoticedCache


def test_a_value_read_while_a_notice_arrived_is_not_cached() -> None:
    cache: NoticedCache[str, str] = NoticedCache(60)
    epoch = cache.epoch  # a database read starts
    cache.drop(lambda key, _value: key == "k")  # the revocation arrives during the read
    cache.put("k", "tenant", epoch)  # the read returns what it saw before the revocation
    assert cache.get("k") is None


def test_notices_drop_only_what_they_name() -> None:
    cache: NoticedCache[str, str] = NoticedCache(60)
    cache.put("k1", "acme", cache.epoch)
    cache.put("k2", "other", cache.epoch)
    assert cache.drop(lambda _key, tenant: tenant == "acme") == 1
    assert (cache.get("k1"), cache.get("k2")) == (None, "other")


def test_a_reconnection_empties_the_cache() -> None:
    reconnects = [0]
    cache: NoticedCache[str, str] = NoticedCache(60, gaps=lambda: reconnects[0])
    cache.put("k", "acme", cache.epoch)
    assert cache.get("k") == "acme"
    reconnects[0] += 1  # notices sent while disconnected were missed
    assert cache.get("k") is None
    cache.put("k", "acme", cache.epoch)
    assert cache.get("k") == "acme"


def test_entries_expire_after_their_lifetime() -> None:
    cache: NoticedCache[str, str] = NoticedCache(0.05)
    cache.put("k", "acme", cache.epoch)
    assert cache.get("k") == "acme"
    time.sleep(0.06)
    assert cache.get("k") is None


@pytest.mark.parametrize("limit", [1, 3])
async def test_failures_block_an_address_at_the_limit_only(limit: int) -> None:
    counter = MemoryFailureCounter(limit)
    for _ in range(limit - 1):
        await counter.record("10.0.0.1")
    assert await counter.blocked("10.0.0.1") is None
    await counter.record("10.0.0.1")
    retry_after = await counter.blocked("10.0.0.1")
    assert retry_after is not None and 1 <= retry_after <= 60
    assert await counter.blocked("10.0.0.2") is None
