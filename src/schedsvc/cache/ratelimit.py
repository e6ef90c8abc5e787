"""Fixed-window rate limits per API key, shared across replicas through Redis.

Written by hand because Litestar's rate-limit middleware reads and writes a request history without an
atomic operation (its lock is per process, so replicas lose each other's counts) and knows one limit for
everyone; here one Lua script counts atomically and the limit is chosen per tenant.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from schedsvc.cache.redis import RedisLink

# KEYS[1] = counter for this key and window; ARGV[1] = window in ms. Returns {count, ms left}.
_COUNT_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""
WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int


class MemoryRateLimiter:
    """In-process counting: local development, and the fallback while Redis is unavailable."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}

    async def hit(self, key: str, limit: int) -> Decision:
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        if len(self._counts) > 50_000:
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
        count = self._counts.get((key, window), 0) + 1
        self._counts[(key, window)] = count
        reset = math.ceil((window + 1) * WINDOW_SECONDS - now)
        return Decision(count <= limit, limit, max(0, limit - count), reset)


class RedisRateLimiter:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._script = link.client.register_script(_COUNT_SCRIPT)
        self._fallback = MemoryRateLimiter()

    async def hit(self, key: str, limit: int) -> Decision:
        if not self._link.available:
            return await self._fallback.hit(key, limit)
        window = int(time.time() // WINDOW_SECONDS)
        try:
            count, ttl_ms = await self._script(
                keys=[f"{self._link.prefix}rl:{key}:{window}"], args=[WINDOW_SECONDS * 1000]
            )
        except (RedisError, OSError) as exc:
            self._link.failed(exc, "rate limit")
            return await self._fallback.hit(key, limit)
        return Decision(int(count) <= limit, limit, max(0, limit - int(count)), max(1, math.ceil(int(ttl_ms) / 1000)))


RateLimiter = MemoryRateLimiter | RedisRateLimiter
