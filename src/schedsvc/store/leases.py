"""Partition leases and timing membership in MongoDB, with every expiry judged by the database clock.

Each write that sets or compares an expiry is an update pipeline using ``$$NOW``, so replicas whose
clocks disagree still agree on who holds what. Comparisons convert both sides with ``$toLong``: the
direct date comparison with ``$$NOW`` is wrong on SecantusDB, and the converted form is equally valid
on MongoDB. Expiries are computed with ``$dateAdd`` (MongoDB 5+), which both SecantusDB servers accept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from schedsvc import names
from schedsvc.domain.timing import LeaseGrant

Doc = dict[str, Any]

_NOW = {"$toLong": "$$NOW"}
_EXPIRES = {"$toLong": "$expiresAt"}
_EXPIRED: Doc = {"$lte": [_EXPIRES, _NOW]}
_FREE_OR_EXPIRED: Doc = {"$or": [{"$eq": [{"$ifNull": ["$owner", None]}, None]}, _EXPIRED]}


def _expires_in(ttl_ms: int) -> Doc:
    # $dateAdd rather than {$add: ["$$NOW", ms]}: SecantusDB's Rust server rejects the latter.
    return {"$dateAdd": {"startDate": "$$NOW", "unit": "millisecond", "amount": ttl_ms}}


class MongoLeaseStore:
    """``partition_leases`` and ``scheduler_members``: a handful of operations per heartbeat."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._leases = db[names.LEASES]
        self._members = db[names.MEMBERS]

    async def ensure_partitions(self, partitions: int) -> None:
        """Create the lease document of every partition that lacks one (free, epoch 0)."""
        if await self._leases.count_documents({}) >= partitions:
            return
        await self._leases.bulk_write(
            [
                UpdateOne({"_id": p}, {"$setOnInsert": {"owner": None, "expiresAt": None, "epoch": 0}}, upsert=True)
                for p in range(partitions)
            ],
            ordered=False,
        )

    async def heartbeat(self, member: str, ttl_ms: int) -> None:
        """Record that ``member`` is alive for another ``ttl_ms`` (database clock)."""
        await self._members.update_one({"_id": member}, [{"$set": {"expiresAt": _expires_in(ttl_ms)}}], upsert=True)

    async def live_members(self) -> list[str]:
        """Members whose heartbeat has not expired, by the database clock."""
        cursor = self._members.find({"$expr": {"$gt": [_EXPIRES, _NOW]}}, {"_id": 1})
        return sorted([str(doc["_id"]) async for doc in cursor])

    async def forget_member(self, member: str) -> None:
        await self._members.delete_one({"_id": member})

    async def purge_members(self, older_than_ms: int) -> int:
        """Delete membership documents expired for longer than ``older_than_ms`` (crashed replicas)."""
        result = await self._members.delete_many({"$expr": {"$lt": [_EXPIRES, {"$subtract": [_NOW, older_than_ms]}]}})
        return int(result.deleted_count)

    async def renew(self, member: str, partitions: Sequence[int], ttl_ms: int) -> None:
        """Extend the leases ``member`` still owns among ``partitions``.

        A lease that expired but that nobody took is still this member's (same owner, same epoch, so no
        one else can have published for it): renewing it is safe.
        """
        if partitions:
            await self._leases.update_many(
                {"_id": {"$in": list(partitions)}, "owner": member},
                [{"$set": {"expiresAt": _expires_in(ttl_ms)}}],
            )

    async def free_partitions(self) -> list[int]:
        """Partitions without a live owner, by the database clock."""
        cursor = self._leases.find({"$expr": _FREE_OR_EXPIRED}, {"_id": 1})
        return [int(doc["_id"]) async for doc in cursor]

    async def acquire(self, member: str, partitions: Sequence[int], ttl_ms: int) -> None:
        """Take those of ``partitions`` that are still free or expired, with a new epoch each.

        The filter re-checks freedom atomically per document, so two members racing for one partition
        cannot both win; callers read back what they got with :meth:`owned`.
        """
        if partitions:
            await self._leases.update_many(
                {"_id": {"$in": list(partitions)}, "$expr": _FREE_OR_EXPIRED},
                [
                    {
                        "$set": {
                            "owner": member,
                            "expiresAt": _expires_in(ttl_ms),
                            "epoch": {"$add": [{"$ifNull": ["$epoch", 0]}, 1]},
                        }
                    }
                ],
            )

    async def release(self, member: str, partitions: Sequence[int]) -> None:
        """Give partitions back at once (expired now), so another member can take them immediately."""
        if partitions:
            await self._leases.update_many(
                {"_id": {"$in": list(partitions)}, "owner": member},
                [{"$set": {"owner": None, "expiresAt": "$$NOW"}}],
            )

    async def owned(self, member: str) -> list[LeaseGrant]:
        """The unexpired leases ``member`` holds, with their epochs and remaining time."""
        cursor = await self._leases.aggregate(
            [
                {"$match": {"owner": member}},
                {"$project": {"epoch": 1, "remaining": {"$subtract": [_EXPIRES, _NOW]}}},
            ]
        )
        grants = [LeaseGrant(int(d["_id"]), int(d.get("epoch") or 0), int(d["remaining"])) async for d in cursor]
        return sorted((g for g in grants if g.remaining_ms > 0), key=lambda g: g.partition)
