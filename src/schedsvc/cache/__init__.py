"""Redis: the response cache (Litestar's store), its versions, and rate limits; in-process notice-emptied caches."""

from schedsvc.cache.local import NoticedCache
from schedsvc.cache.ratelimit import MemoryFailureCounter, MemoryRateLimiter, RedisFailureCounter, RedisRateLimiter
from schedsvc.cache.redis import RedisLink, RedisUnavailable, ResilientStore
from schedsvc.cache.responses import PREFETCHED, WRITING, probe_for

__all__ = [
    "PREFETCHED",
    "WRITING",
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
