"""NATS JetStream adapter."""

from schedsvc.bus.consumers import (
    JetStreamNotificationDelivery,
    JetStreamNotificationSubscription,
    JetStreamRunDelivery,
    JetStreamRunSubscription,
)
from schedsvc.bus.nats import BusError, NatsRunBus, announce_tenant_change

__all__ = [
    "BusError",
    "JetStreamNotificationDelivery",
    "JetStreamNotificationSubscription",
    "JetStreamRunDelivery",
    "JetStreamRunSubscription",
    "NatsRunBus",
    "announce_tenant_change",
]
