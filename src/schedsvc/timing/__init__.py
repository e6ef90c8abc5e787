"""Timing: when jobs fire (Rust core), partition leases, and publishing due fires."""

from schedsvc.timing.schedules import (
    compile_schedule,
    from_ms,
    preview,
    to_ms,
    upcoming_fires,
    with_defaults,
)

__all__ = ["compile_schedule", "from_ms", "preview", "to_ms", "upcoming_fires", "with_defaults"]
