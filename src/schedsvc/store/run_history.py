"""The tenant's run history as the API reads it (the ``RunHistory`` port), and retries on demand.

Runs outlive their job until retention, so every read here is by tenant, never through the job.
Pages are newest first (by scheduled instant, then id), keyset-paginated with an opaque cursor.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from schedsvc import names
from schedsvc.domain.errors import InvalidCursorError
from schedsvc.domain.models import Run, RunStatus, RunTrigger, run_id
from schedsvc.domain.runs import RunSelection
from schedsvc.domain.time import from_ms, to_ms
from schedsvc.store._client import translate_errors
from schedsvc.store.retention import RunRetention
from schedsvc.store.run_codec import read_run

MAX_PAGE = 500


@translate_errors
class MongoRunHistory:
    """Reads a tenant's runs (its jobs may be gone) and reopens failed ones for a retry on demand."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], retention: RunRetention) -> None:
        self._runs = db[names.RUNS]
        self._retention = retention

    async def list_for_job(
        self, tenant: str, job_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Run], str | None]:
        limit = max(1, min(limit, MAX_PAGE))
        query: dict[str, Any] = {"jobId": job_id, "tenant": tenant}
        if cursor is not None:
            # A run's id is <jobId>:<scheduledMs>, so within one job the scheduled instant alone orders
            # and separates runs: the keyset condition needs no tie-break on _id (and no $or).
            query["scheduledAt"] = {"$lt": from_ms(_decode_cursor(cursor))}
        found = self._runs.find(query).sort([("scheduledAt", -1), ("_id", -1)]).limit(limit + 1)
        docs = await found.to_list(limit + 1)
        page = [read_run(d) for d in docs[:limit]]
        next_cursor = _encode_cursor(to_ms(docs[limit - 1]["scheduledAt"])) if len(docs) > limit else None
        return page, next_cursor

    async def get(self, tenant: str, rid: str) -> Run | None:
        doc = await self._runs.find_one({"_id": rid, "tenant": tenant})
        return None if doc is None else read_run(doc)

    async def list_for_tenant(
        self, tenant: str, selection: RunSelection, *, limit: int, cursor: str | None = None
    ) -> tuple[list[Run], str | None]:
        limit = max(1, min(limit, MAX_PAGE))
        query: dict[str, Any] = {"tenant": tenant}
        if selection.statuses:
            query["status"] = {"$in": [s.value for s in selection.statuses]}
        if selection.job_id is not None:
            query["jobId"] = selection.job_id
        if selection.trigger is not None:
            query["trigger"] = selection.trigger.value
        scheduled: dict[str, Any] = {}
        if selection.scheduled_from is not None:
            scheduled["$gte"] = selection.scheduled_from
        if selection.scheduled_to is not None:
            scheduled["$lt"] = selection.scheduled_to
        if cursor is not None:
            before_ms, before_id = _decode_tenant_cursor(cursor)
            before = from_ms(before_ms)
            # Keyset on (scheduledAt, _id), both descending: runs of several jobs share instants. The $or
            # separates runs that share the cursor's instant; the plain `$lte` beside it (implied by the $or)
            # gives the index scan its bound, so a deep page starts at the cursor instead of filtering
            # every newer key (a top-level $or alone becomes a filter, not index bounds).
            query["$or"] = [{"scheduledAt": {"$lt": before}}, {"scheduledAt": before, "_id": {"$lt": before_id}}]
            scheduled["$lte"] = before
        if scheduled:
            query["scheduledAt"] = scheduled
        found = self._runs.find(query).sort([("scheduledAt", -1), ("_id", -1)]).limit(limit + 1)
        docs = await found.to_list(limit + 1)
        page = [read_run(d) for d in docs[:limit]]
        next_cursor = None
        if len(docs) > limit:
            last = docs[limit - 1]
            next_cursor = _encode_tenant_cursor(to_ms(last["scheduledAt"]), str(last["_id"]))
        return page, next_cursor

    async def reopen_for_retry(self, tenant: str, rid: str, now: datetime, max_retries: int) -> Run | str:
        """One conditional write on the state read, so two concurrent requests reopen it once. ``reopenedAt``
        (``now``, the instant of the reopen's message id) stays until the run's next attempt is claimed or the
        reopen is undone: the run ledger's ``stranded_retries`` reads it."""
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
                    "expireAt": now + await self._retention.of(tenant),
                    # Until the attempt is claimed: the sweeper's mark of a reopen whose message may be lost.
                    "reopenedAt": now,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        return "changed" if reopened is None else read_run(reopened)

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
                    "expireAt": now + await self._retention.of(tenant),
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

    async def revert_retries(self, reopened: Sequence[tuple[str, int]], now: datetime) -> None:
        """Undo :meth:`reopen_for_retry` for runs whose message was not published: each ``(run id, its
        retriesOnDemand after the reopen)`` is failed again with its retry given back.

        One unordered bulk write, so a run that cannot be reverted does not keep the others queued. A run a
        worker claimed meanwhile (its message was stored after all) is left to that attempt.
        """
        if not reopened:
            return
        await self._runs.bulk_write(
            [
                UpdateOne(
                    {"_id": rid, "status": RunStatus.QUEUED.value, "retriesOnDemand": retries, "leaseUntil": None},
                    {
                        "$set": {
                            "status": RunStatus.FAILED.value,
                            "finishedAt": now,
                            "attemptLimit": None,
                            "retriesOnDemand": retries - 1,
                        },
                        "$unset": {"reopenedAt": ""},
                    },
                )
                for rid, retries in reopened
            ],
            ordered=False,
        )


# -- cursors ----------------------------------------------------------------------------------------------

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
    if not _valid_ms(scheduled_ms) or not isinstance(rid, str) or not 0 < len(rid) <= 200:
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
    if not _valid_ms(scheduled_ms):
        raise InvalidCursorError("cursor is not valid")
    return int(scheduled_ms)


def _valid_ms(value: object) -> bool:
    # Within years 1-9999, the instants a datetime (and so a run) can have: 10**30 is a forgery.
    return isinstance(value, int) and not isinstance(value, bool) and _MIN_MS <= value <= _MAX_MS
