"""A tenant's own settings: its default notification target and how long its runs are kept."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from schedsvc.domain.models import NotificationTarget

RetentionDays = Annotated[int, Meta(ge=1, le=36_500)]

TenantChangeKind = Literal["key", "tenant", "data"]
"""What a tenant change notice says: ``key``, one API key (by key id) was revoked; ``tenant``, every key of
the tenant was revoked; ``data``, the tenant's settings or signing secrets changed."""
TENANT_CHANGE_KINDS: tuple[TenantChangeKind, ...] = ("key", "tenant", "data")
REVOCATIONS: frozenset[TenantChangeKind] = frozenset({"key", "tenant"})
"""Kinds that end what a key opened: cached validations of it, console sessions signed in with it."""
TENANT_DATA_CHANGES: frozenset[TenantChangeKind] = frozenset({"tenant", "data"})
"""Kinds after which what is cached about the tenant (signing secrets, settings) is read again."""


class TenantPreferences(msgspec.Struct, kw_only=True, frozen=True):
    """What a tenant chose, as stored on its tenant document (None: the deployment's default applies)."""

    notify: NotificationTarget | None = None
    run_retention_days: int | None = None


class TenantSettings(msgspec.Struct, kw_only=True, rename="camel"):
    """``GET /tenant/settings``: the settings that apply to every job of the calling tenant."""

    notify: NotificationTarget | None
    """Notification target of the jobs that have no ``notify`` of their own (null: none)."""
    run_retention_days: int
    """Days a run is kept after it ends: the tenant's choice, or the deployment's default."""
    run_retention_is_default: bool
    """True while the tenant has not chosen (``runRetentionDays`` follows the deployment's default)."""
    max_run_retention_days: int
    """The most ``runRetentionDays`` the deployment allows."""


class TenantSettingsPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """Body of ``PATCH /tenant/settings``: only the fields present change; null returns a field to its
    default (no default notification target; the deployment's retention)."""

    notify: NotificationTarget | UnsetType | None = UNSET
    run_retention_days: RetentionDays | UnsetType | None = UNSET


def effective_settings(preferences: TenantPreferences, default_days: int, max_days: int) -> TenantSettings:
    """What applies, from what the tenant chose and the deployment's default and maximum."""
    chosen = preferences.run_retention_days
    return TenantSettings(
        notify=preferences.notify,
        run_retention_days=min(chosen, max_days) if chosen is not None else default_days,
        run_retention_is_default=chosen is None,
        max_run_retention_days=max_days,
    )
