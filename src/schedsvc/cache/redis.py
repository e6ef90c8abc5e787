"""Redis for the response cache and rate limits, degrading to "no cache" when Redis is down or slow.

Litestar's ``RedisStore`` holds the cached responses; :class:`ResilientStore` wraps it so a Redis failure
is a cache miss (with a metric and a log line), never a failed request. A per-tenant version, bumped by
every write, is part of each cache key, so a client reads its own writes and tenants never share entries.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from litestar.stores.base import Store
from litestar.stores.redis import RedisStore
from redis.asyncio import Redis
from redis.exceptions import RedisError

from schedsvc.domain.errors import CacheUnavailableError
from schedsvc.observability.metrics import CACHE_ERRORS, CACHE_REQUESTS

log = logging.getLogger(__name__)
# After a failure Redis is left alone this long, so an outage costs one timeout, not one per request.
BREAKER_SECONDS = 5.0
SOCKET_TIMEOUT_SECONDS = 0.25


class RedisUnavailable(CacheUnavailableError):
    """Redis could not be used just now."""


class RedisLink:
    """One Redis client shared by the cache, the tenant versions and the rate limiter, with a breaker."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client: Redis = Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
            health_check_interval=30,
        )
        self.prefix = prefix
        self._open_until = 0.0
        self._pending_bumps: set[str] = set()

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

    async def tenant_version(self, tenant: str) -> str:
        """The tenant's cache version; :class:`RedisUnavailable` means: do not use the cache."""
        if not self.available:
            raise RedisUnavailable
        try:
            if self._pending_bumps:
                await self._flush_pending_bumps()
            value = await self.client.get(f"{self.prefix}ver:{tenant}")
        except (RedisError, OSError) as exc:
            self.failed(exc, "version read")
            raise RedisUnavailable from exc
        if not value:
            return "0"
        return value.decode() if isinstance(value, bytes) else str(value)

    async def bump_tenant(self, tenant: str) -> None:
        """Invalidate every cached response of the tenant (after any write)."""
        try:
            if not self.available:
                raise RedisUnavailable
            await self.client.incr(f"{self.prefix}ver:{tenant}")
        except (RedisError, OSError, RedisUnavailable) as exc:
            # Remember it: entries cached before the outage must not be served after it.
            self._pending_bumps.add(tenant)
            if not isinstance(exc, RedisUnavailable):
                self.failed(exc, "version bump")

    async def _flush_pending_bumps(self) -> None:
        pending, self._pending_bumps = self._pending_bumps, set()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for tenant in pending:
                    pipe.incr(f"{self.prefix}ver:{tenant}")
                await pipe.execute()
        except BaseException:
            self._pending_bumps |= pending
            raise

    async def healthy(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.client.aclose()


class ResilientStore(Store):
    """A Litestar store over Redis in which every Redis failure is a miss or a no-op."""

    def __init__(self, link: RedisLink, namespace: str) -> None:
        self._link = link
        self._inner = RedisStore(link.client, namespace=namespace, handle_client_shutdown=False)

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        if not self._link.available:
            CACHE_REQUESTS.labels("bypass").inc()
            return None
        try:
            value = await self._inner.get(key, renew_for)
        except (RedisError, OSError) as exc:
            self._link.failed(exc, "cache read")
            return None
        CACHE_REQUESTS.labels("hit" if value is not None else "miss").inc()
        return value

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        if not self._link.available:
            return
        try:
            await self._inner.set(key, value, expires_in)
        except (RedisError, OSError) as exc:
            self._link.failed(exc, "cache write")

    async def delete(self, key: str) -> None:
        try:
            await self._inner.delete(key)
        except (RedisError, OSError) as exc:
            self._link.failed(exc, "cache delete")

    async def delete_all(self) -> None:
        raise NotImplementedError("the response cache is invalidated by tenant versions, never flushed")

    async def exists(self, key: str) -> bool:
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        try:
            return await self._inner.expires_in(key)
        except (RedisError, OSError) as exc:
            self._link.failed(exc, "cache ttl")
            return None
