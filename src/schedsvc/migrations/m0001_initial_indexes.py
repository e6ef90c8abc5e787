"""Indexes for every query the service makes, the run-history TTL, and the cluster's partition count."""

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from schedsvc import names
from schedsvc.config import Settings

VERSION = 1
DESCRIPTION = "initial indexes, TTLs and partition count"


async def apply(db: AsyncDatabase[dict[str, object]], settings: Settings) -> None:
    await db[names.JOBS].create_indexes(
        [
            # The seed asks for nextRun and status; the timing module's due-work query is ESR-ordered.
            IndexModel([("nextRun", ASCENDING)], name="nextRun"),
            IndexModel([("status", ASCENDING)], name="status"),
            IndexModel([("partition", ASCENDING), ("status", ASCENDING), ("nextRun", ASCENDING)], name="due_work"),
            IndexModel([("tenant", ASCENDING), ("_id", ASCENDING)], name="tenant_list"),
            IndexModel([("tenant", ASCENDING), ("name", ASCENDING)], name="tenant_name", unique=True),
            IndexModel([("tenant", ASCENDING), ("tags", ASCENDING), ("_id", ASCENDING)], name="tenant_tag_list"),
            IndexModel([("tenant", ASCENDING), ("status", ASCENDING), ("_id", ASCENDING)], name="tenant_status_list"),
        ]
    )
    await db[names.RUNS].create_indexes(
        [
            IndexModel([("jobId", ASCENDING), ("scheduledAt", DESCENDING), ("_id", DESCENDING)], name="job_history"),
            IndexModel([("jobId", ASCENDING), ("status", ASCENDING)], name="job_status"),
            IndexModel([("expireAt", ASCENDING)], name="retention", expireAfterSeconds=0),
        ]
    )
    await db[names.API_KEYS].create_indexes([IndexModel([("tenant", ASCENDING)], name="tenant")])
    await db[names.IDEMPOTENCY].create_indexes(
        [
            IndexModel([("expireAt", ASCENDING)], name="expiry", expireAfterSeconds=0),
        ]
    )
    await db[names.META].update_one(
        {"_id": names.META_CLUSTER_ID}, {"$setOnInsert": {"partitions": settings.partitions}}, upsert=True
    )
