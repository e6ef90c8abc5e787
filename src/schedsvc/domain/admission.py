"""What admitting one API request decides: its rate limit and, in the same round trip, the response cache's part.

Value types shared by the rate-limiter port (:class:`schedsvc.store.base.RateLimiter`), its adapters
(``schedsvc.cache.ratelimit``) and the API's middleware. No I/O.

The response cache keeps one version per thing a cached response depends on (a tenant's lists, one job).
A read is served from the cache only while the entry's tag equals the current versions *and* no write of
what it depends on is in flight; a write replaces the versions and marks itself in flight in the request's
admission round trip (before its database write), and is unmarked once the request is done. That order
is what lets a write cost one Redis round trip without a read ever caching what the write replaces (see
``docs/benchmarks.md``, "One round trip for writes").
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Decision:
    """The rate limit's answer for one request (the ``RateLimit-*`` headers)."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int


@dataclass(frozen=True, slots=True)
class CacheProbe:
    """Where a cacheable ``GET``'s response lives and what it depends on."""

    entry_key: str
    version_keys: tuple[str, ...]
    flight_keys: tuple[str, ...]
    """The in-flight write markers of the same things, in the order of ``version_keys``."""


@dataclass(frozen=True, slots=True)
class CacheRead:
    """What the admission round trip found: the current versions and, if still current, the response."""

    entry_key: str
    tag: str
    payload: bytes | None


@dataclass(eq=False, slots=True)
class WriteIntent:
    """A request about to change a tenant's jobs: its admission replaces the versions of what it may change
    (the tenant's lists and, for a request on one job, that job's) and marks the write in flight."""

    tenant: str
    job_id: str | None
    version_keys: tuple[str, ...]
    flight_keys: tuple[str, ...]
    token: str
    """The new version, and the write's member in the in-flight markers (random, never reused)."""
    open: bool = True
    """False once the request is done: a change announced after that is no longer this write's."""
    uncovered: set[str] = field(default_factory=set)
    """Jobs of the tenant this write changed that its admission did not cover (a bulk action's): their
    versions are replaced together, in one round trip, before the response."""

    def covers(self, tenant: str, job_id: str | None, *, new_job: bool = False) -> bool:
        """Whether announcing this change needs no further version bump: the admission already replaced
        every version it affects. A new job had no cached read to replace (missing jobs are never cached)."""
        if not self.open or tenant != self.tenant:
            return False
        return job_id is None or job_id == self.job_id or new_job


@dataclass(frozen=True, slots=True)
class Admission:
    """The outcome of admitting a request."""

    decision: Decision
    cache_read: CacheRead | None = None
    """For a cacheable ``GET``: the read to serve (None: bypass the cache)."""
    write_recorded: bool = False
    """For a :class:`WriteIntent`: the versions were replaced and the write marked in flight."""
