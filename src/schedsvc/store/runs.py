"""Run history in MongoDB: one document per fire (``_id`` = ``<jobId>:<scheduledMs>``), for every attempt.

Besides the fields in ``docs/design/data-model.md`` the execution module keeps two bookkeeping fields:

- ``leaseUntil``: while an attempt is ``running``, until when its worker is known to be alive (extended
  with the JetStream ack deadline). A redelivered message whose run is running under a live lease is put
  back rather than called twice; once the lease has passed, the attempt is taken as interrupted (it still
  counts in ``attempts``).
- ``nextAttemptAt``: while a failed run waits for its retry (status ``queued``), when the retry is due.

Every write is conditional on the run not being final yet, so a late or duplicate worker can never
overwrite a finished run.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from schedsvc import names
from schedsvc.config import Settings
from schedsvc.domain import (
    Run,
    RunMessage,
    RunStatus,
    RunTrigger,
    SchedsvcError,
    run_id,
)
from schedsvc.domain.jobs import JobForRun as JobForRun  # re-exported for execution.worker
from schedsvc.store._client import translate_errors
from schedsvc.store.jobs import MongoRunJobs

FINAL_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.MISSED)
_FINAL = [s.value for s in FINAL_STATUSES]
MAX_PAGE = 500
# A job slot outlives its lease by this much before the TTL index removes it.
_SLOT_EXPIRY = timedelta(days=1)


class InvalidCursorError(SchedsvcError, ValueError):
    """A run-history page cursor was not produced by this service (or was altered)."""


@dataclass(frozen=True, slots=True)
class RunState:
    """What a worker needs to know about a run before it acts on a delivery."""

    status: RunStatus
    attempts: int
    lease_until: datetime | None
    next_attempt_at: datetime | None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """The outcome of one attempt as stored on the run."""

    started_at: datetime
    finished_at: datetime
    http_status: int | None = None
    error: str | None = None
    response_snippet: str | None = None

    @property
    def duration_ms(self) -> int:
        return max(0, round((self.finished_at - self.started_at).total_seconds() * 1000))


def scheduled_at(message: RunMessage) -> datetime:
    return datetime.fromtimestamp(message.scheduled_ms / 1000, tz=UTC)


@translate_errors
class MongoRunStore:
    """Run documents for execution (claims, outcomes) and the run history page for the API."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], settings: Settings) -> None:
        self._runs = db[names.RUNS]
        self._job_side = MongoRunJobs(db)
        self._retention = timedelta(days=settings.run_retention_days)

    # -- execution --------------------------------------------------------------------------------

    async def job_for_run(self, job_id: str) -> JobForRun | None:
        """The job's current target and policies, or None when the job no longer exists (the job side's)."""
        return await self._job_side.job_for_run(job_id)

    async def state(self, rid: str) -> RunState | None:
        """The run's status and attempt count, or None when no attempt was recorded yet."""
        doc = await self._runs.find_one({"_id": rid}, {"status": 1, "attempts": 1, "leaseUntil": 1, "nextAttemptAt": 1})
        if doc is None:
            return None
        return RunState(
            status=RunStatus(doc.get("status", RunStatus.QUEUED)),
            attempts=int(doc.get("attempts") or 0),
            lease_until=doc.get("leaseUntil"),
            next_attempt_at=doc.get("nextAttemptAt"),
        )

    async def claim_attempt(
        self, message: RunMessage, expected_attempts: int, now: datetime, lease_until: datetime
    ) -> int | None:
        """Record that attempt ``expected_attempts + 1`` starts now; None if another worker got there first.

        The write is conditional on the attempt count the caller read, on the run not being final and on no
        live lease, so exactly one of several workers holding the same message may call the target.
        """
        rid = run_id(message.job_id, message.scheduled_ms)
        attempt = expected_attempts + 1
        # Flat conditions beside the _id equality (no top-level $or/$and), so every server answers them
        # from the _id index. `$not: {$gt: now}` matches a missing, null or expired lease.
        query: dict[str, Any] = {
            "_id": rid,
            "status": {"$nin": _FINAL},
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
                "expireAt": self._open_expiry(message, now),
            },
            "$setOnInsert": self._identity(message),
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
        """The attempt failed and a retry is scheduled: back to ``queued`` with the attempt's outcome."""
        await self._runs.update_one(
            {"_id": rid, "attempts": attempt, "status": {"$nin": _FINAL}},
            {
                "$set": {
                    **self._outcome(record),
                    "status": RunStatus.QUEUED.value,
                    "leaseUntil": None,
                    "nextAttemptAt": next_attempt_at,
                }
            },
        )

    async def release_interrupted(self, rid: str, attempt: int, error: str) -> None:
        """The worker stops mid-attempt (shutdown): the attempt counts, the run waits for redelivery."""
        await self._runs.update_one(
            {"_id": rid, "attempts": attempt, "status": RunStatus.RUNNING.value},
            {"$set": {"status": RunStatus.QUEUED.value, "leaseUntil": None, "error": error}},
        )

    async def finish(
        self,
        message: RunMessage,
        status: RunStatus,
        record: AttemptRecord | None,
        now: datetime,
        error: str | None = None,
    ) -> bool:
        """Record the final status; False when the run was already final (nothing is changed then).

        ``record`` is the last attempt's outcome, or None when no attempt was made now (skipped, or no
        attempts left after an interrupted one: the previous outcome fields are kept).
        """
        rid = run_id(message.job_id, message.scheduled_ms)
        fields: dict[str, Any] = {
            "status": status.value,
            "finishedAt": now,
            "leaseUntil": None,
            "nextAttemptAt": None,
            "expireAt": now + self._retention,
        }
        if record is not None:
            fields.update(self._outcome(record))
            fields["finishedAt"] = record.finished_at
            fields["expireAt"] = record.finished_at + self._retention
        if error is not None:
            fields["error"] = error
        insert_only = {**self._identity(message), "attempts": 0}
        for key in fields:
            insert_only.pop(key, None)
        try:
            result = await self._runs.update_one(
                {"_id": rid, "status": {"$nin": _FINAL}},
                {"$set": fields, "$setOnInsert": insert_only},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return bool(result.matched_count or result.upserted_id is not None)

    async def acquire_job_slot(self, job_id: str, rid: str, now: datetime, lease_until: datetime) -> bool:
        """Take the job's single running slot for run ``rid`` (overlap ``skip``); False if another run of
        the job holds it under a live lease.

        The slot is one small document per job in the runs collection (``_id`` = ``<jobId>:running``, no
        ``jobId`` field, so history never lists it): claiming it is one atomic conditional upsert, so of
        several fires delivered together exactly one gets it. Its lease follows the run's, so a worker
        that dies does not block the job for longer than an ack deadline.
        """
        slot = _slot_id(job_id)
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

    async def extend_job_slot(self, job_id: str, rid: str, lease_until: datetime) -> None:
        await self._runs.update_one(
            {"_id": _slot_id(job_id), "holder": rid},
            {"$set": {"leaseUntil": lease_until, "expireAt": lease_until + _SLOT_EXPIRY}},
        )

    async def release_job_slot(self, job_id: str, rid: str) -> None:
        await self._runs.delete_one({"_id": _slot_id(job_id), "holder": rid})

    async def update_job_last_run(self, job_id: str, scheduled: datetime, status: RunStatus) -> bool:
        """Record the finished fire on its job (the job side's write); True if it was the latest."""
        return await self._job_side.record_last_run(job_id, scheduled, status)

    # -- API --------------------------------------------------------------------------------------

    async def list_for_job(
        self, tenant: str, job_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Run], str | None]:
        """One page of a job's runs, newest first (by scheduled instant, then id), and the next cursor.

        Raises :class:`InvalidCursorError` for a cursor this method did not return.
        """
        limit = max(1, min(limit, MAX_PAGE))
        query: dict[str, Any] = {"jobId": job_id, "tenant": tenant}
        if cursor is not None:
            # A run's id is <jobId>:<scheduledMs>, so within one job the scheduled instant alone orders
            # and separates runs: the keyset condition needs no tie-break on _id (and no $or).
            after = datetime.fromtimestamp(_decode_cursor(cursor) / 1000, tz=UTC)
            query["scheduledAt"] = {"$lt": after}
        found = self._runs.find(query).sort([("scheduledAt", -1), ("_id", -1)]).limit(limit + 1)
        docs = await found.to_list(limit + 1)
        page = [_to_run(d) for d in docs[:limit]]
        next_cursor = _encode_cursor(_to_ms(docs[limit - 1]["scheduledAt"])) if len(docs) > limit else None
        return page, next_cursor

    async def list_failures(self, tenant: str, limit: int, before: datetime | None) -> list[Run]:
        """The tenant's failed and missed runs across its jobs, newest first (the console's Failures page)."""
        query: dict[str, Any] = {"tenant": tenant, "status": {"$in": [RunStatus.FAILED.value, RunStatus.MISSED.value]}}
        if before is not None:
            query["scheduledAt"] = {"$lt": before}
        found = self._runs.find(query).sort([("scheduledAt", -1), ("_id", -1)]).limit(max(1, min(limit, MAX_PAGE)))
        return [_to_run(d) for d in await found.to_list(None)]

    # -- helpers ----------------------------------------------------------------------------------

    def _identity(self, message: RunMessage) -> dict[str, Any]:
        return {
            "jobId": message.job_id,
            "tenant": message.tenant,
            "scheduledAt": scheduled_at(message),
            "trigger": message.trigger,
        }

    def _open_expiry(self, message: RunMessage, now: datetime) -> datetime:
        # An unfinished run also expires, so records abandoned with their job do not live forever.
        return max(now, scheduled_at(message)) + self._retention

    @staticmethod
    def _outcome(record: AttemptRecord) -> dict[str, Any]:
        return {
            "startedAt": record.started_at,
            "durationMs": record.duration_ms,
            "httpStatus": record.http_status,
            "error": record.error,
            "responseSnippet": record.response_snippet,
        }


def _slot_id(job_id: str) -> str:
    return f"{job_id}:running"


def _to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return round(value.timestamp() * 1000)


def _encode_cursor(scheduled_ms: int) -> str:
    raw = json.dumps({"before": scheduled_ms}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        scheduled_ms = json.loads(raw)["before"]
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise InvalidCursorError("cursor is not valid") from exc
    if not isinstance(scheduled_ms, int) or isinstance(scheduled_ms, bool):
        raise InvalidCursorError("cursor is not valid")
    return scheduled_ms


def _to_run(doc: dict[str, Any]) -> Run:
    try:
        trigger = RunTrigger(doc.get("trigger", RunTrigger.SCHEDULED))
    except ValueError:
        trigger = RunTrigger.SCHEDULED
    return Run(
        id=str(doc["_id"]),
        job_id=str(doc["jobId"]),
        scheduled_at=doc["scheduledAt"],
        trigger=trigger,
        status=RunStatus(doc.get("status", RunStatus.QUEUED)),
        attempts=int(doc.get("attempts") or 0),
        started_at=doc.get("startedAt"),
        finished_at=doc.get("finishedAt"),
        duration_ms=doc.get("durationMs"),
        http_status=doc.get("httpStatus"),
        error=doc.get("error"),
        response_snippet=doc.get("responseSnippet"),
    )
