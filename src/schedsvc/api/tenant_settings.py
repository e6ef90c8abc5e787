"""``/tenant/settings``: what applies to every job of the calling tenant (its default notification target,
how long its runs are kept). A tenant only ever sees and changes its own: the path names no tenant."""

from __future__ import annotations

import logging
from typing import Annotated

from litestar import Controller, Request, get, patch
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException

from schedsvc.api import openapi
from schedsvc.api.errors import problem_responses
from schedsvc.domain.errors import InvalidRequestError
from schedsvc.domain.targets import notification_problems
from schedsvc.domain.tenants import TenantSettings, TenantSettingsPatch, effective_settings
from schedsvc.store.base import TenantPreferenceStore

log = logging.getLogger(__name__)


class TenantSettingsController(Controller):
    path = "/tenant/settings"
    tags = ["tenant"]

    @get(
        "/",
        summary="Get the tenant's settings: default notification target and run retention",
        operation_id="getTenantSettings",
        responses={**problem_responses(), 200: openapi.success(TenantSettings, "The tenant's settings")},
    )
    async def get_tenant_settings(
        self, request: Request[str, str, State], state: State, tenants: NamedDependency[TenantPreferenceStore]
    ) -> TenantSettings:
        preferences = await tenants.preferences(request.user)
        settings = state.settings
        return effective_settings(preferences, settings.run_retention_days, settings.run_retention_max_days)

    @patch(
        "/",
        summary="Change the tenant's settings (fields present change; null returns one to its default)",
        operation_id="updateTenantSettings",
        responses={**problem_responses(404, 422), 200: openapi.success(TenantSettings, "The changed settings")},
    )
    async def update_tenant_settings(
        self,
        request: Request[str, str, State],
        state: State,
        tenants: NamedDependency[TenantPreferenceStore],
        data: Annotated[TenantSettingsPatch, openapi.body(openapi.SETTINGS_NOTIFY, openapi.SETTINGS_DEFAULTS)],
    ) -> TenantSettings:
        tenant, settings = request.user, state.settings
        problems: list[tuple[str, str]] = []
        days = data.run_retention_days
        if isinstance(days, int) and days > settings.run_retention_max_days:
            problems.append(
                ("runRetentionDays", f"must be at most {settings.run_retention_max_days} (the deployment's maximum)")
            )
        if data.notify:
            problems += notification_problems(data.notify, allow=settings.target_allow_networks)
        if problems:
            raise InvalidRequestError(problems)
        try:
            preferences = await tenants.update_preferences(tenant, data)
        except LookupError:
            raise NotFoundException(detail="no such tenant") from None
        await _announce(state, tenant)
        return effective_settings(preferences, settings.run_retention_days, settings.run_retention_max_days)


async def _announce(state: State, tenant: str) -> None:
    """Every replica drops what it cached of the tenant (retention, default target) at once; without NATS
    they notice within their cache lifetime."""
    state.adapters.retention.forget(tenant)
    bus = state.get("bus")
    if bus is None:
        return
    try:
        await bus.publish_tenant_change("data", tenant)
    except Exception:
        log.warning("could not announce the new settings of tenant %s; replicas apply them within 5 minutes", tenant)
