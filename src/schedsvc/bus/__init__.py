"""NATS JetStream adapter."""

from schedsvc.bus.nats import BusError, NatsRunBus, RunDelivery, RunSubscription

__all__ = ["BusError", "NatsRunBus", "RunDelivery", "RunSubscription"]
