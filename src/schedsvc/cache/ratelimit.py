"""Fixed-window rate limits per API key, and failed-authentication limits per client address, shared
across replicas through Redis (in-process without Redis, and while Redis is unavailable): the adapters of
the :class:`~schedsvc.store.base.RateLimiter` and :class:`~schedsvc.store.base.FailureCounter` ports.

Written by hand because Litestar's rate-limit middleware reads and writes a request history without an
atomic operation (its lock is per process, so replicas lose each other's counts) and knows one limit for
everyone; here one Lua script counts atomically and the limit is chosen per tenant. The same script does
the response cache's part of the request (:mod:`schedsvc.cache.responses`): for a cacheable ``GET`` it
reads the entry, for a write it replaces the versions and marks the write in flight. Every request
costs one Redis round trip in all: what needs no answer (the marks of finished writes, new cache entries)
rides on the next one.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from schedsvc.cache.redis import Deferred, RedisLink
from schedsvc.cache.responses import VERSION_LIFETIME_SECONDS, WRITE_FLIGHT_SECONDS, probe_for, write_intent_for
from schedsvc.domain.admission import Admission, CacheProbe, CacheRead, Decision, WriteIntent

# KEYS[1] = counter for this key and window; then k version keys, the k in-flight marks of the same things
# and, to read a response, its entry ("<versions>\n<response>").
# ARGV[1] = window in ms, ARGV[2] = the limit (over it, nothing else is done), ARGV[3] = '' (count only),
# 'r' (read the entry) or 'w' (a write: new versions, in-flight marks), ARGV[4] = k; for 'w' ARGV[5] = the
# write's token, ARGV[6] = how long its mark lasts (ms), ARGV[7] = the versions' lifetime (s); for 'r'
# ARGV[5] = a fresh token, the version of anything whose version is missing (never written, expired or
# evicted: no old entry can match it), ARGV[6] = the versions' lifetime (s).
# Returns {count, ms left}, and for 'r' the versions read and the entry's response if still current (no
# versions: a write is in flight, bypass the cache); for 'w' a third element once the write is marked.
# The in-flight sets have no expiry of their own (a volatile-* eviction policy must never drop a mark while
# its write runs): a set disappears with its last member, and each write drops the lapsed marks it finds.
# TIME inside a script that writes needs Redis 5 or later (effects replication).
_ADMIT_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
local mode = ARGV[3]
if mode == '' or n > tonumber(ARGV[2]) then return {n, ttl} end
local k = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
if mode == 'w' then
  local lapses = string.format('%d', tonumber(now) + tonumber(ARGV[6]))
  for i = 2, k + 1 do redis.call('SET', KEYS[i], ARGV[5], 'EX', ARGV[7]) end
  for i = k + 2, 2 * k + 1 do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    redis.call('ZADD', KEYS[i], lapses, ARGV[5])
  end
  return {n, ttl, 1}
end
for i = k + 2, 2 * k + 1 do
  if redis.call('ZCOUNT', KEYS[i], '(' .. now, '+inf') > 0 then return {n, ttl} end
end
local versions = {}
for i = 2, k + 1 do
  local v = redis.call('GET', KEYS[i])
  if not v then
    redis.call('SET', KEYS[i], ARGV[5], 'EX', ARGV[6])
    v = ARGV[5]
  end
  versions[#versions + 1] = v
end
local tag = table.concat(versions, ':')
local entry = redis.call('GET', KEYS[2 * k + 2])
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
    """In-process counting: local development, and the fallback while Redis is unavailable. There is no
    response cache without Redis, so it never probes one and records no writes."""

    def __init__(self) -> None:
        self._counts = _MemoryCounts()

    def read_probe(self, tenant: str, path: str, query_string: bytes, job_id: str | None) -> CacheProbe | None:
        return None

    def write_intent(self, tenant: str, job_id: str | None) -> WriteIntent | None:
        return None

    async def admit(
        self, key: str, limit: int, *, probe: CacheProbe | None = None, write: WriteIntent | None = None
    ) -> Admission:
        count, reset = self._counts.add(key)
        return Admission(Decision(count <= limit, limit, max(0, limit - count), reset))

    # The port's end of a recorded write; never reached, as this limiter records none (write_recorded False).

    async def settle(self, write: WriteIntent) -> None:
        pass

    def written(self, write: WriteIntent) -> None:
        pass


class RedisRateLimiter:
    """Counts in Redis, and does the response cache's part of a request in the same script."""

    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._script = link.client.register_script(_ADMIT_SCRIPT)
        self._fallback = MemoryRateLimiter()

    def read_probe(self, tenant: str, path: str, query_string: bytes, job_id: str | None) -> CacheProbe | None:
        return probe_for(self._link.prefix, tenant, path, query_string, job_id)

    def write_intent(self, tenant: str, job_id: str | None) -> WriteIntent | None:
        return write_intent_for(self._link.prefix, tenant, job_id)

    async def admit(
        self, key: str, limit: int, *, probe: CacheProbe | None = None, write: WriteIntent | None = None
    ) -> Admission:
        """Count one request and, in the same round trip, read a cacheable ``GET``'s response or record a
        write (new versions, marked in flight); also sends this process's deferred commands (the marks of
        finished writes, new cache entries).

        Without Redis (or over the limit) the cache is bypassed and the write not recorded: its versions
        are then bumped after the database write, as for any write the admission did not cover.
        """
        if not self._link.available:
            return await self._fallback.admit(key, limit)
        window = int(time.time() // WINDOW_SECONDS)
        keys = [f"{self._link.prefix}rl:{key}:{window}"]
        args: list[Any] = [WINDOW_SECONDS * 1000, limit]
        if write is not None:
            keys += [*write.version_keys, *write.flight_keys]
            args += [
                "w",
                len(write.version_keys),
                write.token,
                WRITE_FLIGHT_SECONDS * 1000,
                VERSION_LIFETIME_SECONDS,
            ]
        elif probe is not None:
            keys += [*probe.version_keys, *probe.flight_keys, probe.entry_key]
            args += ["r", len(probe.version_keys), secrets.token_hex(8), VERSION_LIFETIME_SECONDS]
        else:
            args += ["", 0]
        deferred = self._link.take_deferred()
        try:
            if self._link.pending_bumps:  # versions bumped while Redis was away must land before a read
                await self._link.flush_pending_bumps()
            reply = await self._run(keys, args, deferred)
        except (RedisError, OSError) as exc:
            self._link.return_deferred(deferred)
            self._link.failed(exc, "rate limit")
            return await self._fallback.admit(key, limit)
        count, ttl_ms = int(reply[0]), int(reply[1])
        decision = Decision(count <= limit, limit, max(0, limit - count), max(1, math.ceil(ttl_ms / 1000)))
        if write is not None:
            return Admission(decision, write_recorded=len(reply) >= 3)
        read = None
        if probe is not None and len(reply) >= 3:
            tag = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
            read = CacheRead(probe.entry_key, tag, reply[3] if len(reply) > 3 else None)
        return Admission(decision, cache_read=read)

    async def _run(self, keys: list[str], args: list[Any], deferred: Deferred) -> Any:
        """The script, after the deferred commands: one round trip (a pipeline) either way."""
        if not deferred:
            return await self._script(keys=keys, args=args)
        async with self._link.client.pipeline(transaction=False) as pipe:
            for command in deferred.commands:
                pipe.execute_command(*command)
            # EVALSHA directly: a Script in a pipeline costs a SCRIPT EXISTS round trip before every execute.
            pipe.evalsha(self._script.sha, len(keys), *keys, *args)
            replies = await pipe.execute(raise_on_error=False)
        # A deferred command that failed does not fail the request: a finished write's commands wait for
        # the next round trip, a cache entry is dropped (a miss later).
        self._link.return_deferred(deferred, replies)
        if isinstance(replies[-1], NoScriptError):  # Redis restarted or its scripts were flushed
            return await self._script(keys=keys, args=args)
        if isinstance(replies[-1], Exception):
            raise replies[-1]
        return replies[-1]

    async def settle(self, write: WriteIntent) -> None:
        """Before ``write``'s response: the jobs it changed beyond its admission's cover, bumped at once."""
        await self._link.bump_uncovered(write)

    def written(self, write: WriteIntent) -> None:
        """The request that recorded ``write`` is done: its new versions and mark removals go with this
        process's next round trip."""
        self._link.finish_write(write)


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
