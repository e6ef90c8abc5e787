"""Redis: the response cache (Litestar's store), tenant cache versions, and rate limits."""

from schedsvc.cache.ratelimit import Decision, MemoryRateLimiter, RateLimiter, RedisRateLimiter
from schedsvc.cache.redis import RedisLink, RedisUnavailable, ResilientStore

__all__ = [
    "Decision",
    "MemoryRateLimiter",
    "RateLimiter",
    "RedisLink",
    "RedisRateLimiter",
    "RedisUnavailable",
    "ResilientStore",
]
