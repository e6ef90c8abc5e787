"""The response cache's keys: what a cached response depends on, and the entry read for this request.

A cached ``GET`` response is stored under a fixed key per tenant, path and query, tagged with the
versions it depends on: the job's own version for ``GET /jobs/{id}``, the tenant's list version for the
lists. A write replaces the versions of what it changes (the job's and its tenant's list version), so a
change to one job leaves the cached reads of every other job in place. An entry is served only while its
tag equals the current versions; versions are random tokens, never reused, so an old entry can never
match again by accident.

A write through the API replaces the versions in its admission round trip, *before* its database write,
and marks itself in flight there (one sorted set per version: member = the write's token, score = when
the mark lapses); reads neither serve nor store entries while a write of what they depend on is in
flight, and the mark is removed after the request, in the next round trip this process makes anyway, together
with a second replacement of the versions. Without the mark a read between the version change and the
database write would cache the old document under the new version; the second replacement is what keeps
such an entry from being served if a mark is lost all the same (Redis failed over or restarted, evicted
it). A version that is missing when a read needs it is set to a fresh token by that read.

The entry is read by the rate limiter's script, in the request's one Redis round trip, and handed to
Litestar's response cache (``ResilientStore``) through :data:`PREFETCHED`, a context variable set for
the request by the rate-limit middleware; :data:`WRITING` tells the version bump after a database write
that the admission already did it.
"""

from __future__ import annotations

import secrets
from contextvars import ContextVar

from schedsvc.domain.admission import CacheProbe, CacheRead, WriteIntent  # the value types' one home

__all__ = [
    "PREFETCHED",
    "VERSION_LIFETIME_SECONDS",
    "WRITE_FLIGHT_SECONDS",
    "WRITING",
    "job_version_key",
    "list_version_key",
    "probe_for",
    "write_intent_for",
]

VERSION_LIFETIME_SECONDS = 2 * 24 * 3600
"""Versions outlive every cached entry (at most an hour, see ``cache_ttl_seconds``) many times over."""
WRITE_FLIGHT_SECONDS = 300
"""How long an in-flight mark lasts when its request never removes it (the process died mid-request):
far beyond what a request's MongoDB operations may take (``mongodb_timeout_seconds`` each, a few per
write). Until then the cache is bypassed for what that write touched, never served stale."""

PREFETCHED: ContextVar[CacheRead | None] = ContextVar("schedsvc_cache_read", default=None)
WRITING: ContextVar[WriteIntent | None] = ContextVar("schedsvc_cache_write", default=None)


# Every key of a tenant carries the hash tag {tenant}, so that on a Redis cluster the rate-limit counter, the
# versions, the in-flight marks and the entry a request's script touches share one slot.


def list_version_key(prefix: str, tenant: str) -> str:
    return f"{prefix}lv:{{{tenant}}}"


def job_version_key(prefix: str, tenant: str, job_id: str) -> str:
    return f"{prefix}jv:{{{tenant}}}:{job_id}"


def _list_flight_key(prefix: str, tenant: str) -> str:
    return f"{prefix}lw:{{{tenant}}}"


def _job_flight_key(prefix: str, tenant: str, job_id: str) -> str:
    return f"{prefix}jw:{{{tenant}}}:{job_id}"


def probe_for(prefix: str, tenant: str, path: str, query_string: bytes, job_id: str | None) -> CacheProbe:
    """The probe of a cacheable ``GET``: one job's read depends on that job only, anything else on the list.

    The query string is used as sent: the same query spelled differently only gets an entry of its own,
    while reordering parameters could merge queries whose repeated parameters mean different things.
    """
    if job_id:
        versions, flights = (job_version_key(prefix, tenant, job_id),), (_job_flight_key(prefix, tenant, job_id),)
    else:
        versions, flights = (list_version_key(prefix, tenant),), (_list_flight_key(prefix, tenant),)
    return CacheProbe(f"{prefix}cache:{{{tenant}}}:{path}?{query_string.decode('latin-1')}", versions, flights)


def write_intent_for(prefix: str, tenant: str, job_id: str | None) -> WriteIntent:
    """A write to the tenant's jobs (to ``job_id``, or to jobs not named in the path: then the lists only)."""
    versions = [list_version_key(prefix, tenant)]
    flights = [_list_flight_key(prefix, tenant)]
    if job_id:
        versions.append(job_version_key(prefix, tenant, job_id))
        flights.append(_job_flight_key(prefix, tenant, job_id))
    return WriteIntent(tenant, job_id, tuple(versions), tuple(flights), secrets.token_hex(8))
