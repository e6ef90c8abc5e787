"""Request id and log context, per-key rate limits, and the response cache's lookup.

Every request of the API passes here, so the work per request is kept small: response headers are appended
as raw pairs (none of them is ever set by a handler), and a key's rate-limit identity is hashed once.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from litestar.enums import ScopeType
from litestar.exceptions import TooManyRequestsException
from litestar.middleware import ASGIMiddleware
from litestar.plugins.prometheus import PrometheusConfig, PrometheusMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from schedsvc.cache import PREFETCHED, WRITING
from schedsvc.domain.admission import CacheProbe, WriteIntent
from schedsvc.observability.logging import request_id_var, tenant_var
from schedsvc.observability.metrics import RATE_LIMITED
from schedsvc.store.base import RateLimiter

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
UNLIMITED_PATHS = ("/health", "/metrics")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A write here may change the tenant's jobs (or just queue a run: then it only costs cached reads).
# A change announced by a write the admission did not cover is invalidated after the database write.
_JOB_PATH = re.compile(r"^/jobs(/|$)")


def _add_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    """``send``, with ``headers`` appended to the response's (lower-case names, as ASGI servers send them).

    A new message, not the app's changed in place: the response cache keeps the messages it saw, and a
    replayed entry must not carry the headers of the request that stored it.
    """

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *headers]}
        await send(message)

    return wrapped


@functools.lru_cache(maxsize=4096)
def _key_identity(tenant: str, key: str) -> str:
    """The rate-limit counter's name for an API key: the tenant as hash tag (the counter shares a Redis
    cluster slot with the tenant's cache keys) and a digest, never the key itself."""
    return f"{{{tenant}}}:k" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return b""


class HttpMetricsMiddleware(PrometheusMiddleware):
    """Litestar's Prometheus middleware (same metrics, names and labels) without its per-request overhead:
    no ``Request`` object, no label dictionaries, and each label combination's samples looked up once.

    Labels are the ones Litestar's uses with ``group_path=True`` and no extra labels: method, path
    template, status code and app name (``status_code`` 200 while in progress, as Litestar's does).
    """

    def __init__(self, app: ASGIApp, config: PrometheusConfig) -> None:
        super().__init__(app, config)
        self._children: dict[tuple[str, str, str, int], Any] = {}

    def _sample(self, metric: str, method: str, path: str, status: int) -> Any:
        """The labelled child of one of Litestar's four metrics, created (and exported) on first use only."""
        key = (metric, method, path, status)
        child = self._children.get(key)
        if child is None:
            labels: dict[str, str | int | float] = {
                "method": method,
                "path": path,
                "status_code": status,
                "app_name": self._config.app_name,
            }
            family = {
                "in_progress": self.requests_in_progress,
                "count": self.request_count,
                "duration": self.request_time,
                "errors": self.requests_error_count,
            }[metric](labels)
            child = self._children[key] = family.labels(*labels.values())
        return child

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._config.exemplars or self._config.labels or self._config.excluded_http_methods:
            await super().__call__(scope, receive, send)  # what this lean version does not do
            return
        method, path = str(scope.get("method", scope["type"])), str(scope["path_template"])
        in_progress = self._sample("in_progress", method, path, 200)
        start = time.perf_counter()
        span = [200, 0.0]

        async def measured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                span[0] = message["status"]
            elif message["type"] == "http.response.body":
                span[1] = time.perf_counter() - start
            await send(message)

        in_progress.inc()
        try:
            await self.app(scope, receive, measured_send)
        finally:
            in_progress.dec()
            status = int(span[0])
            if status >= 500:
                self._sample("errors", method, path, status).inc()
            self._sample("count", method, path, status).inc()
            self._sample("duration", method, path, status).observe(span[1])


class RequestIdMiddleware(ASGIMiddleware):
    """Accept ``X-Request-ID`` (or make one), return it, and put it in every log line of the request."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        raw = _header(scope, b"x-request-id").decode("latin-1")
        request_id = raw if _REQUEST_ID.match(raw) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        try:
            await next_app(scope, receive, _add_headers(send, [(b"x-request-id", request_id.encode())]))
        finally:
            request_id_var.reset(token)


class RateLimitMiddleware(ASGIMiddleware):
    """Per API key (per client address without one); the limit may be overridden per tenant. Also puts the
    tenant into the log context of the request (authentication has set it).

    The same admission round trip does the response cache's part (see :mod:`schedsvc.domain.admission`):
    a cacheable ``GET`` reads its response, which Litestar's response cache then serves; a write to the
    tenant's jobs replaces the versions of what it may change and is marked in flight until it is done;
    jobs it changed beyond that (a bulk action's) are invalidated together just before its response.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, limiter: RateLimiter, per_minute: int, overrides: Mapping[str, int]) -> None:
        self._limiter = limiter
        self._per_minute = per_minute
        self._overrides = overrides

    @staticmethod
    def should_bypass_for_scope(scope: Scope) -> bool:
        return str(scope["path"]).startswith(UNLIMITED_PATHS)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        tenant = scope.get("user")
        tenant_token = tenant_var.set(tenant if isinstance(tenant, str) else None)
        try:
            await self._admit(scope, receive, send, next_app, tenant)
        finally:
            tenant_var.reset(tenant_token)

    async def _admit(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp, tenant: Any) -> None:
        key = scope.get("auth")
        address = (scope.get("client") or ("unknown", 0))[0]
        identity = _key_identity(str(tenant), str(key)) if key else f"ip{address}"
        limit = self._overrides.get(tenant, self._per_minute) if tenant else self._per_minute
        probe, write = self._cache_part(scope, tenant)
        admission = await self._limiter.admit(identity, limit, probe=probe, write=write)
        decision = admission.decision
        if not decision.allowed:
            RATE_LIMITED.inc()
            raise TooManyRequestsException(
                detail=f"more than {decision.limit} requests per minute for this API key",
                headers={
                    "RateLimit-Limit": str(decision.limit),
                    "RateLimit-Remaining": str(decision.remaining),
                    "RateLimit-Reset": str(decision.reset_seconds),
                    "RateLimit-Policy": f"{decision.limit};w=60",
                    "Retry-After": str(decision.reset_seconds),
                },
            )
        headers = [
            (b"ratelimit-limit", b"%d" % decision.limit),
            (b"ratelimit-remaining", b"%d" % decision.remaining),
            (b"ratelimit-reset", b"%d" % decision.reset_seconds),
            (b"ratelimit-policy", b"%d;w=60" % decision.limit),
        ]
        recorded = write if admission.write_recorded else None
        send = _add_headers(send, headers)
        if recorded is not None:
            send = self._settled_before_response(send, recorded)
        read_token = PREFETCHED.set(admission.cache_read)
        write_token = WRITING.set(recorded)
        try:
            await next_app(scope, receive, send)
        finally:
            WRITING.reset(write_token)
            PREFETCHED.reset(read_token)
            if recorded is not None:
                await self._limiter.settle(recorded)  # no response was started (nothing left otherwise)
                self._limiter.written(recorded)

    def _settled_before_response(self, send: Send, write: WriteIntent) -> Send:
        """``send``, invalidating what ``write`` changed beyond its admission's cover (a bulk action's jobs,
        in one round trip) before the response starts, so that the client's next read sees the changes."""

        async def settled(message: Message) -> None:
            if message["type"] == "http.response.start":
                await self._limiter.settle(write)
            await send(message)

        return settled

    def _cache_part(self, scope: Scope, tenant: Any) -> tuple[CacheProbe | None, WriteIntent | None]:
        """A tenant's cacheable ``GET`` probes the cache; any other method on ``/jobs`` may change its jobs."""
        if not tenant:
            return None, None
        method = scope.get("method")
        job_id = scope.get("path_params", {}).get("job_id")
        if method == "GET":
            if not getattr(scope.get("route_handler"), "cache", False):
                return None, None
            return self._limiter.read_probe(
                str(tenant), str(scope["path"]), scope.get("query_string", b""), job_id
            ), None
        if method in _SAFE_METHODS or not _JOB_PATH.match(str(scope["path"])):
            return None, None
        return None, self._limiter.write_intent(str(tenant), job_id)


def cache_key(request: Any) -> str:
    """The entry the request's rate-limit round trip read; requests without one are never cached."""
    read = PREFETCHED.get()
    return read.entry_key if read is not None else f"bypass:{uuid.uuid4().hex}"


def cacheable(scope: Scope, status_code: int) -> bool:
    return 200 <= status_code < 300 and PREFETCHED.get() is not None
