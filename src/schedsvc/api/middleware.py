"""Request id and log context, per-key rate limits, and the tenant's cache version."""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid
from typing import Any

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import TooManyRequestsException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from schedsvc.cache import RedisUnavailable
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
    """Per API key (per client address without one); the limit may be overridden per tenant."""

    scopes = (ScopeType.HTTP,)

    @staticmethod
    def should_bypass_for_scope(scope: Scope) -> bool:
        return str(scope["path"]).startswith(UNLIMITED_PATHS)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        state = scope["litestar_app"].state
        settings = state.settings
        tenant = scope.get("user")
        key = scope.get("auth")
        if key:
            identity = "k" + hashlib.sha256(str(key).encode()).hexdigest()[:24]
        else:
            identity = "ip" + (scope.get("client") or ("unknown", 0))[0]
        limit = settings.rate_limit_overrides.get(tenant, settings.rate_limit_per_minute)
        decision = await state.rate_limiter.hit(identity, limit)
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
        await next_app(scope, receive, _add_headers(send, headers))


class TenantContextMiddleware(ASGIMiddleware):
    """After authentication: the tenant into the log context, and its cache version for cached GETs."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        tenant = scope.get("user")
        token = tenant_var.set(tenant if isinstance(tenant, str) else None)
        try:
            link = scope["litestar_app"].state.get("redis")
            if tenant and link is not None and scope.get("method") == "GET":
                with contextlib.suppress(RedisUnavailable):  # no version: the request bypasses the cache
                    scope.setdefault("state", {})["cache_version"] = await link.tenant_version(tenant)
            await next_app(scope, receive, send)
        finally:
            tenant_var.reset(token)


def cache_key(request: Any) -> str:
    """Tenant + tenant version + path and query; requests without a version are never cached."""
    version = request.scope.get("state", {}).get("cache_version")
    if version is None:
        return f"bypass:{uuid.uuid4().hex}"
    query = "&".join(sorted(f"{k}={v}" for k, v in request.query_params.multi_items()))
    return f"{request.user}:{version}:{request.url.path}?{query}"


def cacheable(scope: Scope, status_code: int) -> bool:
    return 200 <= status_code < 300 and scope.get("state", {}).get("cache_version") is not None
