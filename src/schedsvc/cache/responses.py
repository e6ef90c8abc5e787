"""The response cache's keys: what a cached response depends on, and the entry read for this request.

A cached ``GET`` response is stored under a fixed key per tenant, path and query, tagged with the
versions it depends on: the job's own version for ``GET /jobs/{id}``, the tenant's list version for the
lists. A write bumps the versions of what it changed (the job's and its tenant's list version), so a
change to one job leaves the cached reads of every other job in place. An entry is served only while its
tag equals the current versions; versions are random tokens, never reused, so an old entry can never
match again by accident.

The entry is read by the rate limiter's script, in the request's one Redis round trip, and handed to
Litestar's response cache (``ResilientStore``) through :data:`PREFETCHED`, a context variable set for
the request by the rate-limit middleware.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

VERSION_LIFETIME_SECONDS = 2 * 24 * 3600
"""Versions outlive every cached entry (at most an hour, see ``cache_ttl_seconds``) many times over."""


@dataclass(frozen=True, slots=True)
class CacheProbe:
    """Where a request's cached response lives and which versions it depends on."""

    entry_key: str
    version_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CacheRead:
    """What the request's round trip found: the current versions and, if still current, the response."""

    entry_key: str
    tag: str
    payload: bytes | None


PREFETCHED: ContextVar[CacheRead | None] = ContextVar("schedsvc_cache_read", default=None)


# Every key of a tenant carries the hash tag {tenant}, so that on a Redis cluster the rate-limit counter, the
# versions and the entry a request's script touches share one slot.


def list_version_key(prefix: str, tenant: str) -> str:
    return f"{prefix}lv:{{{tenant}}}"


def job_version_key(prefix: str, tenant: str, job_id: str) -> str:
    return f"{prefix}jv:{{{tenant}}}:{job_id}"


def probe_for(prefix: str, tenant: str, path: str, query_string: bytes, job_id: str | None) -> CacheProbe:
    """The probe of a cacheable ``GET``: one job's read depends on that job only, anything else on the list.

    The query string is used as sent: the same query spelled differently only gets an entry of its own,
    while reordering parameters could merge queries whose repeated parameters mean different things.
    """
    versions = (job_version_key(prefix, tenant, job_id),) if job_id else (list_version_key(prefix, tenant),)
    return CacheProbe(f"{prefix}cache:{{{tenant}}}:{path}?{query_string.decode('latin-1')}", versions)
