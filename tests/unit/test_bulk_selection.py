"""What a bulk action selects and counts, and that a failure part way is raised as itself (a 503 for an
outage, not an exception group answered 500). The repository here is an in-memory list of jobs; the real
one is covered over HTTP in tests/integration/test_bulk_jobs.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schedsvc.domain.errors import StoreUnavailableError, VersionConflictError
from schedsvc.domain.jobs import JobPage, JobStateError
from schedsvc.domain.models import IntervalSchedule, Job, JobCreate, JobStatus, NatsTarget
from schedsvc.domain.wire import MAX_COUNTED_MATCHES, BulkJobAction, JobSelector
from schedsvc.job_service.bulk import act_on_matching
from schedsvc.store import job_codec

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def job(n: int, status: JobStatus, tags: list[str]) -> Job:
    body = JobCreate(
        name=f"job-{n}", schedule=IntervalSchedule(seconds=60), target=NatsTarget(subject="t.x"), tags=tags
    )
    document = job_codec.new_document(f"{n:024x}", "t", body, status=status, next_run=NOW, partition=0, now=NOW)
    return job_codec.read_job(job_codec.encode(document))


class Jobs:
    """The two reads a bulk action makes, over a list (the selector's status and tag)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs

    def _matching(self, selector: JobSelector) -> list[Job]:
        return [j for j in self.jobs if selector.status in (None, j.status) and selector.tag in (None, *j.tags)]

    async def count(self, tenant: str, selector: JobSelector, *, limit: int) -> int:
        return min(len(self._matching(selector)), limit)

    async def list(self, tenant: str, selector: JobSelector, *, limit: int, cursor: str | None = None) -> JobPage:
        found = self._matching(selector)
        return JobPage(found[:limit], "next" if len(found) > limit else None)


STORED = [job(1, JobStatus.ACTIVE, ["a"]), job(2, JobStatus.PAUSED, ["a"]), job(3, JobStatus.ACTIVE, ["a"])]


async def test_only_jobs_the_action_applies_to_are_changed_and_every_match_is_counted() -> None:
    changed: list[str] = []

    async def pause(j: Job) -> None:
        changed.append(j.name)

    action = BulkJobAction(selector=JobSelector(tag="a"))
    result = await act_on_matching(Jobs(STORED), "t", action, JobStatus.ACTIVE, pause)
    assert (result.matched, result.changed, result.more) == (3, 2, False)
    assert changed == ["job-1", "job-3"]


async def test_a_job_changed_meanwhile_is_not_counted_and_the_limit_says_more() -> None:
    tried: list[str] = []

    async def pause(j: Job) -> None:
        tried.append(j.name)
        if j.name == "job-1":
            raise VersionConflictError(j.id)  # changed meanwhile
        if j.name == "job-3":
            raise JobStateError(j)  # paused by someone else meanwhile

    every = BulkJobAction(selector=JobSelector(tag="a"))
    result = await act_on_matching(Jobs(STORED), "t", every, JobStatus.ACTIVE, pause)
    assert (result.matched, result.changed, result.more) == (3, 0, False)
    assert sorted(tried) == ["job-1", "job-3"]  # both refusals were reached, neither counted

    one = BulkJobAction(selector=JobSelector(tag="a"), limit=1)
    result = await act_on_matching(Jobs(STORED), "t", one, JobStatus.ACTIVE, pause)
    assert (result.matched, result.changed, result.more) == (3, 0, True)


async def test_matches_are_counted_up_to_a_bound_not_over_every_job_of_the_tenant() -> None:
    many = [job(n, JobStatus.PAUSED, ["a"]) for n in range(MAX_COUNTED_MATCHES + 5)]

    async def pause(j: Job) -> None:
        raise AssertionError("every match is paused already")

    action = BulkJobAction(selector=JobSelector(tag="a"))
    result = await act_on_matching(Jobs(many), "t", action, JobStatus.ACTIVE, pause)
    assert (result.matched, result.changed, result.more) == (MAX_COUNTED_MATCHES, 0, False)


async def test_a_status_the_action_does_not_apply_to_selects_nothing() -> None:
    async def resume(j: Job) -> None:
        raise AssertionError("nothing is selected")

    action = BulkJobAction(selector=JobSelector(status=JobStatus.ACTIVE))
    result = await act_on_matching(Jobs(STORED), "t", action, JobStatus.PAUSED, resume)
    assert (result.matched, result.changed, result.more) == (2, 0, False)


async def test_an_outage_part_way_is_raised_as_itself() -> None:
    async def delete(j: Job) -> None:
        if j.name == "job-2":
            raise StoreUnavailableError("the database went away")

    action = BulkJobAction(selector=JobSelector(tag="a"))
    with pytest.raises(StoreUnavailableError):
        await act_on_matching(Jobs(STORED), "t", action, None, delete)


def test_an_empty_selector_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"^selector: "):
        BulkJobAction(selector=JobSelector())
