"""What the timing module reads and writes in MongoDB: due jobs, ``nextRun`` advances, missed runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import InsertOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from schedsvc import names
from schedsvc.domain import RunStatus, RunTrigger, run_id

Doc = dict[str, Any]

DUPLICATE_KEY = 11000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Only what timing needs to plan fires: never the target, body or metadata.
JOB_PROJECTION = {
    "tenant": 1,
    "schedule": 1,
    "catchup": 1,
    "status": 1,
    "nextRun": 1,
    "resumedAt": 1,
    "partition": 1,
    "createdAt": 1,
    "version": 1,
}


@dataclass(frozen=True, slots=True)
class Advance:
    """Move a job's ``nextRun`` from ``old`` to ``new`` (``None``: the job completed)."""

    job_id: str
    old: datetime
    new: datetime | None
    resumed_at: datetime | None = None
    """The ``resumedAt`` the plan was made with; cleared by the advance (and required to be unchanged)."""


@dataclass(frozen=True, slots=True)
class MissedFire:
    job_id: str
    tenant: str
    scheduled_ms: int


class MongoTimingStore:
    """The ``jobs``, ``runs`` and ``meta`` operations of the timing module."""

    def __init__(self, db: AsyncDatabase[Doc], run_retention_days: int = 30) -> None:
        self._jobs = db[names.JOBS]
        self._runs = db[names.RUNS]
        self._meta = db[names.META]
        self._retention = timedelta(days=run_retention_days)

    async def cluster_partitions(self, default: int) -> int:
        """The partition count recorded for the cluster (recording ``default`` if none is yet)."""
        await self._meta.update_one(
            {"_id": names.META_CLUSTER_ID}, {"$setOnInsert": {"partitions": default}}, upsert=True
        )
        doc = await self._meta.find_one({"_id": names.META_CLUSTER_ID})
        return int(doc["partitions"])  # type: ignore[index]

    async def due_jobs(
        self, partitions: Sequence[int], until: datetime, *, after: datetime | None = None, batch_size: int = 1000
    ) -> AsyncIterator[list[Doc]]:
        """Active jobs of ``partitions`` whose ``nextRun`` is at or before ``until`` (and after ``after``).

        In batches; served by the ``{partition, status, nextRun}`` index.
        """
        window: Doc = {"$lte": until} if after is None else {"$gt": after, "$lte": until}
        query = {"partition": {"$in": list(partitions)}, "status": "active", "nextRun": window}
        batch: list[Doc] = []
        async for doc in self._jobs.find(query, JOB_PROJECTION, batch_size=batch_size):
            batch.append(doc)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    async def jobs_by_id(self, job_ids: Sequence[str]) -> list[Doc]:
        """The timing view of these jobs (missing ones are absent: deleted)."""
        return [doc async for doc in self._jobs.find({"_id": {"$in": list(job_ids)}}, JOB_PROJECTION)]

    async def advance(self, advances: Sequence[Advance]) -> int:
        """Apply the advances as one unordered bulk of conditional updates; return how many matched.

        Each update applies only if the job is still active with the ``nextRun`` the plan started from
        (and the same ``resumedAt``), so an API change made meanwhile wins over this write.
        """
        if not advances:
            return 0
        ops = []
        for a in advances:
            query: Doc = {"_id": a.job_id, "nextRun": a.old, "status": "active"}
            change: Doc = {"nextRun": a.new}
            if a.resumed_at is not None:
                query["resumedAt"] = a.resumed_at
                change["resumedAt"] = None
            if a.new is None:
                change["status"] = "completed"
            ops.append(UpdateOne(query, {"$set": change}))
        result = await self._jobs.bulk_write(ops, ordered=False)
        return int(result.matched_count)

    async def record_missed(self, fires: Sequence[MissedFire], now: datetime) -> int:
        """Insert a ``missed`` run per fire; fires already recorded (or run) are left as they are."""
        if not fires:
            return 0
        expire = now + self._retention
        docs = [
            InsertOne(
                {
                    "_id": run_id(f.job_id, f.scheduled_ms),
                    "jobId": f.job_id,
                    "tenant": f.tenant,
                    "scheduledAt": _EPOCH + timedelta(milliseconds=f.scheduled_ms),
                    "trigger": RunTrigger.SCHEDULED.value,
                    "status": RunStatus.MISSED.value,
                    "attempts": 0,
                    "startedAt": None,
                    "finishedAt": now,
                    "durationMs": None,
                    "httpStatus": None,
                    "error": "missed: no replica ran the job's partition or the job was paused",
                    "responseSnippet": None,
                    "expireAt": expire,
                }
            )
            for f in fires
        ]
        try:
            result = await self._runs.bulk_write(docs, ordered=False)
            return int(result.inserted_count)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return int(exc.details.get("nInserted", 0))
