"""Applies the numbered migrations in ``schedsvc.migrations`` that a database has not seen yet."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from dataclasses import dataclass
from types import ModuleType

from pymongo.asynchronous.database import AsyncDatabase

from schedsvc import migrations, names
from schedsvc.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    module: ModuleType


def available_migrations() -> list[Migration]:
    """Every migration shipped with this release, in order."""
    found = []
    for info in pkgutil.iter_modules(migrations.__path__):
        if not info.name.startswith("m"):
            continue
        module = importlib.import_module(f"{migrations.__name__}.{info.name}")
        found.append(Migration(module.VERSION, module.DESCRIPTION, module))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers: {versions}")
    return found


async def applied_versions(db: AsyncDatabase[dict[str, object]]) -> set[int]:
    doc = await db[names.META].find_one({"_id": names.META_MIGRATIONS_ID})
    applied: list[int] = doc.get("applied", []) if doc else []  # type: ignore[assignment]
    return set(applied)


async def apply_migrations(db: AsyncDatabase[dict[str, object]], settings: Settings) -> list[int]:
    """Apply what is missing; return the versions applied now. Safe to run concurrently and repeatedly."""
    done = await applied_versions(db)
    applied = []
    for migration in available_migrations():
        if migration.version in done:
            continue
        log.info("applying migration %04d: %s", migration.version, migration.description)
        await migration.module.apply(db, settings)
        await db[names.META].update_one(
            {"_id": names.META_MIGRATIONS_ID},
            {"$addToSet": {"applied": migration.version}, "$max": {"version": migration.version}},
            upsert=True,
        )
        applied.append(migration.version)
    return applied


async def pending_migrations(db: AsyncDatabase[dict[str, object]]) -> list[int]:
    """Versions shipped but not applied (readiness is false while any remain)."""
    done = await applied_versions(db)
    return [m.version for m in available_migrations() if m.version not in done]
