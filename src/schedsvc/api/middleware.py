"""Request id and log context, per-key rate limits, and the response cache's lookup."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import TooManyRequestsException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from schedsvc.cache import PREFETCHED, CacheProbe, probe_for
from schedsvc.observability.logging import request_id_var, tenant_var
from schedsvc.observability.metrics import RATE_LIMITED

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
UNLIMITED_PATHS = ("/health", "/metrics")


def _add_headers(send: Send, headers: dict[str, str]) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            mutable = MutableScopeHeaders.from_message(message)
            for name, value in headers.items():
                mutable[name] = value
        await send(message)

    return wrapped


class RequestIdMiddleware(ASGIMiddleware):
    """Accept ``X-Request-ID`` (or make one), return it, and put it in every log line of the request."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        raw = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = raw if _REQUEST_ID.match(raw) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        try:
            await next_app(scope, receive, _add_headers(send, {"X-Request-ID": request_id}))
        finally:
            request_id_var.reset(token)


class RateLimitMiddleware(ASGIMiddleware):
    """Per API key (per client address without one); the limit may be overridden per tenant.

    For a cacheable ``GET`` the same Redis round trip reads the cached response (see
    :mod:`schedsvc.cache.responses`), which Litestar's response cache then serves.
    """

    scopes = (ScopeType.HTTP,)

    @staticmethod
    def should_bypass_for_scope(scope: Scope) -> bool:
        return str(scope["path"]).startswith(UNLIMITED_PATHS)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        state = scope["litestar_app"].state
        settings = state.settings
        tenant = scope.get("user")
        key = scope.get("auth")
        if key:  # the tenant as hash tag: the counter shares a Redis cluster slot with the tenant's cache keys
            identity = f"{{{tenant}}}:k" + hashlib.sha256(str(key).encode()).hexdigest()[:24]
        else:
            identity = "ip" + (scope.get("client") or ("unknown", 0))[0]
        limit = settings.rate_limit_overrides.get(tenant, settings.rate_limit_per_minute)
        decision, read = await state.rate_limiter.hit(identity, limit, _cache_probe(scope, state))
        headers = {
            "RateLimit-Limit": str(decision.limit),
            "RateLimit-Remaining": str(decision.remaining),
            "RateLimit-Reset": str(decision.reset_seconds),
            "RateLimit-Policy": f"{decision.limit};w=60",
        }
        if not decision.allowed:
            RATE_LIMITED.inc()
            raise TooManyRequestsException(
                detail=f"more than {decision.limit} requests per minute for this API key",
                headers={**headers, "Retry-After": str(decision.reset_seconds)},
            )
        token = PREFETCHED.set(read)
        try:
            await next_app(scope, receive, _add_headers(send, headers))
        finally:
            PREFETCHED.reset(token)


def _cache_probe(scope: Scope, state: Any) -> CacheProbe | None:
    """Where a tenant's cacheable ``GET`` may find its response (None: not cacheable, or no Redis)."""
    tenant = scope.get("user")
    link = state.get("redis")
    handler = scope.get("route_handler")
    if link is None or not tenant or scope.get("method") != "GET" or not getattr(handler, "cache", False):
        return None
    job_id = scope.get("path_params", {}).get("job_id")
    return probe_for(link.prefix, str(tenant), str(scope["path"]), scope.get("query_string", b""), job_id)


class TenantContextMiddleware(ASGIMiddleware):
    """After authentication: the tenant into the log context."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        tenant = scope.get("user")
        token = tenant_var.set(tenant if isinstance(tenant, str) else None)
        try:
            await next_app(scope, receive, send)
        finally:
            tenant_var.reset(token)


def cache_key(request: Any) -> str:
    """The entry the request's rate-limit round trip read; requests without one are never cached."""
    read = PREFETCHED.get()
    return read.entry_key if read is not None else f"bypass:{uuid.uuid4().hex}"


def cacheable(scope: Scope, status_code: int) -> bool:
    return 200 <= status_code < 300 and PREFETCHED.get() is not None
