"""The job slot of overlap ``skip``: at most one fire of a job runs at a time.

The slot is one small document per job in the runs collection (``_id`` = ``<jobId>:running``, no
``jobId`` or ``tenant`` field, so no history listing returns it): claiming it is one atomic conditional
upsert, so of several fires delivered together exactly one gets it. Its lease follows the run's, so a
worker that dies does not block the job for longer than an ack deadline; a TTL index removes a slot
some time after its lease.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from schedsvc import names
from schedsvc.store._client import translate_errors

# A job slot outlives its lease by this much before the TTL index removes it.
_SLOT_EXPIRY = timedelta(days=1)


def slot_id(job_id: str) -> str:
    return f"{job_id}:running"


@translate_errors
class MongoJobSlots:
    """Each job's single running slot, held by one run id under a lease."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._runs = db[names.RUNS]

    async def acquire(self, job_id: str, rid: str, now: datetime, lease_until: datetime) -> bool:
        """Take the job's slot for run ``rid``; False if another run of the job holds it under a live lease."""
        slot = slot_id(job_id)
        fields = {"holder": rid, "leaseUntil": lease_until, "expireAt": lease_until + _SLOT_EXPIRY}
        try:
            await self._runs.update_one(
                {"_id": slot, "leaseUntil": {"$not": {"$gt": now}}}, {"$set": fields}, upsert=True
            )
            return True
        except DuplicateKeyError:
            # Held under a live lease: by this very run (a redelivery) or by another one.
            result = await self._runs.update_one({"_id": slot, "holder": rid}, {"$set": fields})
            return bool(result.matched_count)

    async def extend(self, job_id: str, rid: str, lease_until: datetime) -> None:
        """Extend the lease of the slot ``rid`` holds (a no-op if another run holds it)."""
        await self._runs.update_one(
            {"_id": slot_id(job_id), "holder": rid},
            {"$set": {"leaseUntil": lease_until, "expireAt": lease_until + _SLOT_EXPIRY}},
        )

    async def release(self, job_id: str, rid: str) -> None:
        """Free the slot if ``rid`` holds it."""
        await self._runs.delete_one({"_id": slot_id(job_id), "holder": rid})
