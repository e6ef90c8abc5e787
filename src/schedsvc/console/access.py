"""Signing in to the console with an API key, and out again."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.response import Redirect, Template

from schedsvc.console.pages import ConsoleRequest, page, read_form
from schedsvc.console.session import end_session, start_session
from schedsvc.domain.errors import AuthenticationError
from schedsvc.store.base import FailureCounter
from schedsvc.store.tenants import key_id_of


class AccessController(Controller):
    path = "/"

    @get("/", name="console:home")
    async def home(self) -> Redirect:
        return Redirect("/console/jobs")

    @get("/sign-in", name="console:sign-in")
    async def sign_in_page(self, request: ConsoleRequest) -> Template | Redirect:
        if request.session.get("tenant"):
            return Redirect("/console/jobs")
        return page(request, "sign_in.html")

    @post("/sign-in", status_code=303)
    async def sign_in(self, request: ConsoleRequest, state: State) -> Template | Redirect:
        """The same checks as the API's key authentication, including the per-address failure limit."""
        key = str((await read_form(request)).get("api_key", "")).strip()
        failures: FailureCounter = state.auth_failures
        # Counted under the key the API's authentication uses for the address (scope["client"]'s host).
        address = request.client.host if request.client else "unknown"
        if await failures.blocked(address):
            return page(
                request, "sign_in.html", 429, error="Too many failed sign-ins from this address; wait a minute."
            )
        try:
            tenant = await state.tenants.authenticate(key)
        except AuthenticationError:
            await failures.record(address)
            return page(request, "sign_in.html", 401, error="That API key is unknown or revoked. Check it and retry.")
        await end_session(request)  # a session id the browser already had is never reused
        start_session(request, tenant, key_id_of(key) or "")
        return Redirect("/console/jobs", status_code=303)

    @post("/sign-out", status_code=303)
    async def sign_out(self, request: ConsoleRequest) -> Redirect:
        request.clear_session()
        return Redirect("/console/sign-in", status_code=303)
