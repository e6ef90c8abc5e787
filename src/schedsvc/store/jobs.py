"""MongoDB adapter for jobs, as the API sees them (timing and execution have their own adapters)."""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from schedsvc import names
from schedsvc.domain import (
    DuplicateJobNameError,
    IdempotencyConflictError,
    InvalidCursorError,
    Job,
    JobCreate,
    JobNotFoundError,
    JobPatch,
    JobStatus,
    VersionConflictError,
    partition_of,
)
from schedsvc.store._client import translate_errors

Doc = dict[str, Any]
IDEMPOTENCY_TTL = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class JobPage:
    items: list[Job]
    next_cursor: str | None


def to_document(value: msgspec.Struct) -> Any:
    """A Struct as BSON-ready builtins: datetimes stay datetimes, dates become ISO strings."""
    return msgspec.to_builtins(value, builtin_types=(datetime,))


def job_from_document(doc: Mapping[str, Any]) -> Job:
    return msgspec.convert({**doc, "id": doc["_id"]}, Job, strict=False)


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The job id a cursor points after; ValueError for a cursor this service did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors, as is non-ASCII input
        raise InvalidCursorError("cursor is not valid") from None
    if not re.fullmatch(r"[0-9a-f]{24}", raw):
        raise InvalidCursorError("cursor is not valid")
    return raw


@translate_errors
class MongoJobStore:
    """Jobs of one tenant at a time: every query filters on the tenant, so tenants never meet."""

    def __init__(self, db: AsyncDatabase[Doc], partitions: int) -> None:
        self._jobs = db[names.JOBS]
        self._idempotency = db[names.IDEMPOTENCY]
        self._partitions = partitions

    async def create(
        self,
        tenant: str,
        body: JobCreate,
        next_run: datetime | None,
        *,
        now: datetime,
        idempotency_key: str | None = None,
        request_hash: str = "",
    ) -> tuple[Job, bool]:
        """Insert a job; returns it and whether it is new (False: an idempotent replay)."""
        job_id = str(ObjectId())
        if idempotency_key is not None:
            replay = await self._claim_idempotency_key(tenant, idempotency_key, request_hash, job_id, now)
            if replay is not None:
                return replay, False
        status = JobStatus.PAUSED if body.paused else (JobStatus.ACTIVE if next_run else JobStatus.COMPLETED)
        doc: Doc = {
            "_id": job_id,
            "tenant": tenant,
            "name": body.name,
            "schedule": to_document(body.schedule),
            "target": to_document(body.target),
            "retry": to_document(body.retry),
            "catchup": to_document(body.catchup),
            "overlap": body.overlap,
            "tags": body.tags,
            "metadata": body.metadata,
            "status": status.value,
            "nextRun": next_run,
            "resumedAt": None,
            "lastRun": None,
            "lastRunStatus": None,
            "partition": partition_of(job_id, self._partitions),
            "createdAt": now,
            "updatedAt": now,
            "version": 1,
        }
        try:
            await self._jobs.insert_one(doc)
        except BaseException as exc:
            # A failed create releases its key, so the identical retry is a new attempt, not a replay of
            # a job that does not exist (best effort: the database may be the thing that failed).
            if idempotency_key is not None:
                with contextlib.suppress(Exception):
                    await self._idempotency.delete_one({"_id": f"{tenant}:{idempotency_key}", "jobId": job_id})
            if isinstance(exc, DuplicateKeyError):
                raise DuplicateJobNameError(f"a job named {body.name!r} already exists") from None
            raise
        return job_from_document(doc), True

    async def _claim_idempotency_key(
        self, tenant: str, key: str, request_hash: str, job_id: str, now: datetime
    ) -> Job | None:
        record = {
            "_id": f"{tenant}:{key}",
            "requestHash": request_hash,
            "jobId": job_id,
            "expireAt": now + IDEMPOTENCY_TTL,
        }
        try:
            await self._idempotency.insert_one(record)
            return None
        except DuplicateKeyError:
            pass
        existing = await self._idempotency.find_one({"_id": record["_id"]})
        if existing is None:  # expired between the two calls: claim it again
            return await self._claim_idempotency_key(tenant, key, request_hash, job_id, now)
        if existing["requestHash"] != request_hash:
            raise IdempotencyConflictError("Idempotency-Key was already used with a different request body")
        doc = await self._jobs.find_one({"_id": existing["jobId"], "tenant": tenant})
        if doc is None:
            raise IdempotencyConflictError(
                "a request with this Idempotency-Key is still in progress or its job was deleted"
            )
        return job_from_document(doc)

    async def get(self, tenant: str, job_id: str) -> Job:
        return job_from_document(await self.get_document(tenant, job_id))

    async def get_document(self, tenant: str, job_id: str) -> Doc:
        doc = await self._jobs.find_one({"_id": job_id, "tenant": tenant})
        if doc is None:
            raise JobNotFoundError(job_id)
        return doc

    async def list(
        self,
        tenant: str,
        *,
        limit: int,
        cursor: str | None = None,
        status: JobStatus | None = None,
        tag: str | None = None,
        name_prefix: str | None = None,
    ) -> JobPage:
        """A page of the tenant's jobs in creation order (stable across pages while jobs are added)."""
        query: Doc = {"tenant": tenant}
        if cursor:
            query["_id"] = {"$gt": decode_cursor(cursor)}
        if status is not None:
            query["status"] = status.value
        if tag is not None:
            query["tags"] = tag
        if name_prefix:
            query["name"] = {"$regex": f"^{re.escape(name_prefix)}"}
        docs = await self._jobs.find(query).sort("_id", 1).limit(limit + 1).to_list()
        more = len(docs) > limit
        items = [job_from_document(d) for d in docs[:limit]]
        return JobPage(items, encode_cursor(items[-1].id) if more and items else None)

    async def update(
        self,
        tenant: str,
        job_id: str,
        changes: Doc,
        expected_version: int | None,
        *,
        now: datetime,
    ) -> Job:
        """Apply ``changes`` (document fields) if the job is at ``expected_version`` (any when None)."""
        query: Doc = {"_id": job_id, "tenant": tenant}
        if expected_version is not None:
            query["version"] = expected_version
        try:
            doc = await self._jobs.find_one_and_update(
                query,
                {"$set": {**changes, "updatedAt": now}, "$inc": {"version": 1}},
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            raise DuplicateJobNameError(f"a job named {changes.get('name')!r} already exists") from None
        if doc is None:
            await self._raise_missing_or_conflict(tenant, job_id)
        return job_from_document(doc)  # type: ignore[arg-type]

    async def delete(self, tenant: str, job_id: str, expected_version: int | None) -> int:
        """Delete a job; returns its partition (for the timing notice)."""
        query: Doc = {"_id": job_id, "tenant": tenant}
        if expected_version is not None:
            query["version"] = expected_version
        doc = await self._jobs.find_one_and_delete(query, projection={"partition": 1})
        if doc is None:
            await self._raise_missing_or_conflict(tenant, job_id)
        return int(doc["partition"])  # type: ignore[index]

    async def _raise_missing_or_conflict(self, tenant: str, job_id: str) -> None:
        if await self._jobs.count_documents({"_id": job_id, "tenant": tenant}, limit=1):
            raise VersionConflictError(job_id)
        raise JobNotFoundError(job_id)

    async def ping(self) -> None:
        await self._jobs.database.command("ping")


def patch_to_changes(patch: JobPatch) -> Doc:
    """The document fields a PATCH body sets (unset fields are absent)."""
    changes: Doc = {}
    for field in patch.__struct_fields__:
        value = getattr(patch, field)
        if value is msgspec.UNSET:
            continue
        # Python and document field names are the same single words.
        changes[field] = to_document(value) if isinstance(value, msgspec.Struct) else value
    return changes


def utcnow() -> datetime:
    """Now, truncated to the millisecond BSON stores, so responses equal what a re-read returns."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
