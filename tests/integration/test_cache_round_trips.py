"""One Redis round trip per API request, writes included, and what makes that safe (real Redis and MongoDB).

Round trips are counted on the client side: redis-py sends each round trip (one command, a script or a
pipeline) with one ``send_packed_command`` call, which these tests count while the real call goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY
from redis.asyncio import connection as redis_connection
from tests.conftest import api_settings
from tests.integration.test_cache_ratelimit import job_body

from schedsvc.api import create_app
from schedsvc.cache import PREFETCHED, RedisLink, RedisRateLimiter, ResilientStore
from schedsvc.cache import redis as redis_module
from schedsvc.config import Settings
from schedsvc.domain.admission import CacheProbe, WriteIntent


class RoundTrips:
    """How many round trips redis-py has made since the counter was installed."""

    count = 0


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> type[RoundTrips]:
    send = redis_connection.AbstractConnection.send_packed_command

    async def counted(self: Any, command: Any, check_health: bool = True) -> None:
        RoundTrips.count += 1
        await send(self, command, check_health)

    RoundTrips.count = 0
    monkeypatch.setattr(redis_connection.AbstractConnection, "send_packed_command", counted)
    return RoundTrips


@pytest.fixture
def app(settings: Settings, redis_url: str, drop_database: None) -> Litestar:
    """The API with the Redis cache, on this test's own database (dropped at its end)."""
    return create_app(api_settings(settings, redis_url))


def cache_hits() -> float:
    """Responses served from the cache by this process so far (the counter is process-wide: compare)."""
    return REGISTRY.get_sample_value("schedsvc_cache_requests_total", {"result": "hit"}) or 0.0


async def read_through(limiter: RedisRateLimiter, store: ResilientStore, probe: CacheProbe, document: bytes) -> Any:
    """One cacheable read as the API does it: "bypass", the cached payload, or None (a miss that stores
    ``document``, standing for what MongoDB returned, with the next round trip)."""
    admission = await limiter.admit("k", 1000, probe=probe)
    if admission.cache_read is None:
        return "bypass"
    token = PREFETCHED.set(admission.cache_read)
    try:
        payload = await store.get(probe.entry_key)
        if payload is None:
            await store.set(probe.entry_key, document, expires_in=60)
        return payload
    finally:
        PREFETCHED.reset(token)


@pytest.fixture
async def link(redis_url: str, unique: str) -> AsyncIterator[RedisLink]:
    """A Redis link whose keys carry this test's own prefix (deleted at its end)."""
    link = RedisLink(redis_url, f"{unique}:")
    try:
        yield link
    finally:
        keys = [key async for key in link.client.scan_iter(match=f"{unique}:*")]
        if keys:
            await link.client.delete(*keys)
        await link.close()


async def test_a_read_never_caches_while_a_write_is_in_flight(link: RedisLink) -> None:
    """The write's admission replaces the versions before its database write; reads in between bypass."""
    limiter = RedisRateLimiter(link)
    store = ResilientStore(link)
    probe = limiter.read_probe("acme", "/jobs/j1", b"", "j1")
    assert probe is not None

    async def read() -> Any:
        payload = await read_through(limiter, store, probe, b"seen-by-reader")
        if payload is None:  # a miss: store the entry now, not with the next round trip
            await store.drain()
        return payload

    assert await read() is None  # a miss, which stores the entry
    assert await read() == b"seen-by-reader"

    write = limiter.write_intent("acme", "j1")
    assert write is not None
    assert (await limiter.admit("k", 1000, write=write)).write_recorded
    assert await read() == "bypass"  # the database write may not have happened yet
    assert await read() == "bypass"
    other = limiter.write_intent("acme", "j1")
    assert other is not None and (await limiter.admit("k", 1000, write=other)).write_recorded
    limiter.written(write)
    assert await read() == "bypass"  # the second write is still in flight
    limiter.written(other)
    assert await read() is None  # the old entry's versions are gone: a miss
    assert await read() == b"seen-by-reader"

    # Another job of the tenant is not affected by writes to j1; the lists are.
    lists = limiter.read_probe("acme", "/jobs", b"", None)
    assert lists is not None
    third = limiter.write_intent("acme", "j1")
    assert third is not None and (await limiter.admit("k", 1000, write=third)).write_recorded
    assert (await limiter.admit("k", 1000, probe=lists)).cache_read is None
    j2 = limiter.read_probe("acme", "/jobs/j2", b"", "j2")
    assert (await limiter.admit("k", 1000, probe=j2)).cache_read is not None

    # Over its limit a write records nothing (it is refused before it writes anything).
    refused = limiter.write_intent("acme", "j2")
    assert refused is not None
    admission = await limiter.admit("k", 1, write=refused)
    assert not admission.decision.allowed and not admission.write_recorded

    # Without a next request, a finished write's marks are removed on their own.
    limiter.written(third)
    for _ in range(50):
        await asyncio.sleep(0.05)
        if await link.client.zcard(third.flight_keys[0]) == 0:
            break
    assert await link.client.zcard(third.flight_keys[0]) == 0
    assert (await limiter.admit("k", 1000, probe=lists)).cache_read is not None


async def test_every_request_costs_one_redis_round_trip(
    app: Litestar, auth: dict[str, str], round_trips: type[RoundTrips]
) -> None:
    app.state.redis.deferred_flush_seconds = 3600.0  # deferred commands go with the next request only
    async with AsyncTestClient(app) as client:
        # Warm up: the key's first use, the script's first load.
        job = (await client.post("/jobs", json=job_body("warm"), headers=auth)).json()
        await client.get(f"/jobs/{job['id']}", headers=auth)

        async def trips(method: str, path: str, body: Any = None, status: int = 200) -> int:
            before = round_trips.count
            r = await client.request(method, path, json=body, headers=auth)
            assert r.status_code == status, r.text
            return round_trips.count - before

        async def hits() -> float:
            metrics = (await client.get("/metrics")).text  # public, and never rate-limited: no Redis
            lines = [
                line for line in metrics.splitlines() if line.startswith('schedsvc_cache_requests_total{result="hit"}')
            ]
            return float(lines[0].split()[-1]) if lines else 0.0

        async def cached_read(path: str) -> int:
            await trips("GET", path)  # a miss after a write: its entry goes with the next round trip
            before = await hits()
            count = await trips("GET", path)
            assert await hits() == before + 1, f"GET {path} was not served from the cache"
            return count

        counts = {
            "POST /jobs": await trips("POST", "/jobs", job_body("second"), 201),
            "PATCH /jobs/{id}": await trips("PATCH", f"/jobs/{job['id']}", {"tags": ["t"]}),
            "GET /jobs/{id} (cached)": await cached_read(f"/jobs/{job['id']}"),
            "GET /jobs (cached)": await cached_read("/jobs"),
            "POST /jobs/{id}/pause": await trips("POST", f"/jobs/{job['id']}/pause"),
            "POST /jobs/{id}/resume": await trips("POST", f"/jobs/{job['id']}/resume"),
            "GET /jobs/{id}/runs": await trips("GET", f"/jobs/{job['id']}/runs"),
            "POST /schedules/preview": await trips(
                "POST", "/schedules/preview", {"schedule": {"kind": "interval", "seconds": 60}, "count": 2}
            ),
            "DELETE /jobs/{id}": await trips("DELETE", f"/jobs/{job['id']}", status=204),
        }
        assert counts == dict.fromkeys(counts, 1)

        # And the one round trip kept the cache right: the delete is visible at once.
        assert (await client.get(f"/jobs/{job['id']}", headers=auth)).status_code == 404
        assert [j["name"] for j in (await client.get("/jobs", headers=auth)).json()["items"]] == ["second"]


async def test_a_cached_response_carries_only_this_requests_headers(app: Litestar, auth: dict[str, str]) -> None:
    async with AsyncTestClient(app) as client:
        job = (await client.post("/jobs", json=job_body("cached"), headers=auth)).json()
        remaining: list[int] = []
        bodies: list[bytes] = []
        hits = 0.0
        for n in range(4):  # a miss (stored), then hits
            r = await client.get(f"/jobs/{job['id']}", headers={**auth, "X-Request-ID": f"req-{n}"})
            assert r.status_code == 200
            assert r.headers.get_list("x-request-id") == [f"req-{n}"]
            assert len(r.headers.get_list("ratelimit-remaining")) == 1
            remaining.append(int(r.headers["ratelimit-remaining"]))
            bodies.append(r.content)
            if n == 0:
                hits = cache_hits()  # the miss stored the entry (sent with the next request's round trip)
        assert cache_hits() == hits + 3, "the reads after the first were not served from the cache"
        assert remaining == sorted(remaining, reverse=True) and len(set(remaining)) == 4
        assert bodies == [bodies[0]] * 4


async def test_a_failing_deferred_command_does_not_fail_the_request(link: RedisLink, unique: str) -> None:
    link.deferred_flush_seconds = 3600.0
    limiter = RedisRateLimiter(link)
    await link.client.set(f"{unique}:not-a-set", b"x")
    link.finish_write(WriteIntent("acme", None, (), (f"{unique}:not-a-set",), "token"))  # ZREM: WRONGTYPE
    link.defer(("SET", f"{unique}:entry", b"tag\nbody", "EX", 60))
    probe = limiter.read_probe("acme", "/jobs", b"", None)
    admission = await limiter.admit("k", 1000, probe=probe)
    assert admission.decision.allowed and admission.cache_read is not None  # Redis answered
    assert link.available  # no breaker opened
    assert await link.client.get(f"{unique}:entry") == b"tag\nbody"  # the other deferred command landed
    assert link.deferred == 1  # the failed mark removal waits for the next round trip


async def test_a_lost_in_flight_mark_or_version_never_leaves_a_stale_entry(link: RedisLink) -> None:
    """Redis failed over or evicted: a read during the write saw no mark and cached the old document; the
    finished write's new versions keep it from being served. A missing version never matches an old entry."""
    link.deferred_flush_seconds = 3600.0  # deferred commands go with the next round trip only
    limiter = RedisRateLimiter(link)
    store = ResilientStore(link)
    probe = limiter.read_probe("acme", "/jobs/j1", b"", "j1")
    assert probe is not None
    write = limiter.write_intent("acme", "j1")
    assert write is not None and (await limiter.admit("k", 1000, write=write)).write_recorded
    await link.client.delete(*write.flight_keys)  # the marks are lost mid-write
    assert await read_through(limiter, store, probe, b"old") is None  # cached the old document
    assert await read_through(limiter, store, probe, b"old") == b"old"
    limiter.written(write)  # the database write is done
    assert await read_through(limiter, store, probe, b"new") is None  # the old entry no longer matches
    assert await read_through(limiter, store, probe, b"new") == b"new"

    await link.client.delete(*probe.version_keys)  # the version is lost (evicted, expired)
    assert await read_through(limiter, store, probe, b"newer") is None  # the entry is not served
    assert await read_through(limiter, store, probe, b"newer") == b"newer"
    later = limiter.write_intent("acme", "j1")
    assert later is not None and (await limiter.admit("k", 1000, write=later)).write_recorded
    limiter.written(later)
    await link.flush_deferred()
    await link.client.delete(*probe.version_keys)  # lost again: not the entry of the last missing version
    assert await read_through(limiter, store, probe, b"newest") is None
    assert await read_through(limiter, store, probe, b"newest") == b"newest"


async def test_finished_writes_are_unmarked_soon_after_redis_failed(
    link: RedisLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marks whose removal could not be sent (the breaker was open) are sent on their own once Redis is
    back, without waiting for another request; none is dropped, however many."""
    monkeypatch.setattr(redis_module, "BREAKER_SECONDS", 0.2)
    monkeypatch.setattr(redis_module, "DEFERRED_PER_ROUND_TRIP", 50)
    limiter = RedisRateLimiter(link)
    writes = [limiter.write_intent("acme", f"j{n}") for n in range(40)]
    for write in writes:
        assert write is not None and (await limiter.admit("k", 1000, write=write)).write_recorded
    link.failed(ConnectionError("test"), "test")  # Redis failed: the breaker opens for 0.2 s
    for write in writes:
        assert write is not None
        limiter.written(write)  # 80 version replacements and 80 mark removals, two round trips' worth
    keys = [key for write in writes if write is not None for key in write.flight_keys]
    for _ in range(40):
        await asyncio.sleep(0.05)
        if not link.deferred:
            break
    assert link.deferred == 0
    assert [await link.client.zcard(key) for key in keys] == [0] * len(keys)


async def test_a_bulk_action_costs_two_round_trips_and_its_changes_are_read_at_once(
    app: Litestar, auth: dict[str, str], round_trips: type[RoundTrips]
) -> None:
    """The bulk call's admission covers the lists; the jobs it changed are bumped together before the
    response (one round trip, not one per job), so their cached reads show the change at once."""
    app.state.redis.deferred_flush_seconds = 3600.0
    async with AsyncTestClient(app) as client:
        jobs = []
        for n in range(5):
            body = {**job_body(f"bulk-{n}"), "tags": ["bulk"]}
            jobs.append((await client.post("/jobs", json=body, headers=auth)).json())
        for job in jobs:  # cached from here on
            for _ in range(2):
                assert (await client.get(f"/jobs/{job['id']}", headers=auth)).json()["status"] == "active"
        before = round_trips.count
        r = await client.post("/jobs/bulk/pause", json={"selector": {"tag": "bulk"}}, headers=auth)
        assert r.status_code == 200 and r.json()["changed"] == 5, r.text
        assert round_trips.count - before == 2
        for job in jobs:
            assert (await client.get(f"/jobs/{job['id']}", headers=auth)).json()["status"] == "paused"
