"""Run history in MongoDB: one document per fire (``_id`` = ``<jobId>:<scheduledMs>``), for every attempt.

Besides the fields in ``docs/design/data-model.md`` the execution module keeps two bookkeeping fields:

- ``leaseUntil``: while an attempt is ``running``, until when its worker is known to be alive (extended
  with the JetStream ack deadline). A redelivered message whose run is running under a live lease is put
  back rather than called twice; once the lease has passed, the attempt is taken as interrupted (it still
  counts in ``attempts``).
- ``nextAttemptAt``: while a failed run waits for its retry (status ``queued``), when the retry is due.
- ``attemptLog``: every attempt, keyed by its number (``{"1": {startedAt, finishedAt, durationMs,
  httpStatus, errorClass, error, responseSnippet, nextRetryAt}, ...}``). An object rather than an array
  so each write sets its own attempt's fields by path (``attemptLog.2.finishedAt``), with no array
  operator, in the same single-document update as the run's status. Bounded: attempts beyond
  :data:`MAX_ATTEMPT_HISTORY` are counted but not logged, and each keeps the first
  :data:`ATTEMPT_SNIPPET_CHARS` characters of its response and :data:`ATTEMPT_ERROR_CHARS` of its error.

Every write is conditional on the run not being final yet, so a late or duplicate worker can never
overwrite a finished run.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from schedsvc import names
from schedsvc.config import Settings
from schedsvc.domain import (
    InvalidCursorError,
    Run,
    RunMessage,
    RunStatus,
    RunTrigger,
    run_id,
)
from schedsvc.domain.jobs import JobForRun as JobForRun  # re-exported for execution.worker
from schedsvc.domain.models import Attempt
from schedsvc.store._client import translate_errors
from schedsvc.store.jobs import MongoRunJobs

FINAL_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.MISSED)
_FINAL = [s.value for s in FINAL_STATUSES]
MAX_PAGE = 500
MAX_ATTEMPT_HISTORY = 60
"""Attempts logged per run (a policy allows 50; retries on demand add a few)."""
ATTEMPT_SNIPPET_CHARS = 256
"""Characters of the response kept per attempt (the run's latest keeps ``response_snippet_bytes``)."""
ATTEMPT_ERROR_CHARS = 512
"""Characters of the error message kept per attempt."""
_INTERRUPTED = "the worker stopped during this attempt"
# A job slot outlives its lease by this much before the TTL index removes it.
_SLOT_EXPIRY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class RunState:
    """What a worker needs to know about a run before it acts on a delivery."""

    status: RunStatus
    attempts: int
    lease_until: datetime | None
    next_attempt_at: datetime | None
    attempt_limit: int | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class BufferedFire:
    """A fire that waited behind its job's running one (overlap ``bufferOne``) and now holds the slot."""

    message: RunMessage
    partition: int


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """The outcome of one attempt as stored on the run."""

    started_at: datetime
    finished_at: datetime
    http_status: int | None = None
    error: str | None = None
    response_snippet: str | None = None
    attempt: int = 0
    """The attempt's number (0: not known, not logged)."""
    error_class: str | None = None

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
                **_log_fields(attempt, {"startedAt": now}),
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
                    **_log_fields(attempt, _attempt_outcome(record, next_attempt_at)),
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
            {
                "$set": {
                    "status": RunStatus.QUEUED.value,
                    "leaseUntil": None,
                    "error": error,
                    **_log_fields(
                        attempt, {"finishedAt": datetime.now(UTC), "errorClass": "interrupted", "error": error}
                    ),
                }
            },
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
            fields.update(_log_fields(record.attempt, _attempt_outcome(record, None)))
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

    # Overlap ``bufferOne`` (docs/design/run-history.md, "One fire waits"): the slot document also holds
    # the one fire waiting behind its holder (``buffered``: the fire's message and partition). Waiting is
    # one conditional write on the slot; a holder's final outcome hands the slot straight to the waiting
    # fire (one conditional write), and the worker then publishes a wake-up for it.

    async def buffer_behind_job_slot(
        self, message: RunMessage, partition: int, now: datetime
    ) -> Literal["buffered", "full", "free"]:
        """Wait behind the run holding the job's slot: ``buffered`` (this fire waits, or already did),
        ``full`` (another fire waits: this one is skipped) or ``free`` (the slot was released meanwhile)."""
        slot, rid = _slot_id(message.job_id), run_id(message.job_id, message.scheduled_ms)
        entry = {
            "runId": rid,
            "tenant": message.tenant,
            "scheduledMs": message.scheduled_ms,
            "dueMs": message.due_ms,
            "trigger": message.trigger,
            "partition": partition,
        }
        result = await self._runs.update_one(
            {"_id": slot, "holder": {"$ne": rid}, "leaseUntil": {"$gt": now}, "buffered": None},
            {"$set": {"buffered": entry}},
        )
        if result.matched_count:
            return "buffered"
        doc = await self._runs.find_one({"_id": slot}, {"holder": 1, "leaseUntil": 1, "buffered": 1})
        if doc is None or doc.get("holder") == rid or not (doc.get("leaseUntil") and doc["leaseUntil"] > now):
            return "free"
        return "buffered" if (doc.get("buffered") or {}).get("runId") == rid else "full"

    async def unbuffer(self, job_id: str, rid: str) -> None:
        """The fire holding the slot no longer waits behind it (it took a lapsed slot while buffered)."""
        await self._runs.update_one(
            {"_id": _slot_id(job_id), "holder": rid, "buffered.runId": rid}, {"$unset": {"buffered": ""}}
        )

    async def hand_over_job_slot(self, job_id: str, rid: str, lease_until: datetime) -> BufferedFire | None:
        """Run ``rid`` is final: free its job's slot, or give it to the fire waiting behind it (under a lease
        until ``lease_until``) and return that fire, for the caller to wake. A no-op for a non-holder."""
        slot = _slot_id(job_id)
        for _ in range(3):  # each round loses only to a fire buffering meanwhile
            doc = await self._runs.find_one({"_id": slot, "holder": rid}, {"buffered": 1})
            if doc is None:
                return None
            waiting = doc.get("buffered")
            if not waiting or waiting.get("runId") == rid:  # nobody waits (but perhaps this run, still marked)
                unchanged = {"buffered": None} if not waiting else {"buffered.runId": rid}
                deleted = await self._runs.delete_one({"_id": slot, "holder": rid, **unchanged})
                if deleted.deleted_count:
                    return None
                continue
            handed = await self._runs.update_one(
                {"_id": slot, "holder": rid, "buffered.runId": waiting["runId"]},
                {
                    "$set": {
                        "holder": waiting["runId"],
                        "leaseUntil": lease_until,
                        "expireAt": lease_until + _SLOT_EXPIRY,
                    },
                    "$unset": {"buffered": ""},
                },
            )
            if handed.matched_count:
                # int(): a BSON int64 may come back as bson.Int64, which msgpack does not encode.
                scheduled_ms, due_ms = int(waiting["scheduledMs"]), int(waiting["dueMs"])
                message = RunMessage(job_id, str(waiting["tenant"]), scheduled_ms, due_ms, str(waiting["trigger"]), 0)
                return BufferedFire(message, int(waiting["partition"]))
        return None

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

    async def get(self, tenant: str, rid: str) -> Run | None:
        """One run of the tenant (its job may be gone), or None."""
        doc = await self._runs.find_one({"_id": rid, "tenant": tenant})
        return None if doc is None else _to_run(doc)

    async def list_for_tenant(
        self,
        tenant: str,
        *,
        limit: int,
        cursor: str | None = None,
        statuses: Sequence[RunStatus] = (),
        job_id: str | None = None,
        trigger: RunTrigger | None = None,
        scheduled_from: datetime | None = None,
        scheduled_to: datetime | None = None,
    ) -> tuple[list[Run], str | None]:
        """One page of the tenant's runs across its jobs (deleted ones too), newest first, and the next
        cursor. Filters combine; ``scheduled_from`` is inclusive, ``scheduled_to`` exclusive.

        Raises :class:`InvalidCursorError` for a cursor this method did not return.
        """
        limit = max(1, min(limit, MAX_PAGE))
        query: dict[str, Any] = {"tenant": tenant}
        if statuses:
            query["status"] = {"$in": [s.value for s in statuses]}
        if job_id is not None:
            query["jobId"] = job_id
        if trigger is not None:
            query["trigger"] = trigger.value
        scheduled: dict[str, Any] = {}
        if scheduled_from is not None:
            scheduled["$gte"] = scheduled_from
        if scheduled_to is not None:
            scheduled["$lt"] = scheduled_to
        if cursor is not None:
            before_ms, before_id = _decode_tenant_cursor(cursor)
            before = datetime.fromtimestamp(before_ms / 1000, tz=UTC)
            # Keyset on (scheduledAt, _id), both descending: runs of several jobs share instants.
            query["$or"] = [{"scheduledAt": {"$lt": before}}, {"scheduledAt": before, "_id": {"$lt": before_id}}]
        if scheduled:
            query["scheduledAt"] = scheduled
        found = self._runs.find(query).sort([("scheduledAt", -1), ("_id", -1)]).limit(limit + 1)
        docs = await found.to_list(limit + 1)
        page = [_to_run(d) for d in docs[:limit]]
        next_cursor = None
        if len(docs) > limit:
            last = docs[limit - 1]
            next_cursor = _encode_tenant_cursor(_to_ms(last["scheduledAt"]), str(last["_id"]))
        return page, next_cursor

    async def reopen_for_retry(self, tenant: str, rid: str, now: datetime, max_retries: int) -> Run | str:
        """Reopen a failed run of the tenant for one more attempt (a retry on demand).

        Returns the reopened run, or why not: ``missing`` (no such run of this tenant), ``not_failed``,
        ``exhausted`` (``max_retries`` reached) or ``changed`` (another request got there first). One
        conditional write on the state read, so two concurrent requests reopen it once.
        """
        doc = await self._runs.find_one(
            {"_id": rid, "tenant": tenant}, {"status": 1, "attempts": 1, "retriesOnDemand": 1}
        )
        if doc is None:
            return "missing"
        if doc.get("status") != RunStatus.FAILED.value:
            return "not_failed"
        retries = int(doc.get("retriesOnDemand") or 0)
        if retries >= max_retries:
            return "exhausted"
        attempts = int(doc.get("attempts") or 0)
        reopened = await self._runs.find_one_and_update(
            {
                "_id": rid,
                "tenant": tenant,
                "status": RunStatus.FAILED.value,
                "attempts": attempts,
                "retriesOnDemand": {"$in": [0, None]} if retries == 0 else retries,
            },
            {
                "$set": {
                    "status": RunStatus.QUEUED.value,
                    "attemptLimit": attempts + 1,
                    "retriesOnDemand": retries + 1,
                    "finishedAt": None,
                    "leaseUntil": None,
                    "nextAttemptAt": None,
                    "expireAt": now + self._retention,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        return "changed" if reopened is None else _to_run(reopened)

    async def open_backfill(self, tenant: str, job_id: str, fires_ms: Sequence[int], now: datetime) -> list[int]:
        """The fires of a backfill to publish: those with no run yet, those recorded ``missed`` (reopened here
        as ``queued`` runs with trigger ``backfill``), and those queued without an attempt (a backfill whose
        messages may not have been published). A fire that ran, runs or was skipped is left alone, so a
        repeated backfill of a range runs nothing twice."""
        rids = {run_id(job_id, ms): ms for ms in fires_ms}
        if not rids:
            return []
        await self._runs.update_many(
            {"_id": {"$in": list(rids)}, "tenant": tenant, "status": RunStatus.MISSED.value},
            {
                "$set": {
                    "status": RunStatus.QUEUED.value,
                    "trigger": RunTrigger.BACKFILL.value,
                    "finishedAt": None,
                    "error": None,
                    "expireAt": now + self._retention,
                }
            },
        )
        found = self._runs.find({"_id": {"$in": list(rids)}}, {"status": 1, "attempts": 1})
        taken = {
            doc["_id"]
            async for doc in found
            if not (doc.get("status") == RunStatus.QUEUED.value and not doc.get("attempts"))
        }
        return [ms for rid, ms in rids.items() if rid not in taken]

    async def revert_retry(self, rid: str, retries: int, now: datetime) -> None:
        """Undo :meth:`reopen_for_retry` when its message could not be published (the run is failed again)."""
        await self._runs.update_one(
            {"_id": rid, "status": RunStatus.QUEUED.value, "retriesOnDemand": retries, "leaseUntil": None},
            {
                "$set": {
                    "status": RunStatus.FAILED.value,
                    "finishedAt": now,
                    "attemptLimit": None,
                    "retriesOnDemand": retries - 1,
                }
            },
        )

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


def _log_fields(attempt: int, fields: dict[str, Any]) -> dict[str, Any]:
    """``$set`` paths for attempt ``attempt``'s entry in ``attemptLog`` (none beyond the bound)."""
    if not 1 <= attempt <= MAX_ATTEMPT_HISTORY:
        return {}
    return {f"attemptLog.{attempt}.{name}": value for name, value in fields.items()}


def _attempt_outcome(record: AttemptRecord, next_retry_at: datetime | None) -> dict[str, Any]:
    snippet = record.response_snippet
    return {
        "startedAt": record.started_at,
        "finishedAt": record.finished_at,
        "durationMs": record.duration_ms,
        "httpStatus": record.http_status,
        "errorClass": record.error_class,
        "error": None if record.error is None else record.error[:ATTEMPT_ERROR_CHARS],
        "responseSnippet": None if snippet is None else snippet[:ATTEMPT_SNIPPET_CHARS],
        "nextRetryAt": next_retry_at,
    }


def _attempt_history(doc: dict[str, Any], status: RunStatus) -> list[Attempt]:
    """The logged attempts, oldest first. An attempt without an end that is not the one running now was
    cut short by its worker (a crash, or a stop that could not record it): shown as interrupted."""
    log = doc.get("attemptLog")
    if not isinstance(log, dict):
        return []
    attempts = int(doc.get("attempts") or 0)
    history = []
    for key, entry in log.items():
        if not (isinstance(entry, dict) and str(key).isdigit() and entry.get("startedAt")):
            continue
        number = int(key)
        finished = entry.get("finishedAt")
        error_class, error = entry.get("errorClass"), entry.get("error")
        running_now = status == RunStatus.RUNNING and number == attempts
        if finished is None and not running_now:
            error_class, error = "interrupted", error or _INTERRUPTED
        history.append(
            Attempt(
                number=number,
                started_at=entry["startedAt"],
                finished_at=finished,
                duration_ms=entry.get("durationMs"),
                http_status=entry.get("httpStatus"),
                error_class=error_class,
                error=error,
                response_snippet=entry.get("responseSnippet"),
                next_retry_at=entry.get("nextRetryAt"),
            )
        )
    return sorted(history, key=lambda a: a.number)


def _to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return round(value.timestamp() * 1000)


_MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def _encode_tenant_cursor(scheduled_ms: int, rid: str) -> str:
    raw = json.dumps({"before": scheduled_ms, "id": rid}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_tenant_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
        scheduled_ms, rid = decoded["before"], decoded["id"]
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise InvalidCursorError("cursor is not valid") from exc
    valid_ms = (
        isinstance(scheduled_ms, int) and not isinstance(scheduled_ms, bool) and _MIN_MS <= scheduled_ms <= _MAX_MS
    )
    if not valid_ms or not isinstance(rid, str) or not 0 < len(rid) <= 200:
        raise InvalidCursorError("cursor is not valid")
    return scheduled_ms, rid


def _encode_cursor(scheduled_ms: int) -> str:
    raw = json.dumps({"before": scheduled_ms}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        scheduled_ms = json.loads(raw)["before"]
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise InvalidCursorError("cursor is not valid") from exc
    # Within years 1-9999, the instants a datetime (and so a run) can have: 10**30 is a forgery.
    if not isinstance(scheduled_ms, int) or isinstance(scheduled_ms, bool) or not _MIN_MS <= scheduled_ms <= _MAX_MS:
        raise InvalidCursorError("cursor is not valid")
    return scheduled_ms


def _to_run(doc: dict[str, Any]) -> Run:
    try:
        trigger = RunTrigger(doc.get("trigger", RunTrigger.SCHEDULED))
    except ValueError:
        trigger = RunTrigger.SCHEDULED
    status = RunStatus(doc.get("status", RunStatus.QUEUED))
    return Run(
        id=str(doc["_id"]),
        job_id=str(doc["jobId"]),
        scheduled_at=doc["scheduledAt"],
        trigger=trigger,
        status=status,
        attempts=int(doc.get("attempts") or 0),
        started_at=doc.get("startedAt"),
        finished_at=doc.get("finishedAt"),
        duration_ms=doc.get("durationMs"),
        http_status=doc.get("httpStatus"),
        error=doc.get("error"),
        response_snippet=doc.get("responseSnippet"),
        next_attempt_at=doc.get("nextAttemptAt") if status == RunStatus.QUEUED else None,
        retries_on_demand=int(doc.get("retriesOnDemand") or 0),
        attempt_history=_attempt_history(doc, status),
    )
