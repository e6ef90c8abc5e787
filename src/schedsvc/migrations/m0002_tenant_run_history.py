"""Indexes for the tenant-wide run history (``GET /runs``): newest first, and by status."""

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from schedsvc import names
from schedsvc.config import Settings

VERSION = 2
DESCRIPTION = "tenant-wide run history indexes"


async def apply(db: AsyncDatabase[dict[str, object]], settings: Settings) -> None:
    await db[names.RUNS].create_indexes(
        [
            # GET /runs (and with job, trigger or a time range: the remaining conditions filter this walk).
            IndexModel(
                [("tenant", ASCENDING), ("scheduledAt", DESCENDING), ("_id", DESCENDING)], name="tenant_history"
            ),
            # GET /runs?status=failed: a tenant's failures without walking its successes.
            IndexModel(
                [("tenant", ASCENDING), ("status", ASCENDING), ("scheduledAt", DESCENDING), ("_id", DESCENDING)],
                name="tenant_status_history",
            ),
        ]
    )
