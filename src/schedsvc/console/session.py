"""Console sessions: an API key is exchanged once for a server-side session held in a Litestar store.

The browser holds only a random session id (HttpOnly, SameSite=Strict, Path=/console, Secure over https);
the key itself is neither stored nor logged. The session records the tenant, the key's id (so a revoked key
ends its sessions, as it ends the API's cached keys) and a per-session CSRF token that every form posts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import secrets
import time
from typing import Any

from litestar.connection import ASGIConnection
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.types import Message, ScopeSession

from schedsvc.domain.tenants import REVOCATIONS, TenantChangeKind

SESSION_STORE = "console_sessions"
"""The name of the store in the app's store registry (Redis when configured, else in-process)."""
SESSION_SECONDS = 8 * 3600
CSRF_FIELD = "csrf_token"
_ROTATE = "console_new_session_id"


class ConsoleSessionBackend(ServerSideSessionBackend):
    """Litestar's server-side sessions, plus a new id at sign-in and the Secure flag over https.

    Litestar keeps the id the browser sent; at sign-in a fresh id is taken instead, so an id planted in the
    browser before sign-in (session fixation) never becomes a signed-in session.
    """

    def __init__(self, config: ServerSideSessionConfig) -> None:
        super().__init__(config)
        # The same backend with the Secure flag, for requests that came over https.
        self._over_https = None if config.secure else ConsoleSessionBackend(dataclasses.replace(config, secure=True))

    def get_session_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str:
        state = connection.scope.setdefault("state", {})
        if state.get(_ROTATE) is True:
            state[_ROTATE] = self.generate_session_id()
        if isinstance(state.get(_ROTATE), str):
            return str(state[_ROTATE])
        return super().get_session_id(connection)

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> None:
        if self._over_https is not None and connection.scope.get("scheme") == "https":
            await self._over_https.store_in_message(scope_session, message, connection)
            return
        await super().store_in_message(scope_session, message, connection)


@dataclasses.dataclass
class ConsoleSessionConfig(ServerSideSessionConfig):
    _backend_class = ConsoleSessionBackend


SESSION_CONFIG = ConsoleSessionConfig(
    key="schedsvc_console",
    path="/console",
    httponly=True,
    samesite="strict",
    max_age=SESSION_SECONDS,
    store=SESSION_STORE,
)


def start_session(connection: ASGIConnection[Any, Any, Any, Any], tenant: str, key_id: str) -> None:
    """Sign in: a fresh session id carrying the tenant, the key's id and a new CSRF token."""
    connection.scope.setdefault("state", {})[_ROTATE] = True
    connection.set_session(
        {"tenant": tenant, "key_id": key_id, "csrf": secrets.token_urlsafe(32), "signed_in": time.time()}
    )


async def end_session(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Forget the session the request came with, in the store too (sign-in replaces it by a new id)."""
    old_id = connection.cookies.get(SESSION_CONFIG.key)
    if old_id:
        await SESSION_CONFIG.get_store_from_app(connection.app).delete(old_id)


def csrf_valid(session: dict[str, Any], submitted: str | None) -> bool:
    expected = session.get("csrf")
    return bool(expected and submitted) and hmac.compare_digest(str(expected), str(submitted))


class RevokedKeys:
    """Key ids and tenants revoked while this process runs, from the same notices that clear the API's key
    cache (``schedsvc.api.auth.follow_key_changes``); a session whose key is among them is ended."""

    def __init__(self) -> None:
        # What was revoked, and when: a session signed in after the revocation (with a key made since) stays.
        self.key_ids: dict[str, float] = {}
        self.tenants: dict[str, float] = {}
        self._following = False
        self._lock = asyncio.Lock()

    async def follow(self, bus: Any) -> None:
        if self._following:
            return
        async with self._lock:
            if not self._following:

                def on_change(kind: TenantChangeKind, value: str) -> None:
                    if kind in REVOCATIONS:
                        (self.key_ids if kind == "key" else self.tenants)[value] = time.time()

                await bus.tenant_changes(on_change)
                self._following = True

    def revoked(self, session: dict[str, Any]) -> bool:
        signed_in = float(session.get("signed_in", 0))
        key_revoked = self.key_ids.get(str(session.get("key_id")), 0.0)
        tenant_revoked = self.tenants.get(str(session.get("tenant")), 0.0)
        return max(key_revoked, tenant_revoked) >= signed_in
