"""Redis for the response cache and rate limits, degrading to "no cache" when Redis is down or slow.

:class:`ResilientStore` is the Litestar store behind the response cache: it serves the entry the
request's rate-limit round trip already read (:mod:`schedsvc.cache.responses`) and writes new entries with
the process's next round trip (:meth:`RedisLink.defer`), so a Redis failure is a cache miss (with a metric
and a log line), never a failed or slower request. Writes replace the versions of what they changed (in
their admission round trip, or :meth:`RedisLink.bump` after the database write for a change the admission
did not cover), so a client reads its own writes and tenants never share entries. A finished write replaces
its versions once more (with its in-flight marks' removal), so a read that cached the old document during
the write, because its marks were lost (a failover, an eviction), is not served after it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta

from litestar.stores.base import Store
from redis.asyncio import Redis
from redis.exceptions import RedisError

from schedsvc.cache.responses import PREFETCHED, VERSION_LIFETIME_SECONDS, WRITING, job_version_key, list_version_key
from schedsvc.domain.admission import WriteIntent
from schedsvc.domain.errors import CacheUnavailableError
from schedsvc.observability.metrics import CACHE_ERRORS, CACHE_REQUESTS

log = logging.getLogger(__name__)
# After a failure Redis is left alone this long, so an outage costs one timeout, not one per request.
BREAKER_SECONDS = 5.0
SOCKET_TIMEOUT_SECONDS = 0.25
_PENDING_MAX = 100_000
_DEFERRED_ENTRIES_MAX = 1_000
DEFERRED_PER_ROUND_TRIP = 500
"""Deferred commands sent with one round trip at most (the rest go with the next), so that a backlog
after an outage never makes one request's round trip large."""
DEFERRED_FLUSH_SECONDS = 0.05
"""Commands nobody waits for (a finished write's in-flight marks, a new cache entry) ride on the process's
next round trip; if none comes this soon, they are sent on their own (and retried as often while Redis
fails). Until then reads of what a finished write touched bypass the cache, and a new entry is not there
yet: slower, never stale."""
Command = tuple[str | bytes | int, ...]


@dataclass(slots=True)
class Deferred:
    """Deferred commands taken for one round trip."""

    finishes: list[Command] = field(default_factory=list)
    """Finished writes' new versions and in-flight mark removals: sent until they land, never dropped."""
    entries: list[Command] = field(default_factory=list)
    """New cache entries: dropped when their round trip fails (a miss later)."""

    @property
    def commands(self) -> list[Command]:
        return [*self.finishes, *self.entries]

    def __bool__(self) -> bool:
        return bool(self.finishes or self.entries)


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
        self._finishes: list[Command] = []
        self._entries: list[Command] = []
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

        Nothing to do for a change the request's admission already covered (:data:`WRITING`); a change of
        another job of the tenant (a bulk action) is kept with the write and bumped with the others in one
        round trip before the response (:meth:`bump_uncovered`).
        """
        write = WRITING.get()
        if write is not None and write.covers(tenant, job_id, new_job=new_job):
            return
        if write is not None and write.open and tenant == write.tenant and job_id is not None:
            write.uncovered.add(job_id)
            return
        await self._bump_or_queue({(tenant, job_id)})

    async def bump_uncovered(self, write: WriteIntent) -> None:
        """Bump, in one round trip, the jobs ``write`` changed beyond what its admission covered (its tenant's
        lists it covered). Called before the write's response, so the client's next read sees the change."""
        if write.uncovered:
            job_ids, write.uncovered = write.uncovered, set()
            await self._bump_or_queue({(write.tenant, job_id) for job_id in job_ids})

    async def _bump_or_queue(self, changes: set[tuple[str, str | None]]) -> None:
        try:
            if not self.available:
                raise RedisUnavailable
            await self._bump(changes)
        except (RedisError, OSError, RedisUnavailable) as exc:
            self.pending_bumps |= set(list(changes)[: max(0, _PENDING_MAX - len(self.pending_bumps))])
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
            for tenant in {tenant for tenant, _ in changes}:
                pipe.set(list_version_key(self.prefix, tenant), token, ex=VERSION_LIFETIME_SECONDS)
            for tenant, job_id in changes:
                if job_id is not None:
                    pipe.set(job_version_key(self.prefix, tenant, job_id), token, ex=VERSION_LIFETIME_SECONDS)
            await pipe.execute()

    def finish_write(self, write: WriteIntent) -> None:
        """The request that marked ``write`` in flight is done, its database writes too: with the next round
        trip, replace its versions once more and remove its marks.

        The new versions matter only when a mark was lost (a Redis failover or restart, an eviction): a read
        during the write then cached the old document under the write's version; it no longer matches.
        """
        write.open = False
        token = secrets.token_hex(8)
        for key in write.version_keys:
            self._finishes.append(("SET", key, token, "EX", VERSION_LIFETIME_SECONDS))
        for key in write.flight_keys:
            self._finishes.append(("ZREM", key, write.token))
        self._arm_flush()

    def defer(self, entry: Command) -> None:
        """Store a new cache entry with the process's next round trip (or on its own, soon); its reply is
        not read. Beyond a bound, or when that round trip fails, the entry is dropped (a miss later)."""
        if len(self._entries) >= _DEFERRED_ENTRIES_MAX:
            return
        self._entries.append(entry)
        self._arm_flush()

    def take_deferred(self) -> Deferred:
        """The commands to send with a round trip about to be made (give them back if it fails), finished
        writes first; at most :data:`DEFERRED_PER_ROUND_TRIP`, the rest wait for the next round trip."""
        finishes = self._finishes[:DEFERRED_PER_ROUND_TRIP]
        del self._finishes[: len(finishes)]
        entries = self._entries[: DEFERRED_PER_ROUND_TRIP - len(finishes)]
        del self._entries[: len(entries)]
        if self._finishes or self._entries:
            self._arm_flush()
        return Deferred(finishes, entries)

    def return_deferred(self, deferred: Deferred, replies: list[object] | None = None) -> None:
        """A round trip failed (``replies`` None), or some of its commands did (an exception among
        ``replies``): finished writes' commands wait for the next round trip, cache entries are dropped.

        Never dropped: what waits here is bounded by the writes in flight when Redis failed (a write
        admitted while Redis is unavailable marks nothing), and a lost mark removal would keep reads off
        the cache for minutes.
        """
        if replies is None:
            failed = deferred.finishes
        else:
            failed = [c for c, r in zip(deferred.finishes, replies, strict=False) if isinstance(r, Exception)]
        if failed:
            self._finishes[:0] = failed
            self._arm_flush()

    @property
    def deferred(self) -> int:
        """Commands waiting for a round trip."""
        return len(self._finishes) + len(self._entries)

    def _arm_flush(self) -> None:
        if self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(self.deferred_flush_seconds, self._flush_deferred_soon)

    def _flush_deferred_soon(self) -> None:
        self._flush_timer = None
        if self.deferred:
            task = asyncio.create_task(self.flush_deferred())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def flush_deferred(self) -> None:
        """Send deferred commands now, in one round trip (while Redis is unavailable: try again soon)."""
        if not self.available:
            if self.deferred:
                self._arm_flush()
            return
        deferred = self.take_deferred()
        if not deferred:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for command in deferred.commands:
                    pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            self.return_deferred(deferred)
            self.failed(exc, "deferred commands")
            return
        self.return_deferred(deferred, replies)

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
        # A mark left behind would keep reads off the cache for minutes: send all, while that makes progress.
        waiting = self.deferred
        while waiting and self.available:
            await self.flush_deferred()
            waiting, before = self.deferred, waiting
            if waiting >= before:
                break
        if self._flush_timer is not None:  # re-armed by a failed flush: nothing may run on a closed client
            self._flush_timer.cancel()
            self._flush_timer = None
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
