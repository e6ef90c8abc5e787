"""NATS JetStream adapter."""

from schedsvc.bus.nats import (
    BusError,
    NatsRunBus,
    RunDelivery,
    RunSubscription,
    TenantChangeKind,
    announce_tenant_change,
)

__all__ = [
    "BusError",
    "NatsRunBus",
    "RunDelivery",
    "RunSubscription",
    "TenantChangeKind",
    "announce_tenant_change",
]
