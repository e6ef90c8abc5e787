"""Bearer API-key authentication: the tenant of every job request.

A validated key is trusted from a per-process cache for :data:`KEY_CACHE_SECONDS`, so a busy API makes
no database read per request; revoking a key (``schedsvc tenants revoke``) announces it on NATS and every
replica drops it within about a second (:func:`follow_key_changes`). The cache lifetime is only the
backstop for a replica that missed the notice.

Failed attempts are counted per client address *before* the database is asked: once an address has
failed :attr:`Settings.failed_auth_per_minute` times in a minute, its requests with unknown keys are
answered 429 with ``Retry-After`` without a lookup (keys it has already proven stay usable).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from schedsvc.cache import NoticedCache
from schedsvc.domain.errors import AuthenticationError
from schedsvc.domain.tenants import REVOCATIONS, TenantChangeKind
from schedsvc.observability.metrics import RATE_LIMITED
from schedsvc.store import MongoTenantStore
from schedsvc.store.base import FailureCounter, TenantChangeFeed
from schedsvc.store.tenants import key_id_of

# Paths that need no key. /schedules/preview authenticates when a key is sent but also serves anonymous
# clients checking a schedule (it reads no tenant data).
PUBLIC_PATHS = ["^/health", "^/metrics", "^/schema", "^/schedules/preview"]
KEY_CACHE_SECONDS = 300.0
"""Longest a replica that missed a revocation notice (NATS unreachable meanwhile) keeps accepting a key."""

ApiKeyCache = NoticedCache[str, str]
"""Validated API key -> its tenant."""


def bearer_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization")
    if not header:
        return None
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise NotAuthorizedException("Authorization must be 'Bearer <api key>'")
    return key.strip()


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    client = connection.scope.get("client")
    return client[0] if client else "unknown"


async def follow_key_changes(bus: TenantChangeFeed) -> tuple[ApiKeyCache, Callable[[], Awaitable[None]]]:
    """The process's cache of validated keys, emptied of revoked keys as notices arrive; and an unsubscribe."""
    cache: ApiKeyCache = NoticedCache(KEY_CACHE_SECONDS, gaps=lambda: bus.reconnects)

    def on_change(kind: TenantChangeKind, value: str) -> None:
        if kind == "key":
            cache.drop(lambda key, _tenant: key_id_of(key) == value)
        elif kind in REVOCATIONS:  # every key of the tenant
            cache.drop(lambda _key, tenant: tenant == value)

    return cache, await bus.tenant_changes(on_change)


class ApiKeyAuthentication(AbstractAuthenticationMiddleware):
    """Sets ``request.user`` to the tenant name owning the API key."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        key = bearer_key(connection)
        if key is None:
            raise NotAuthorizedException("missing API key: send 'Authorization: Bearer <api key>'")
        state = connection.app.state
        cache: ApiKeyCache = state.api_keys
        tenant = cache.get(key)
        if tenant is not None:
            return AuthenticationResult(user=tenant, auth=key)
        failures: FailureCounter = state.auth_failures
        address = client_address(connection)
        retry_after = await failures.blocked(address)
        if retry_after:
            RATE_LIMITED.inc()
            raise TooManyRequestsException(
                detail="too many failed authentications from this address; retry later",
                headers={"Retry-After": str(retry_after)},
            )
        tenants: MongoTenantStore = state.tenants
        epoch = cache.epoch
        try:
            tenant = await tenants.authenticate(key)
        except AuthenticationError as exc:
            await failures.record(address)
            raise NotAuthorizedException(str(exc)) from None
        cache.put(key, tenant, epoch)
        return AuthenticationResult(user=tenant, auth=key)
