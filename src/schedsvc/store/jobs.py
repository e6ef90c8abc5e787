"""MongoDB adapter for jobs, as the API sees them (the job repository); documents come from the job codec."""

from __future__ import annotations

import base64
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from schedsvc import names
from schedsvc.domain.errors import (
    DuplicateJobNameError,
    IdempotencyInProgressError,
    InvalidCursorError,
    JobNotFoundError,
    VersionConflictError,
)
from schedsvc.domain.jobs import IdempotencyClaim, JobChange, JobForRun, JobNotice, JobPage, JobStateError, NewJob
from schedsvc.domain.models import Job, RunStatus
from schedsvc.domain.rules import partition_of
from schedsvc.domain.wire import EVERY_JOB, JobSelector
from schedsvc.store import job_codec
from schedsvc.store._client import translate_errors
from schedsvc.store.replies import MongoReplies

log = logging.getLogger(__name__)
Doc = dict[str, Any]
CREATE_JOB = "createJob"
"""The operation's name among the answers kept under an Idempotency-Key (``store/replies.py``)."""


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

    def __init__(
        self,
        db: AsyncDatabase[Doc],
        partitions: int,
        replies: MongoReplies,
        *,
        on_change: Callable[[JobNotice], Awaitable[None]] | None = None,
    ) -> None:
        self._jobs = db[names.JOBS]
        self._replies = replies
        """Where a create's answer is kept under its Idempotency-Key, as every operation's is."""
        self._partitions = partitions
        self._on_change = on_change

    def partition_of(self, job_id: str) -> int:
        return partition_of(job_id, self._partitions)

    async def _announce(self, notice: JobNotice) -> None:
        """Every successful write tells timing and the cache (best effort: timing also rescans)."""
        if self._on_change is not None:
            try:
                await self._on_change(notice)
            except Exception:
                log.warning("could not announce the change of job %s", notice.job_id, exc_info=True)

    async def _announce_document(self, doc: Doc) -> None:
        timing = job_codec.read_timing(doc)
        await self._announce(JobNotice(timing.tenant, timing.id, timing.partition, timing))

    async def create(self, job: NewJob, claim: IdempotencyClaim | None = None) -> tuple[Job, bool]:
        job_id = str(ObjectId())
        tenant = job.tenant
        if claim is not None:
            replay = await self._claim_idempotency_key(tenant, claim, job_id, job.created_at)
            if replay is not None:
                return replay, False
        doc = job_codec.encode(
            job_codec.new_document(
                job_id,
                tenant,
                job.body,
                status=job.status,
                next_run=job.next_run,
                partition=partition_of(job_id, self._partitions),
                now=job.created_at,
            )
        )
        try:
            await self._jobs.insert_one(doc)
        except BaseException as exc:
            # A failed create releases its key, so the identical retry is a new attempt, not a replay of
            # a job that does not exist (best effort: the database may be the thing that failed).
            if claim is not None:
                with contextlib.suppress(Exception):
                    await self._replies.release(tenant, CREATE_JOB, claim.key, answer=job_id.encode())
            if isinstance(exc, DuplicateKeyError):
                raise DuplicateJobNameError(f"a job named {job.body.name!r} already exists") from None
            raise
        await self._announce_document(doc)
        return job_codec.read_job(doc), True

    async def _claim_idempotency_key(
        self, tenant: str, claim: IdempotencyClaim, job_id: str, now: datetime
    ) -> Job | None:
        # The new job's id is its answer, known before the insert: kept with the claim, so a repeat after a
        # crash between insert and answer finds the job rather than creating a second one.
        kept = await self._replies.claim(tenant, CREATE_JOB, claim.key, claim.request, now, answer=job_id.encode())
        if kept is None:
            return None
        doc = await self._jobs.find_one(job_codec.of_tenant(tenant, kept.decode()))
        if doc is None:
            raise IdempotencyInProgressError(
                "a request with this Idempotency-Key is still in progress, or the job it created was deleted"
            )
        return job_codec.read_job(doc)

    async def get(self, tenant: str, job_id: str) -> Job:
        doc = await self._jobs.find_one(job_codec.of_tenant(tenant, job_id))
        if doc is None:
            raise JobNotFoundError(job_id)
        return job_codec.read_job(doc)

    async def list(
        self, tenant: str, selector: JobSelector = EVERY_JOB, *, limit: int, cursor: str | None = None
    ) -> JobPage:
        """A page of the tenant's jobs in creation order (stable across pages while jobs are added)."""
        after_id = decode_cursor(cursor) if cursor else None
        query = job_codec.page_query(tenant, selector, after_id=after_id)
        docs = await self._jobs.find(query).sort(job_codec.ID, 1).limit(limit + 1).to_list()
        more = len(docs) > limit
        items = [job_codec.read_job(d) for d in docs[:limit]]
        return JobPage(items, encode_cursor(items[-1].id) if more and items else None)

    async def count(self, tenant: str, selector: JobSelector, *, limit: int) -> int:
        """How many of the tenant's jobs the selector matches, counted up to ``limit`` (the server stops there)."""
        return await self._jobs.count_documents(job_codec.page_query(tenant, selector), limit=limit)

    async def update(
        self,
        tenant: str,
        job_id: str,
        change: JobChange,
        expected_version: int | None,
        *,
        now: datetime,
    ) -> Job:
        """Apply ``change`` if the job is at ``expected_version`` (any when None) and, when
        ``change.only_if_status`` is set, in one of those statuses: one conditional write.

        :class:`JobStateError` (carrying the job as it is) when only the status did not match.
        """
        try:
            doc = await self._jobs.find_one_and_update(
                job_codec.change_filter(tenant, job_id, change, expected_version),
                job_codec.change_update(change, now),
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            raise DuplicateJobNameError(f"a job named {change.name!r} already exists") from None
        if doc is not None:
            await self._announce_document(doc)
            return job_codec.read_job(doc)
        current = await self.get(tenant, job_id)  # JobNotFoundError when missing
        if change.only_if_status and current.status not in change.only_if_status:
            raise JobStateError(current)
        raise VersionConflictError(job_id)

    async def delete(self, tenant: str, job_id: str, expected_version: int | None) -> int:
        """Delete a job; returns its partition (for the timing notice)."""
        doc = await self._jobs.find_one_and_delete(
            job_codec.of_tenant(tenant, job_id, expected_version), projection={job_codec.PARTITION: 1}
        )
        if doc is None:
            if await self._jobs.count_documents(job_codec.of_tenant(tenant, job_id), limit=1):
                raise VersionConflictError(job_id)
            raise JobNotFoundError(job_id)
        partition = int(doc[job_codec.PARTITION])
        await self._announce(JobNotice(tenant, job_id, partition))
        return partition


class MongoRunJobs:
    """The job side of execution: what a run needs of its job, and the job's last-run record."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._jobs = db[names.JOBS]

    async def job_for_run(self, job_id: str) -> JobForRun | None:
        """The job's current target and policies, or None when the job no longer exists.

        Raises ``msgspec.ValidationError`` when the stored job does not decode (the run then fails).
        """
        doc = await self._jobs.find_one(job_codec.of_id(job_id), job_codec.FOR_RUN_PROJECTION)
        return None if doc is None else job_codec.read_for_run(doc)

    async def record_last_run(self, job_id: str, scheduled: datetime, status: RunStatus) -> bool:
        """Set the job's last run unless a later fire already finished; True if set."""
        result = await self._jobs.update_one(*job_codec.last_run_write(job_id, scheduled, status))
        return result.modified_count == 1

    async def mark_failing(self, job_id: str, scheduled: datetime) -> None:
        """A fire of the job failed for good: the job is failing until a fire at or after it succeeds."""
        await self._jobs.update_one(*job_codec.failure_write(job_id, scheduled))

    async def clear_failing(self, job_id: str, scheduled: datetime, *, repeat: bool = False) -> bool:
        """The fire at ``scheduled`` succeeded; True if this success recovered a failing job. With
        ``repeat`` (a redelivery of the success), also True if it already did: its report may not have
        been made."""
        result = await self._jobs.update_one(*job_codec.recovery_write(job_id, scheduled))
        if result.modified_count == 1:
            return True
        return repeat and await self._jobs.find_one(job_codec.recovered_by(job_id, scheduled), {"_id": 1}) is not None
