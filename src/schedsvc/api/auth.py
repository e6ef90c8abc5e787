"""Bearer API-key authentication: the tenant of every job request."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from schedsvc.domain import AuthenticationError
from schedsvc.store import MongoTenantStore

# Paths that need no key. /schedules/preview authenticates when a key is sent but also serves anonymous
# clients checking a schedule (it reads no tenant data).
PUBLIC_PATHS = ["^/health", "^/metrics", "^/schema", "^/schedules/preview"]


def bearer_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization")
    if not header:
        return None
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise NotAuthorizedException("Authorization must be 'Bearer <api key>'")
    return key.strip()


class ApiKeyAuthentication(AbstractAuthenticationMiddleware):
    """Sets ``request.user`` to the tenant name owning the API key."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        key = bearer_key(connection)
        if key is None:
            raise NotAuthorizedException("missing API key: send 'Authorization: Bearer <api key>'")
        tenants: MongoTenantStore = connection.app.state.tenants
        try:
            tenant = await tenants.authenticate(key)
        except AuthenticationError as exc:
            raise NotAuthorizedException(str(exc)) from None
        return AuthenticationResult(user=tenant, auth=key)
