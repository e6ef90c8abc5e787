"""Redis for the response cache and rate limits, degrading to "no cache" when Redis is down or slow.

:class:`ResilientStore` is the Litestar store behind the response cache: it serves the entry the
request's rate-limit round trip already read (:mod:`schedsvc.cache.responses`) and writes new entries with
the process's next round trip (:meth:`RedisLink.defer`), so a Redis failure is a cache miss (with a metric
and a log line), never a failed or slower request. Writes replace the versions of what they changed (in
their admission round trip, or :meth:`RedisLink.bump` after the database write for a change the admission
did not cover), so a client reads its own writes and tenants never share entries.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import timedelta

from litestar.stores.base import Store
from redis.asyncio import Redis
from redis.exceptions import RedisError

from schedsvc.cache.responses import (
    PREFETCHED,
    VERSION_LIFETIME_SECONDS,
    WRITING,
    WriteIntent,
    job_version_key,
    list_version_key,
)
from schedsvc.domain.errors import CacheUnavailableError
from schedsvc.observability.metrics import CACHE_ERRORS, CACHE_REQUESTS

log = logging.getLogger(__name__)
# After a failure Redis is left alone this long, so an outage costs one timeout, not one per request.
BREAKER_SECONDS = 5.0
SOCKET_TIMEOUT_SECONDS = 0.25
_PENDING_MAX = 100_000
_DEFERRED_ENTRIES_MAX = 1_000
DEFERRED_FLUSH_SECONDS = 0.05
"""Commands nobody waits for (a finished write's in-flight marks, a new cache entry) ride on the process's
next round trip; if none comes this soon, they are sent on their own. Until then reads of what a finished
write touched bypass the cache, and a new entry is not there yet: slower, never stale."""
Command = tuple[str | bytes | int, ...]


class RedisUnavailable(CacheUnavailableError):
    """Redis could not be used just now."""


class RedisLink:
    """One Redis client shared by the cache, the versions and the rate limiter, with a breaker."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client: Redis = Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
            health_check_interval=30,
        )
        self.prefix = prefix
        self._open_until = 0.0
        self.pending_bumps: set[tuple[str, str | None]] = set()
        """Versions to bump once Redis is back: entries cached before an outage must not be served after it."""
        self._deferred: list[Command] = []
        self._deferred_entries = 0
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.deferred_flush_seconds = DEFERRED_FLUSH_SECONDS

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._open_until

    def failed(self, exc: BaseException, what: str) -> None:
        if self.available:
            log.warning(
                "redis unavailable (%s: %s); bypassing the cache and using local rate limits", what, type(exc).__name__
            )
        CACHE_ERRORS.inc()
        self._open_until = time.monotonic() + BREAKER_SECONDS

    async def bump(self, tenant: str, job_id: str | None, *, new_job: bool = False) -> None:
        """Invalidate the tenant's cached lists and, with ``job_id``, that job's cached read (after a write).

        Nothing to do for a change the request's admission already covered (:data:`WRITING`).
        """
        write = WRITING.get()
        if write is not None and write.covers(tenant, job_id, new_job=new_job):
            return
        try:
            if not self.available:
                raise RedisUnavailable
            await self._bump({(tenant, job_id)})
        except (RedisError, OSError, RedisUnavailable) as exc:
            if len(self.pending_bumps) < _PENDING_MAX:
                self.pending_bumps.add((tenant, job_id))
            if not isinstance(exc, RedisUnavailable):
                self.failed(exc, "version bump")

    async def flush_pending_bumps(self) -> None:
        pending, self.pending_bumps = self.pending_bumps, set()
        try:
            await self._bump(pending)
        except BaseException:
            self.pending_bumps |= pending
            raise

    async def _bump(self, changes: set[tuple[str, str | None]]) -> None:
        token = secrets.token_hex(8)  # never reused, so no old entry can match a version again
        async with self.client.pipeline(transaction=False) as pipe:
            for tenant, job_id in changes:
                pipe.set(list_version_key(self.prefix, tenant), token, ex=VERSION_LIFETIME_SECONDS)
                if job_id is not None:
                    pipe.set(job_version_key(self.prefix, tenant, job_id), token, ex=VERSION_LIFETIME_SECONDS)
            await pipe.execute()

    def finish_write(self, write: WriteIntent) -> None:
        """The request that marked ``write`` in flight is done: remove its marks with the next round trip."""
        write.open = False
        for key in write.flight_keys:
            self.defer(("ZREM", key, write.token))

    def defer(self, command: Command) -> None:
        """Send ``command`` with the process's next round trip (or on its own, soon); its reply is not read.

        Cache entries beyond a bound are dropped (a miss later); in-flight marks are kept until sent.
        """
        if command[0] == "SET":
            if self._deferred_entries >= _DEFERRED_ENTRIES_MAX:
                return
            self._deferred_entries += 1
        elif len(self._deferred) >= _PENDING_MAX:
            return
        self._deferred.append(command)
        if self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(self.deferred_flush_seconds, self._flush_deferred_soon)

    def take_deferred(self) -> list[Command]:
        """The commands to send with a round trip about to be made (give them back if it fails)."""
        deferred, self._deferred, self._deferred_entries = self._deferred, [], 0
        return deferred

    def return_deferred(self, deferred: list[Command]) -> None:
        """A round trip failed: its in-flight marks wait for the next one, its cache entries are dropped."""
        self._deferred += [c for c in deferred if c[0] != "SET"][: max(0, _PENDING_MAX - len(self._deferred))]

    @property
    def deferred(self) -> int:
        """Commands waiting for a round trip."""
        return len(self._deferred)

    def _flush_deferred_soon(self) -> None:
        self._flush_timer = None
        if self._deferred:
            task = asyncio.create_task(self.flush_deferred())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def flush_deferred(self) -> None:
        """Send the deferred commands now, in one round trip."""
        deferred = self.take_deferred()
        if not deferred or not self.available:
            self.return_deferred(deferred)
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for command in deferred:
                    pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            self.return_deferred(deferred)
            self.failed(exc, "deferred commands")
            return
        self.return_deferred([c for c, r in zip(deferred, replies, strict=False) if isinstance(r, Exception)])

    async def healthy(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        await self.flush_deferred()  # a mark left behind would keep reads off the cache for minutes
        await self.client.aclose()


class ResilientStore(Store):
    """The response cache's store: reads come from the request's prefetched entry, writes go to Redis in
    the background; every Redis failure is a miss or a no-op."""

    def __init__(self, link: RedisLink) -> None:
        self._link = link

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        read = PREFETCHED.get()
        if read is None or read.entry_key != key:
            CACHE_REQUESTS.labels("bypass").inc()
            return None
        CACHE_REQUESTS.labels("hit" if read.payload is not None else "miss").inc()
        return read.payload

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        """Store the entry with the process's next round trip, tagged with the versions its request read."""
        read = PREFETCHED.get()
        if read is None or read.entry_key != key or not self._link.available:
            return
        data = value.encode() if isinstance(value, str) else value
        entry = read.tag.encode() + b"\n" + data
        if expires_in is None:
            self._link.defer(("SET", key, entry))
        else:
            seconds = int(expires_in.total_seconds()) if isinstance(expires_in, timedelta) else expires_in
            self._link.defer(("SET", key, entry, "EX", max(1, seconds)))

    async def delete(self, key: str) -> None:
        try:
            await self._link.client.delete(key)
        except (RedisError, OSError) as exc:
            self._link.failed(exc, "cache delete")

    async def delete_all(self) -> None:
        raise NotImplementedError("the response cache is invalidated by versions, never flushed")

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        try:
            ttl = await self._link.client.ttl(key)
        except (RedisError, OSError) as exc:
            self._link.failed(exc, "cache ttl")
            return None
        return None if ttl is None or ttl < 0 else int(ttl)

    async def drain(self) -> None:
        """Send the entries still waiting for a round trip (at shutdown, before the client closes)."""
        await self._link.flush_deferred()
