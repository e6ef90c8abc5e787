"""The ports the API depends on; the MongoDB adapters beside this module implement them.

Runtime-checkable, because Litestar validates injected dependencies against their annotations.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from schedsvc.domain import Job, JobCreate, Run


class JobPageLike(Protocol):
    items: list[Job]
    next_cursor: str | None


@runtime_checkable
class JobStore(Protocol):
    """Jobs of one tenant at a time; another tenant's job is indistinguishable from a missing one."""

    async def create(
        self,
        tenant: str,
        body: JobCreate,
        next_run: datetime | None,
        *,
        now: datetime,
        idempotency_key: str | None = None,
        request_hash: str = "",
    ) -> tuple[Job, bool]: ...

    async def get(self, tenant: str, job_id: str) -> Job: ...

    async def list(
        self,
        tenant: str,
        *,
        limit: int,
        cursor: str | None = None,
        status: Any = None,
        tag: str | None = None,
        name_prefix: str | None = None,
    ) -> JobPageLike: ...

    async def update(
        self, tenant: str, job_id: str, changes: dict[str, Any], expected_version: int | None, *, now: datetime
    ) -> Job: ...

    async def delete(self, tenant: str, job_id: str, expected_version: int | None) -> int: ...


@runtime_checkable
class RunHistory(Protocol):
    async def list_for_job(
        self, tenant: str, job_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Run], str | None]: ...
