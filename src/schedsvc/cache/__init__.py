"""Redis: the response cache (Litestar's store), its versions, and rate limits; in-process notice-emptied caches."""

from schedsvc.cache.local import NoticedCache
from schedsvc.cache.ratelimit import (
    Decision,
    FailureCounter,
    MemoryFailureCounter,
    MemoryRateLimiter,
    RateLimiter,
    RedisFailureCounter,
    RedisRateLimiter,
)
from schedsvc.cache.redis import RedisLink, RedisUnavailable, ResilientStore
from schedsvc.cache.responses import PREFETCHED, CacheProbe, CacheRead, probe_for

__all__ = [
    "PREFETCHED",
    "CacheProbe",
    "CacheRead",
    "Decision",
    "FailureCounter",
    "MemoryFailureCounter",
    "MemoryRateLimiter",
    "NoticedCache",
    "RateLimiter",
    "RedisFailureCounter",
    "RedisLink",
    "RedisRateLimiter",
    "RedisUnavailable",
    "ResilientStore",
    "probe_for",
]
