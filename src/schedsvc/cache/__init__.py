"""Redis: the response cache (Litestar's store), its versions, and rate limits; in-process notice-emptied caches."""

from schedsvc.cache.local import NoticedCache
from schedsvc.cache.ratelimit import MemoryFailureCounter, MemoryRateLimiter, RedisFailureCounter, RedisRateLimiter
from schedsvc.cache.redis import RedisLink, RedisUnavailable, ResilientStore
from schedsvc.cache.responses import PREFETCHED, WRITING, CacheProbe, CacheRead, probe_for

__all__ = [
    "PREFETCHED",
    "WRITING",
    "CacheProbe",
    "CacheRead",
    "MemoryFailureCounter",
    "MemoryRateLimiter",
    "NoticedCache",
    "RedisFailureCounter",
    "RedisLink",
    "RedisRateLimiter",
    "RedisUnavailable",
    "ResilientStore",
    "probe_for",
]
