"""Timing: when jobs fire (Rust core), partition leases, and publishing due fires."""

from schedsvc.domain.time import from_ms, to_ms
from schedsvc.timing.schedules import (
    compile_schedule,
    fires_in_range,
    preview,
    upcoming_fires,
    with_defaults,
)
from schedsvc.timing.zonedb import ZoneDatabase
from schedsvc.timing.zonedb import database as zone_database

__all__ = [
    "ZoneDatabase",
    "compile_schedule",
    "fires_in_range",
    "from_ms",
    "preview",
    "to_ms",
    "upcoming_fires",
    "with_defaults",
    "zone_database",
]
