"""What the timing module reads and writes in MongoDB: due jobs, ``nextRun`` advances, missed runs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec
from pymongo import InsertOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from schedsvc import names
from schedsvc.domain.jobs import JobTiming
from schedsvc.domain.models import RunStatus, RunTrigger, run_id
from schedsvc.domain.time import from_ms
from schedsvc.domain.timing import Advance, MissedFire
from schedsvc.store import job_codec
from schedsvc.store.retention import RunRetention

Doc = dict[str, Any]

DUPLICATE_KEY = 11000
log = logging.getLogger(__name__)
MissedRecorded = Callable[[list[MissedFire]], Awaitable[None]]
"""Called with the fires a recording stored as missed (not those recorded before): notifications."""


def _read(doc: Doc) -> JobTiming | None:
    try:
        return job_codec.read_timing(doc)
    except msgspec.ValidationError:
        log.exception("job %s does not decode; timing skips it", doc.get(job_codec.ID))
        return None


class MongoTimingStore:
    """The ``jobs``, ``runs`` and ``meta`` operations of the timing module (due-job reader, fire recorder)."""

    def __init__(
        self, db: AsyncDatabase[Doc], retention: RunRetention, *, on_missed: MissedRecorded | None = None
    ) -> None:
        self._jobs = db[names.JOBS]
        self._runs = db[names.RUNS]
        self._meta = db[names.META]
        self._retention = retention
        self._on_missed = on_missed

    async def cluster_partitions(self, default: int) -> int:
        """The partition count recorded for the cluster (recording ``default`` if none is yet); the composition
        root reads it once per process and hands it to the timing module."""
        await self._meta.update_one(
            {"_id": names.META_CLUSTER_ID}, {"$setOnInsert": {"partitions": default}}, upsert=True
        )
        doc = await self._meta.find_one({"_id": names.META_CLUSTER_ID})
        return int(doc["partitions"])  # type: ignore[index]

    async def due_jobs(
        self, partitions: Sequence[int], until: datetime, *, after: datetime | None = None, batch_size: int = 1000
    ) -> AsyncIterator[list[JobTiming]]:
        """Active jobs of ``partitions`` with ``nextRun`` at or before ``until`` (and after ``after``), in batches."""
        query = job_codec.due_query(partitions, until, after)
        batch: list[JobTiming] = []
        async for doc in self._jobs.find(query, job_codec.TIMING_PROJECTION, batch_size=batch_size):
            job = _read(doc)
            if job is not None:
                batch.append(job)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    async def jobs_by_id(self, job_ids: Sequence[str]) -> list[JobTiming]:
        found = self._jobs.find({job_codec.ID: {"$in": list(job_ids)}}, job_codec.TIMING_PROJECTION)
        return [job for job in [_read(doc) async for doc in found] if job is not None]

    async def advance(self, advances: Sequence[Advance]) -> int:
        """Apply the advances as one unordered bulk of conditional updates; return how many matched.

        Each applies only if the job is still where the plan found it (see :func:`job_codec.advance_write`).
        """
        if not advances:
            return 0
        ops = [UpdateOne(*job_codec.advance_write(a)) for a in advances]
        result = await self._jobs.bulk_write(ops, ordered=False)
        return int(result.matched_count)

    async def record_missed(self, fires: Sequence[MissedFire], now: datetime) -> int:
        """Insert a ``missed`` run per fire; fires already recorded (or run) are left as they are."""
        if not fires:
            return 0
        expiry = {tenant: now + await self._retention.of(tenant) for tenant in {f.tenant for f in fires}}
        docs = [
            InsertOne(
                {
                    "_id": run_id(f.job_id, f.scheduled_ms),
                    "jobId": f.job_id,
                    "tenant": f.tenant,
                    "scheduledAt": from_ms(f.scheduled_ms),
                    "trigger": RunTrigger.SCHEDULED.value,
                    "status": RunStatus.MISSED.value,
                    "attempts": 0,
                    "startedAt": None,
                    "finishedAt": now,
                    "durationMs": None,
                    "httpStatus": None,
                    "error": "missed: no replica ran the job's partition or the job was paused",
                    "responseSnippet": None,
                    "expireAt": expiry[f.tenant],
                }
            )
            for f in fires
        ]
        try:
            await self._runs.bulk_write(docs, ordered=False)
            recorded = list(fires)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            duplicates = {e.get("index") for e in errors}
            recorded = [f for i, f in enumerate(fires) if i not in duplicates]
        if recorded and self._on_missed is not None:
            await self._report(recorded)
        return len(recorded)

    async def _report(self, recorded: list[MissedFire]) -> None:
        # Only fires this call stored: a repeated recording (a replica re-planning after a lease moved)
        # inserts nothing and reports nothing. A failed report never fails the timing pipeline.
        assert self._on_missed is not None
        try:
            await self._on_missed(recorded)
        except Exception:
            log.warning("could not report %d missed fire(s)", len(recorded), exc_info=True)
