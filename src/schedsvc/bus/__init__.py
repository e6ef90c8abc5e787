"""NATS JetStream adapter."""

from schedsvc.bus.consumers import NotificationDelivery, NotificationSubscription, RunDelivery, RunSubscription
from schedsvc.bus.nats import BusError, NatsRunBus, announce_tenant_change

__all__ = [
    "BusError",
    "NatsRunBus",
    "NotificationDelivery",
    "NotificationSubscription",
    "RunDelivery",
    "RunSubscription",
    "announce_tenant_change",
]
