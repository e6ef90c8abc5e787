"""The zone database both sides use: TZif bytes for the Rust core, found the way ``zoneinfo`` finds them.

``zoneinfo.ZoneInfo(key)`` reads the first file ``<dir>/<key>`` among ``zoneinfo.TZPATH`` (the system
database, e.g. ``/usr/share/zoneinfo``) and falls back to the ``tzdata`` package. The Rust core builds a
zone from the same bytes (it calls :func:`tzif` the first time a zone is used), so Python's rendering
and Rust's fire computation agree, and updating either database needs no rebuild of the extension.
:func:`database` says which database that is, for ``/health/ready`` and the
``schedsvc_zone_database_info`` metric.
"""

from __future__ import annotations

import functools
import os
import zoneinfo
from importlib import resources

import msgspec

from schedsvc.observability.metrics import ZONE_DATABASE_INFO

_TZDATA_PACKAGE = "tzdata.zoneinfo"


class ZoneDatabase(msgspec.Struct, frozen=True):
    """The zone database in use."""

    version: str
    """IANA release, e.g. ``2025b``; ``unknown`` when the database does not say."""
    source: str
    """The ``zoneinfo.TZPATH`` directory, or ``tzdata <package version>``, or ``none``."""


def tzif(key: str) -> bytes | None:
    """TZif bytes of zone ``key`` from where ``zoneinfo`` reads it, or None when there is no such zone."""
    try:
        # The same key validation (and the same search) as the zones Python renders with.
        zoneinfo.ZoneInfo(key)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None
    for root in zoneinfo.TZPATH:
        path = os.path.join(root, key)
        if os.path.isfile(path):
            with open(path, "rb") as file:
                return file.read()
    *package, name = key.split("/")
    return resources.files(".".join([_TZDATA_PACKAGE, *package])).joinpath(name).read_bytes()


@functools.cache
def database() -> ZoneDatabase:
    """The zone database ``zoneinfo`` (and so the Rust core) reads: the first ``TZPATH`` directory
    holding zones, else the ``tzdata`` package."""
    for root in zoneinfo.TZPATH:
        if os.path.isfile(os.path.join(root, "UTC")):
            return ZoneDatabase(_system_version(root), root)
    try:
        import tzdata
    except ImportError:
        return ZoneDatabase("unknown", "none")
    return ZoneDatabase(tzdata.IANA_VERSION, f"tzdata {tzdata.__version__}")


def _system_version(root: str) -> str:
    """The release a system database names: first line of ``tzdata.zi`` (``# version 2025b``), or ``+VERSION``."""
    try:
        with open(os.path.join(root, "tzdata.zi"), encoding="ascii", errors="replace") as file:
            first = file.readline().split()
        if first[:2] == ["#", "version"] and len(first) == 3:
            return first[2]
    except OSError:
        pass
    try:
        with open(os.path.join(root, "+VERSION"), encoding="ascii", errors="replace") as file:
            return file.read().strip() or "unknown"
    except OSError:
        return "unknown"


ZONE_DATABASE_INFO.labels(version=database().version, source=database().source).set(1)
