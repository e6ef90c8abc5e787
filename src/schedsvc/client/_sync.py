"""``Client``: every operation of the jobs API over ``httpx.Client`` (the blocking twin of ``AsyncClient``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
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


class Client(BaseClient[httpx.Client]):
    """The jobs API of one tenant (the owner of ``api_key``).

    Problems are raised as :class:`schedsvc.client.ApiError` subclasses; 429 and 503 are retried as
    ``retry`` says. Use as ``with Client(url, key) as client: ...`` or call ``close()``.
    """

    _http_type = httpx.Client

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def _send(self, call: Call[T]) -> T:
        retries_done = 0
        while True:
            response = self._http.send(self._request(call))
            delay = self.retry.delay(response.status_code, response.headers, retries_done)
            if delay is None:
                return protocol.read(call, response.status_code, response.headers, response.content)
            retries_done += 1
            time.sleep(delay)

    def _each_item(self, call: Call[Page[Item]]) -> Iterator[Item]:
        """Every item of a list, page after page, as long as the protocol finds a next page."""
        page_call: Call[Page[Item]] | None = call
        while page_call is not None:
            page = self._send(page_call)
            yield from page.items
            page_call = protocol.next_page(page_call, page)

    def create_job(self, job: JobCreate, *, idempotency_key: str | None = None) -> Job:
        """Create a job. Retries reuse one ``Idempotency-Key``, so a job is created at most once."""
        return self._send(protocol.create_job(job, idempotency_key))

    def list_jobs(
        self, *, limit: int | None = None, cursor: str | None = None, **filters: Unpack[JobFilters]
    ) -> JobList:
        """One page of the jobs matching every filter given (:class:`JobFilters`); ``iter_jobs`` follows the
        pages for you."""
        return self._send(protocol.list_jobs(filters, limit, cursor))

    def iter_jobs(self, *, page_size: int = 100, **filters: Unpack[JobFilters]) -> Iterator[Job]:
        """Every job matching the filters (as ``list_jobs``), page after page, following ``nextCursor``."""
        return self._each_item(protocol.list_jobs(filters, page_size, None))  # a bad filter raises here

    def get_job(self, job_id: str) -> Job:
        return self._send(protocol.get_job(job_id))

    def update_job(self, job: JobRef, changes: JobPatch, *, version: int | None = None) -> Job:
        """Change the fields set in ``changes``. Given a ``Job`` (or ``version``), a lost update raises
        ``PreconditionFailedError`` instead of overwriting someone else's change."""
        return self._send(protocol.update_job(job, changes, version))

    def delete_job(self, job: JobRef, *, version: int | None = None) -> None:
        self._send(protocol.delete_job(job, version))

    def pause_job(self, job: JobRef, *, version: int | None = None) -> Job:
        return self._send(protocol.pause_job(job, version))

    def resume_job(self, job: JobRef, *, version: int | None = None) -> Job:
        """Resume a paused job; fires missed while paused follow the job's catch-up policy."""
        return self._send(protocol.resume_job(job, version))

    def run_job_now(self, job: JobRef) -> RunAccepted:
        """Queue a ``manual`` run now; its outcome appears in the run history."""
        return self._send(protocol.run_job_now(job))

    def pause_jobs(self, selector: JobSelector, *, limit: int | None = None) -> BulkJobResult:
        """Pause the active jobs the selector matches: at most ``limit`` (default 1,000); ``more``: call again."""
        return self._send(protocol.bulk_action(protocol.PAUSE_JOBS, selector, limit))

    def resume_jobs(self, selector: JobSelector, *, limit: int | None = None) -> BulkJobResult:
        """Resume the paused jobs the selector matches (catch-up applies): at most ``limit``; ``more``: call again."""
        return self._send(protocol.bulk_action(protocol.RESUME_JOBS, selector, limit))

    def delete_jobs(self, selector: JobSelector, *, limit: int | None = None) -> BulkJobResult:
        """Delete the jobs the selector matches: at most ``limit`` (default 1,000); ``more``: call again."""
        return self._send(protocol.bulk_action(protocol.DELETE_JOBS, selector, limit))

    def backfill_job(self, job: JobRef, first: datetime, last: datetime) -> BackfillAccepted:
        """Run every fire of the job's schedule from ``first`` to ``last`` (inclusive, past, at most 1,000),
        recorded with trigger ``backfill``; fires that already have a run are not run again."""
        return self._send(protocol.backfill_job(job, first, last))

    def list_runs(self, job: JobRef, *, limit: int | None = None, cursor: str | None = None) -> RunList:
        """One page of a job's runs, newest first."""
        return self._send(protocol.list_job_runs(job, limit, cursor))

    def iter_runs(self, job: JobRef, *, page_size: int = 100) -> Iterator[Run]:
        """Every run of a job, newest first, following ``nextCursor``."""
        return self._each_item(protocol.list_job_runs(job, page_size, None))

    def list_tenant_runs(
        self, *, limit: int | None = None, cursor: str | None = None, **filters: Unpack[RunListFilters]
    ) -> RunList:
        """One page of the tenant's runs across its jobs (deleted ones too), newest first, matching every filter
        given (:class:`RunListFilters`)."""
        return self._send(protocol.list_tenant_runs(filters, limit, cursor))

    def get_run(self, run_id: str) -> Run:
        """One run with every attempt."""
        return self._send(protocol.get_run(run_id))

    def retry_run(self, run_id: str) -> RunAccepted:
        """Retry a failed run on demand: one more attempt, same run id and idempotency key."""
        return self._send(protocol.retry_run(run_id))

    def retry_runs(
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
        return self._send(protocol.retry_runs(filters, limit, cursor, idempotency_key))

    def get_tenant_settings(self) -> TenantSettings:
        """The tenant's settings: its default notification target and how long its runs are kept."""
        return self._send(protocol.get_tenant_settings())

    def update_tenant_settings(self, changes: TenantSettingsPatch) -> TenantSettings:
        """Change the fields present in ``changes``; ``None`` returns one to its default."""
        return self._send(protocol.update_tenant_settings(changes))

    def preview_schedule(self, schedule: Schedule, *, after: datetime | None = None, count: int = 10) -> list[datetime]:
        """The next ``count`` fires of ``schedule`` strictly after ``after`` (default: now)."""
        return (self._send(protocol.preview_schedule(schedule, after, count))).fires
