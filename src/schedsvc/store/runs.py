"""The run ledger in MongoDB: what execution writes about each fire, attempt by attempt.

The document's layout is ``store/run_codec.py``'s; the tenant's reads and retries on demand are
``store/run_history.py``'s, and the job slot of overlap ``skip`` is ``store/run_slots.py``'s.

Every write is conditional on the run not being final yet, so a late or duplicate worker can never
overwrite a finished run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from schedsvc import names
from schedsvc.domain.jobs import JobForRun
from schedsvc.domain.models import RunMessage, RunStatus, RunTrigger, run_id
from schedsvc.domain.runs import (
    AttemptRecord,
    BufferedFire,
    RunEnd,
    RunState,
    StrandedRetry,
    retry_message_id,
    scheduled_at,
)
from schedsvc.domain.time import to_ms
from schedsvc.store._client import translate_errors
from schedsvc.store.jobs import MongoRunJobs
from schedsvc.store.retention import RunRetention
from schedsvc.store.run_codec import FINAL, attempt_outcome, identity, log_fields, outcome_fields
from schedsvc.store.run_slots import MongoJobSlots


@translate_errors
class MongoRunStore:
    """The run ledger as execution uses it: claims, leases, outcomes, the job slot and the job's lastRun."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], retention: RunRetention) -> None:
        self._runs = db[names.RUNS]
        self._job_side = MongoRunJobs(db)
        self._slots = MongoJobSlots(db)
        self._retention = retention

    async def job_for_run(self, job_id: str) -> JobForRun | None:
        """The job's current target and policies, or None when the job no longer exists (the job side's)."""
        return await self._job_side.job_for_run(job_id)

    async def state(self, rid: str) -> RunState | None:
        doc = await self._runs.find_one(
            {"_id": rid}, {"status": 1, "attempts": 1, "leaseUntil": 1, "nextAttemptAt": 1, "attemptLimit": 1}
        )
        if doc is None:
            return None
        return RunState(
            status=RunStatus(doc.get("status", RunStatus.QUEUED)),
            attempts=int(doc.get("attempts") or 0),
            lease_until=doc.get("leaseUntil"),
            next_attempt_at=doc.get("nextAttemptAt"),
            attempt_limit=doc.get("attemptLimit"),
        )

    async def claim_attempt(
        self, message: RunMessage, expected_attempts: int, now: datetime, lease_until: datetime
    ) -> int | None:
        rid = run_id(message.job_id, message.scheduled_ms)
        attempt = expected_attempts + 1
        # Flat conditions beside the _id equality (no top-level $or/$and), so every server answers them
        # from the _id index. `$not: {$gt: now}` matches a missing, null or expired lease.
        query: dict[str, Any] = {
            "_id": rid,
            "status": {"$nin": FINAL},
            "attempts": {"$in": [0, None]} if expected_attempts == 0 else expected_attempts,
            "leaseUntil": {"$not": {"$gt": now}},
        }
        update = {
            "$set": {
                "status": RunStatus.RUNNING.value,
                "attempts": attempt,
                "startedAt": now,
                "leaseUntil": lease_until,
                "nextAttemptAt": None,
                "expireAt": await self._open_expiry(message, now),
                **log_fields(attempt, {"startedAt": now}),
            },
            "$unset": {"reopenedAt": ""},  # a reopened run's message has arrived: nothing left to sweep
            "$setOnInsert": identity(message),
        }
        try:
            doc = await self._runs.find_one_and_update(
                query,
                update,
                upsert=True,
                projection={"attempts": 1},
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return None  # the run exists but did not match: someone else claimed or finished it
        return attempt if doc is not None and doc.get("attempts") == attempt else None

    async def extend_lease(self, rid: str, attempt: int, lease_until: datetime) -> None:
        await self._runs.update_one(
            {"_id": rid, "attempts": attempt, "status": RunStatus.RUNNING.value},
            {"$set": {"leaseUntil": lease_until}},
        )

    async def record_retry(self, rid: str, attempt: int, record: AttemptRecord, next_attempt_at: datetime) -> None:
        await self._runs.update_one(
            {"_id": rid, "attempts": attempt, "status": {"$nin": FINAL}},
            {
                "$set": {
                    **outcome_fields(record),
                    **log_fields(attempt, attempt_outcome(record, next_attempt_at)),
                    "status": RunStatus.QUEUED.value,
                    "leaseUntil": None,
                    "nextAttemptAt": next_attempt_at,
                }
            },
        )

    async def release_interrupted(self, rid: str, attempt: int, error: str) -> None:
        await self._runs.update_one(
            {"_id": rid, "attempts": attempt, "status": RunStatus.RUNNING.value},
            {
                "$set": {
                    "status": RunStatus.QUEUED.value,
                    "leaseUntil": None,
                    "error": error,
                    **log_fields(
                        attempt, {"finishedAt": datetime.now(UTC), "errorClass": "interrupted", "error": error}
                    ),
                }
            },
        )

    async def finish(self, message: RunMessage, end: RunEnd, now: datetime) -> bool:
        rid = run_id(message.job_id, message.scheduled_ms)
        retention = await self._retention.of(message.tenant)
        record = end.record
        fields: dict[str, Any] = {
            "status": end.status.value,
            "finishedAt": now,
            "leaseUntil": None,
            "nextAttemptAt": None,
            "expireAt": now + retention,
        }
        if record is not None:
            fields.update(outcome_fields(record))
            fields.update(log_fields(record.attempt, attempt_outcome(record, None)))
            fields["finishedAt"] = record.finished_at
            fields["expireAt"] = record.finished_at + retention
        if end.error is not None:
            fields["error"] = end.error
        insert_only = {**identity(message), "attempts": 0}
        for key in fields:
            insert_only.pop(key, None)
        try:
            result = await self._runs.update_one(
                {"_id": rid, "status": {"$nin": FINAL}},
                # Ended without an attempt (skipped, failed in the worker): nothing left to sweep either.
                {"$set": fields, "$unset": {"reopenedAt": ""}, "$setOnInsert": insert_only},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return bool(result.matched_count or result.upserted_id is not None)

    async def stranded_retries(self, reopened_before: datetime, limit: int) -> list[StrandedRetry]:
        # Only reopened runs carry reopenedAt, and m0004's sparse index holds only them: the sweep reads a
        # handful of keys however many runs wait for an automatic retry. Oldest first, so a backlog larger
        # than one batch drains over the next sweeps.
        found = (
            self._runs.find(
                {"reopenedAt": {"$lt": reopened_before}, "status": RunStatus.QUEUED.value},
                {"jobId": 1, "tenant": 1, "scheduledAt": 1, "trigger": 1, "retriesOnDemand": 1, "reopenedAt": 1},
            )
            .sort("reopenedAt", 1)
            .limit(limit)
        )
        stranded = []
        async for doc in found:
            reopened_at: datetime = doc["reopenedAt"]
            message = RunMessage(
                str(doc["jobId"]),
                str(doc["tenant"]),
                to_ms(doc["scheduledAt"]),
                to_ms(reopened_at),
                str(doc.get("trigger") or RunTrigger.SCHEDULED.value),
                0,
            )
            rid = str(doc["_id"])
            stranded.append(
                StrandedRetry(message, retry_message_id(rid, int(doc.get("retriesOnDemand") or 0), reopened_at))
            )
        return stranded

    async def acquire_job_slot(self, job_id: str, rid: str, now: datetime, lease_until: datetime) -> bool:
        """Take the job's single running slot for run ``rid`` (overlap ``skip``); False if another run of
        the job holds it under a live lease (``store/run_slots.py``)."""
        return await self._slots.acquire(job_id, rid, now, lease_until)

    async def extend_job_slot(self, job_id: str, rid: str, lease_until: datetime) -> None:
        await self._slots.extend(job_id, rid, lease_until)

    async def release_job_slot(self, job_id: str, rid: str) -> None:
        await self._slots.release(job_id, rid)

    async def buffer_behind_job_slot(
        self, message: RunMessage, partition: int, now: datetime
    ) -> Literal["buffered", "full", "free"]:
        """Wait behind the run holding the job's slot (overlap ``bufferOne``; ``store/run_slots.py``)."""
        return await self._slots.buffer_behind(message, partition, now)

    async def unbuffer(self, job_id: str, rid: str) -> None:
        await self._slots.unbuffer(job_id, rid)

    async def hand_over_job_slot(self, job_id: str, rid: str, lease_until: datetime) -> BufferedFire | None:
        """Free the final run's slot, or give it to the fire waiting behind it (``store/run_slots.py``)."""
        return await self._slots.hand_over(job_id, rid, lease_until)

    async def mark_job_failing(self, job_id: str, scheduled: datetime) -> None:
        """A fire failed for good: the job is failing until a later one succeeds (the job side's write)."""
        await self._job_side.mark_failing(job_id, scheduled)

    async def clear_job_failing(self, job_id: str, scheduled: datetime, *, repeat: bool = False) -> bool:
        return await self._job_side.clear_failing(job_id, scheduled, repeat=repeat)

    async def update_job_last_run(self, job_id: str, scheduled: datetime, status: RunStatus) -> bool:
        """Record the finished fire on its job (the job side's write); True if it was the latest."""
        return await self._job_side.record_last_run(job_id, scheduled, status)

    # -- helpers ----------------------------------------------------------------------------------------

    async def _open_expiry(self, message: RunMessage, now: datetime) -> datetime:
        # An unfinished run also expires, so records abandoned with their job do not live forever.
        return max(now, scheduled_at(message)) + await self._retention.of(message.tenant)
