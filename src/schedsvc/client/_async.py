"""``AsyncClient``: every operation of the jobs API over ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from types import TracebackType
from typing import TypeVar, Unpack

import httpx

from schedsvc.client import _protocol as protocol
from schedsvc.client._base import BaseClient
from schedsvc.client._protocol import Call, JobFilters, JobRef, Page, RunFilters, RunListFilters
from schedsvc.domain.models import Job, JobCreate, JobPatch, Run, Schedule
from schedsvc.domain.tenants import TenantSettings, TenantSettingsPatch
from schedsvc.domain.wire import (
    BackfillAccepted,
    BulkJobResult,
    JobList,
    JobSelector,
    RunAccepted,
    RunList,
    RunRetryReport,
)

T = TypeVar("T")
Item = TypeVar("Item")


class AsyncClient(BaseClient[httpx.AsyncClient]):
    """The jobs API of one tenant (the owner of ``api_key``).

    Problems are raised as :class:`schedsvc.client.ApiError` subclasses; 429 and 503 are retried as
    ``retry`` says. Use as ``async with AsyncClient(url, key) as client: ...`` or call ``aclose()``.
    """

    _http_type = httpx.AsyncClient

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        retries_done = 0
        while True:
            response = await self._http.send(self._request(call))
            delay = self.retry.delay(response.status_code, response.headers, retries_done)
            if delay is None:
                return protocol.read(call, response.status_code, response.headers, response.content)
            retries_done += 1
            await asyncio.sleep(delay)

    async def _each_item(self, call: Call[Page[Item]]) -> AsyncIterator[Item]:
        """Every item of a list, page after page, as long as the protocol finds a next page."""
        page_call: Call[Page[Item]] | None = call
        while page_call is not None:
            page = await self._send(page_call)
            for item in page.items:
                yield item
            page_call = protocol.next_page(page_call, page)

    async def create_job(self, job: JobCreate, *, idempotency_key: str | None = None) -> Job:
        """Create a job. Retries reuse one ``Idempotency-Key``, so a job is created at most once."""
        return await self._send(protocol.create_job(job, idempotency_key))

    async def list_jobs(
        self, *, limit: int | None = None, cursor: str | None = None, **filters: Unpack[JobFilters]
    ) -> JobList:
        """One page of the jobs matching every filter given (:class:`JobFilters`); ``iter_jobs`` follows the
        pages for you."""
        return await self._send(protocol.list_jobs(filters, limit, cursor))

    def iter_jobs(self, *, page_size: int = 100, **filters: Unpack[JobFilters]) -> AsyncIterator[Job]:
        """Every job matching the filters (as ``list_jobs``), page after page, following ``nextCursor``."""
        return self._each_item(protocol.list_jobs(filters, page_size, None))  # a bad filter raises here

    async def get_job(self, job_id: str) -> Job:
        return await self._send(protocol.get_job(job_id))

    async def update_job(self, job: JobRef, changes: JobPatch, *, version: int | None = None) -> Job:
        """Change the fields set in ``changes``. Given a ``Job`` (or ``version``), a lost update raises
        ``PreconditionFailedError`` instead of overwriting someone else's change."""
        return await self._send(protocol.update_job(job, changes, version))

    async def delete_job(self, job: JobRef, *, version: int | None = None) -> None:
        await self._send(protocol.delete_job(job, version))

    async def pause_job(self, job: JobRef, *, version: int | None = None) -> Job:
        return await self._send(protocol.pause_job(job, version))

    async def resume_job(self, job: JobRef, *, version: int | None = None) -> Job:
        """Resume a paused job; fires missed while paused follow the job's catch-up policy."""
        return await self._send(protocol.resume_job(job, version))

    async def run_job_now(self, job: JobRef) -> RunAccepted:
        """Queue a ``manual`` run now; its outcome appears in the run history."""
        return await self._send(protocol.run_job_now(job))

    async def pause_jobs(self, selector: JobSelector, *, limit: int | None = None) -> BulkJobResult:
        """Pause the active jobs the selector matches: at most ``limit`` (default 1,000); ``more``: call again."""
        return await self._send(protocol.bulk_action(protocol.PAUSE_JOBS, selector, limit))

    async def resume_jobs(self, selector: JobSelector, *, limit: int | None = None) -> BulkJobResult:
        """Resume the paused jobs the selector matches (catch-up applies): at most ``limit``; ``more``: call again."""
        return await self._send(protocol.bulk_action(protocol.RESUME_JOBS, selector, limit))

    async def delete_jobs(self, selector: JobSelector, *, limit: int | None = None) -> BulkJobResult:
        """Delete the jobs the selector matches: at most ``limit`` (default 1,000); ``more``: call again."""
        return await self._send(protocol.bulk_action(protocol.DELETE_JOBS, selector, limit))

    async def backfill_job(self, job: JobRef, first: datetime, last: datetime) -> BackfillAccepted:
        """Run every fire of the job's schedule from ``first`` to ``last`` (inclusive, past, at most 1,000),
        recorded with trigger ``backfill``; fires that already have a run are not run again."""
        return await self._send(protocol.backfill_job(job, first, last))

    async def list_runs(self, job: JobRef, *, limit: int | None = None, cursor: str | None = None) -> RunList:
        """One page of a job's runs, newest first."""
        return await self._send(protocol.list_job_runs(job, limit, cursor))

    def iter_runs(self, job: JobRef, *, page_size: int = 100) -> AsyncIterator[Run]:
        """Every run of a job, newest first, following ``nextCursor``."""
        return self._each_item(protocol.list_job_runs(job, page_size, None))

    async def list_tenant_runs(
        self, *, limit: int | None = None, cursor: str | None = None, **filters: Unpack[RunListFilters]
    ) -> RunList:
        """One page of the tenant's runs across its jobs (deleted ones too), newest first, matching every filter
        given (:class:`RunListFilters`)."""
        return await self._send(protocol.list_tenant_runs(filters, limit, cursor))

    async def get_run(self, run_id: str) -> Run:
        """One run with every attempt."""
        return await self._send(protocol.get_run(run_id))

    async def retry_run(self, run_id: str) -> RunAccepted:
        """Retry a failed run on demand: one more attempt, same run id and idempotency key."""
        return await self._send(protocol.retry_run(run_id))

    async def retry_runs(
        self,
        *,
        limit: int = 20,
        cursor: str | None = None,
        idempotency_key: str | None = None,
        **filters: Unpack[RunFilters],
    ) -> RunRetryReport:
        """Retry up to ``limit`` (≤ 100) of the tenant's failed runs matching every filter given
        (:class:`RunFilters`), newest first, each as ``retry_run`` does; the report says which were queued and
        why others were refused. Its ``next_cursor`` continues with the next batch. Retries reuse one
        ``Idempotency-Key``."""
        return await self._send(protocol.retry_runs(filters, limit, cursor, idempotency_key))

    async def get_tenant_settings(self) -> TenantSettings:
        """The tenant's settings: its default notification target and how long its runs are kept."""
        return await self._send(protocol.get_tenant_settings())

    async def update_tenant_settings(self, changes: TenantSettingsPatch) -> TenantSettings:
        """Change the fields present in ``changes``; ``None`` returns one to its default."""
        return await self._send(protocol.update_tenant_settings(changes))

    async def preview_schedule(
        self, schedule: Schedule, *, after: datetime | None = None, count: int = 10
    ) -> list[datetime]:
        """The next ``count`` fires of ``schedule`` strictly after ``after`` (default: now)."""
        return (await self._send(protocol.preview_schedule(schedule, after, count))).fires
