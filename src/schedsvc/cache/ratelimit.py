"""Fixed-window rate limits per API key, and failed-authentication limits per client address, shared
across replicas through Redis (in-process without Redis, and while Redis is unavailable).

Written by hand because Litestar's rate-limit middleware reads and writes a request history without an
atomic operation (its lock is per process, so replicas lose each other's counts) and knows one limit for
everyone; here one Lua script counts atomically and the limit is chosen per tenant. The same script also
reads the response cache for a cacheable ``GET`` (:class:`~schedsvc.cache.responses.CacheProbe`), so such
a request costs one Redis round trip in all, hit or miss.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from schedsvc.cache.redis import RedisLink
from schedsvc.cache.responses import CacheProbe, CacheRead

# KEYS[1] = counter for this key and window; with a cache probe, KEYS[2..n-1] = the version keys the
# response depends on and KEYS[n] = the cached entry ("<versions>\n<response>").
# ARGV[1] = window in ms, ARGV[2] = the limit (over it, the cache is not read).
# Returns {count, ms left} and, with a probe, the versions read and the entry's response if still current.
_GATE_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
if #KEYS < 3 or n > tonumber(ARGV[2]) then return {n, ttl} end
local versions = {}
for i = 2, #KEYS - 1 do versions[#versions + 1] = redis.call('GET', KEYS[i]) or '-' end
local tag = table.concat(versions, ':')
local entry = redis.call('GET', KEYS[#KEYS])
if entry and string.sub(entry, 1, #tag + 1) == tag .. '\\n' then
  return {n, ttl, tag, string.sub(entry, #tag + 2)}
end
return {n, ttl, tag}
"""
# KEYS[1] = failure counter of an address and window; ARGV[1] = window in ms. Returns the count.
_FAILURE_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""
WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int


def _window(now: float) -> tuple[int, int]:
    """The current window's number and the seconds until it ends."""
    window = int(now // WINDOW_SECONDS)
    return window, max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))


class _MemoryCounts:
    """Per-window counters in this process."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}

    def add(self, key: str, amount: int = 1) -> tuple[int, int]:
        """Count ``amount`` more for ``key`` in this window; returns the count and seconds to the window's end."""
        window, reset = _window(time.time())
        if len(self._counts) > 50_000:
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
        count = self._counts.get((key, window), 0) + amount
        if amount:
            self._counts[(key, window)] = count
        return count, reset


class MemoryRateLimiter:
    """In-process counting: local development, and the fallback while Redis is unavailable."""

    def __init__(self) -> None:
        self._counts = _MemoryCounts()

    async def hit(self, key: str, limit: int, probe: CacheProbe | None = None) -> tuple[Decision, CacheRead | None]:
        """Count one request; without Redis there is no response cache to read (``None``)."""
        count, reset = self._counts.add(key)
        return Decision(count <= limit, limit, max(0, limit - count), reset), None


class RedisRateLimiter:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._script = link.client.register_script(_GATE_SCRIPT)
        self._fallback = MemoryRateLimiter()

    async def hit(self, key: str, limit: int, probe: CacheProbe | None = None) -> tuple[Decision, CacheRead | None]:
        """Count one request and, for a cacheable ``GET``, read its cached response: one round trip.

        The :class:`CacheRead` is None when the response cache must be bypassed (Redis unavailable, or
        the request is over its limit).
        """
        if not self._link.available:
            return await self._fallback.hit(key, limit)
        window = int(time.time() // WINDOW_SECONDS)
        keys = [f"{self._link.prefix}rl:{key}:{window}"]
        if probe is not None:
            keys += [*probe.version_keys, probe.entry_key]
        try:
            if self._link.pending_bumps:  # versions bumped while Redis was away must land before a read
                await self._link.flush_pending_bumps()
            reply = await self._script(keys=keys, args=[WINDOW_SECONDS * 1000, limit])
        except (RedisError, OSError) as exc:
            self._link.failed(exc, "rate limit")
            return await self._fallback.hit(key, limit)
        count, ttl_ms = int(reply[0]), int(reply[1])
        decision = Decision(count <= limit, limit, max(0, limit - count), max(1, math.ceil(ttl_ms / 1000)))
        read = None
        if probe is not None and len(reply) >= 3:
            tag = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
            read = CacheRead(probe.entry_key, tag, reply[3] if len(reply) > 3 else None)
        return decision, read


RateLimiter = MemoryRateLimiter | RedisRateLimiter


class MemoryFailureCounter:
    """Failed authentications per client address in this process (no Redis, or Redis unavailable)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts = _MemoryCounts()

    async def blocked(self, address: str) -> int | None:
        """Seconds until ``address`` may try unknown keys again; None while it is under the limit."""
        count, reset = self._counts.add(address, 0)
        return reset if count >= self.limit else None

    async def record(self, address: str) -> None:
        self._counts.add(address)


class RedisFailureCounter:
    """Failed authentications per client address, counted across replicas."""

    def __init__(self, link: RedisLink, limit: int) -> None:
        self.limit = limit
        self._link = link
        self._script = link.client.register_script(_FAILURE_SCRIPT)
        self._fallback = MemoryFailureCounter(limit)

    def _key(self, address: str) -> tuple[str, int]:
        window, reset = _window(time.time())
        return f"{self._link.prefix}af:{address}:{window}", reset

    async def blocked(self, address: str) -> int | None:
        if not self._link.available:
            return await self._fallback.blocked(address)
        key, reset = self._key(address)
        try:
            count = await self._link.client.get(key)
        except (RedisError, OSError) as exc:
            self._link.failed(exc, "failed-authentication count")
            return await self._fallback.blocked(address)
        return reset if count is not None and int(count) >= self.limit else None

    async def record(self, address: str) -> None:
        await self._fallback.record(address)  # kept too, so an outage does not reset the count
        if not self._link.available:
            return
        key, _ = self._key(address)
        try:
            await self._script(keys=[key], args=[WINDOW_SECONDS * 1000])
        except (RedisError, OSError) as exc:
            self._link.failed(exc, "failed-authentication count")


FailureCounter = MemoryFailureCounter | RedisFailureCounter
