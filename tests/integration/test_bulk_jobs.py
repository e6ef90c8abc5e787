"""Bulk actions (``POST /jobs/bulk/{pause,resume,delete}``) and the metadata filter of ``GET /jobs``, over
real HTTP against ``schedsvc serve`` (every module, Redis response cache), SecantusDB and NATS.

Each test uses names, tags and metadata of its own, so they share the module's service.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import httpx
import nats
import pytest
from bson import ObjectId
from nats.aio.msg import Msg
from tests.conftest import DEV_KEY
from tests.support import servers

from schedsvc import names
from schedsvc.bus import NatsRunBus
from schedsvc.client import (
    AsyncClient,
    Client,
    IntervalSchedule,
    JobCreate,
    JobSelector,
    JobStatus,
    NatsTarget,
    NotFoundError,
)
from schedsvc.client.cli import EXIT_USAGE
from schedsvc.config import ROLES, Settings
from schedsvc.domain.jobs import JobNotice
from schedsvc.domain.rules import partition_of
from schedsvc.domain.wire import MAX_BULK_JOBS
from schedsvc.store import connect, database, job_codec

T = TypeVar("T")
SERVICE_SETTINGS = {"roles": ROLES, "partitions": 8, "horizon_seconds": 5}  # every module: bulk changes reach timing
SERVICE_USES_REDIS = True  # and the response cache


@dataclass
class Service:
    url: str
    settings: Settings
    other_key: str
    """API key of a second tenant (its jobs must never be selected)."""


@pytest.fixture(scope="module")
def service(api_service: servers.ServerProcess, api_service_settings: Settings, other_tenant_key: str) -> Service:
    return Service(api_service.url, api_service_settings, other_tenant_key)


@pytest.fixture
async def client(service: Service) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(service.url, DEV_KEY) as c:
        yield c


def new_job(name: str, subject: str = "tenant.dev.bulk", **overrides: Any) -> JobCreate:
    fields: dict[str, Any] = {
        "name": name,
        "schedule": IntervalSchedule(seconds=3600),
        "target": NatsTarget(subject=subject),
    }
    fields.update(overrides)
    return JobCreate(**fields)


async def statuses(client: AsyncClient, tag: str) -> dict[str, JobStatus]:
    return {job.name: job.status async for job in client.iter_jobs(tag=tag)}


async def test_pause_resume_delete_by_tag_count_what_matched_and_changed_and_repeat_harmlessly(
    client: AsyncClient, unique: str
) -> None:
    tag = f"t{uuid.uuid4().hex[:8]}"
    for i in range(4):
        await client.create_job(new_job(f"{unique}-{i}", tags=[tag]))
    await client.create_job(new_job(f"{unique}-untagged"))
    already = await client.create_job(new_job(f"{unique}-paused", tags=[tag], paused=True))

    paused = await client.pause_jobs(JobSelector(tag=tag))
    assert (paused.matched, paused.changed, paused.more) == (5, 4, False)
    assert set((await statuses(client, tag)).values()) == {JobStatus.PAUSED}
    again = await client.pause_jobs(JobSelector(tag=tag))
    assert (again.matched, again.changed, again.more) == (5, 0, False)  # idempotent
    assert (await client.get_job(already.id)).version == already.version  # untouched: it was paused already

    resumed = await client.resume_jobs(JobSelector(tag=tag, name_prefix=f"{unique}-"))
    assert (resumed.matched, resumed.changed) == (5, 5)
    assert set((await statuses(client, tag)).values()) == {JobStatus.ACTIVE}
    assert None not in [job.next_run async for job in client.iter_jobs(tag=tag)]

    deleted = await client.delete_jobs(JobSelector(tag=tag))
    assert (deleted.matched, deleted.changed, deleted.more) == (5, 5, False)
    assert await statuses(client, tag) == {}
    assert (await client.delete_jobs(JobSelector(tag=tag))).changed == 0
    assert [j.name async for j in client.iter_jobs(name=f"{unique}-")] == [f"{unique}-untagged"]


async def test_a_selector_takes_every_condition_status_name_prefix_and_metadata(
    client: AsyncClient, unique: str
) -> None:
    await client.create_job(new_job(f"{unique}-a-1", metadata={"team": "a", "env": "prod"}))
    await client.create_job(new_job(f"{unique}-a-2", metadata={"team": "a", "env": "dev"}))
    await client.create_job(new_job(f"{unique}-b-1", metadata={"team": "b", "env": "prod"}))
    await client.create_job(new_job(f"{unique}-a-3", metadata={"team": "a", "env": "prod"}, paused=True))

    result = await client.pause_jobs(JobSelector(name_prefix=f"{unique}-", metadata={"team": "a", "env": "prod"}))
    assert (result.matched, result.changed) == (2, 1)
    by_name = {j.name: j.status async for j in client.iter_jobs(name=f"{unique}-")}
    assert by_name == {
        f"{unique}-a-1": JobStatus.PAUSED,
        f"{unique}-a-2": JobStatus.ACTIVE,
        f"{unique}-b-1": JobStatus.ACTIVE,
        f"{unique}-a-3": JobStatus.PAUSED,
    }
    # A status the action does not apply to selects nothing: "pause the paused ones" changes none.
    none = await client.pause_jobs(JobSelector(name_prefix=f"{unique}-", status=JobStatus.PAUSED))
    assert (none.matched, none.changed, none.more) == (2, 0, False)
    gone = await client.delete_jobs(JobSelector(name_prefix=f"{unique}-", status=JobStatus.PAUSED))
    assert (gone.matched, gone.changed) == (2, 2)
    assert sorted([j.name async for j in client.iter_jobs(name=f"{unique}-")]) == [f"{unique}-a-2", f"{unique}-b-1"]


async def test_the_limit_bounds_each_call_and_more_tells_the_caller_to_repeat(client: AsyncClient, unique: str) -> None:
    tag = f"t{uuid.uuid4().hex[:8]}"
    for i in range(5):
        await client.create_job(new_job(f"{unique}-{i}", tags=[tag]))
    answers = [await client.pause_jobs(JobSelector(tag=tag), limit=2) for _ in range(4)]
    assert [(a.changed, a.more) for a in answers] == [(2, True), (2, True), (1, False), (0, False)]
    assert {a.matched for a in answers} == {5}
    assert set((await statuses(client, tag)).values()) == {JobStatus.PAUSED}
    deleted = [await client.delete_jobs(JobSelector(tag=tag), limit=3) for _ in range(2)]
    assert [(d.changed, d.more) for d in deleted] == [(3, True), (2, False)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"selector": {}}, "selector"),
        ({"selector": {"tag": "x"}, "limit": 0}, "limit"),
        ({"selector": {"tag": "x"}, "limit": 1001}, "limit"),
        ({"selector": {"tag": "bad tag"}}, "selector.tag"),
        ({"selector": {"status": "sleeping"}}, "selector.status"),
        ({"selector": {"tag": "x", "everything": True}}, "selector.everything"),
        ({}, "selector"),
    ],
)
async def test_an_empty_selector_or_a_limit_out_of_range_is_422_naming_the_field(
    service: Service, body: dict[str, Any], field: str
) -> None:
    async with httpx.AsyncClient(base_url=service.url, headers={"Authorization": f"Bearer {DEV_KEY}"}) as http:
        for action in ("pause", "resume", "delete"):
            r = await http.post(f"/jobs/bulk/{action}", json=body)
            assert r.status_code == 422, (action, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert field in [e["field"] for e in r.json()["errors"]], r.text


async def test_a_selector_never_touches_another_tenants_jobs(service: Service, unique: str) -> None:
    tag = f"t{uuid.uuid4().hex[:8]}"
    async with AsyncClient(service.url, DEV_KEY) as dev, AsyncClient(service.url, service.other_key) as other:
        mine = await dev.create_job(new_job(f"{unique}-mine", tags=[tag], metadata={"k": "v"}))
        theirs = await other.create_job(
            new_job(f"{unique}-theirs", subject="tenant.other.bulk", tags=[tag], metadata={"k": "v"})
        )
        for act in (dev.pause_jobs, dev.resume_jobs):
            assert (await act(JobSelector(tag=tag))).matched == 1
        assert (await dev.pause_jobs(JobSelector(metadata={"k": "v"}, name_prefix=unique))).changed == 1
        assert (await other.get_job(theirs.id)).status == JobStatus.ACTIVE
        assert [j.id async for j in other.iter_jobs(metadata={"k": "v"})] == [theirs.id]
        assert (await dev.delete_jobs(JobSelector(tag=tag))).changed == 1
        assert (await other.get_job(theirs.id)).version == theirs.version  # never written
        result = await other.delete_jobs(JobSelector(tag=tag))
        assert (result.matched, result.changed) == (1, 1)
        with pytest.raises(NotFoundError):
            await dev.get_job(mine.id)


async def test_jobs_list_by_metadata_pairs_any_key_and_refuses_a_pair_no_job_can_hold(
    service: Service, client: AsyncClient, unique: str
) -> None:
    odd = {"a.b": "dotted", "$x": "dollar", "url": "https://x.example/y:z"}
    one = await client.create_job(new_job(f"{unique}-1", metadata={"team": "a", **odd}))
    two = await client.create_job(new_job(f"{unique}-2", metadata={"team": "a"}))
    three = await client.create_job(new_job(f"{unique}-3", metadata={"team": "b"}))

    async def ids(**metadata: str) -> list[str]:
        return [j.id async for j in client.iter_jobs(name=unique, metadata=metadata, page_size=1)]

    assert await ids(team="a") == [one.id, two.id]
    for key, value in odd.items():
        assert await ids(team="a", **{key: value}) == [one.id], key
    assert await ids(team="a", url="https://x.example/y") == []  # the whole value, not a prefix
    assert await ids(team="c") == []
    with Client(service.url, DEV_KEY) as sync:  # the blocking client speaks the same query
        assert [j.id for j in sync.list_jobs(metadata={"team": "b"}, name=unique).items] == [three.id]

    async with httpx.AsyncClient(base_url=service.url, headers={"Authorization": f"Bearer {DEV_KEY}"}) as http:
        r = await http.get("/jobs", params=[("metadata", "team:a"), ("metadata", "a.b:dotted")])
        assert [j["id"] for j in r.json()["items"]] == [one.id]
        for bad in ("team", ":a", "team:a&metadata=team:b", "a%00b:x", "%24a%00:x", "k" * 65 + ":x", "k:" + "v" * 1025):
            r = await http.get(f"/jobs?metadata={bad}")  # a key or value no job can hold: 400, never a 500
            assert r.status_code == 400, (bad, r.text)
            assert [e["field"] for e in r.json()["errors"]] == ["metadata"], r.text
        for odd_but_fine in ("team:a%00", "%24:x", "a..b:x", "%24%24:x", "k" * 64 + ":" + "v" * 1024):
            r = await http.get(f"/jobs?metadata={odd_but_fine}&name={unique}")
            assert (r.status_code, r.json()["items"]) == (200, []), (odd_but_fine, r.text)


class Collected(Generic[T]):
    """What arrived from NATS; a test waits for a count without polling."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._arrived = asyncio.Event()

    async def add(self, item: T) -> None:
        self.items.append(item)
        self._arrived.set()

    async def at_least(self, count: int, what: str, timeout: float = 20.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while len(self.items) < count:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting until {what}") from None


async def test_bulk_changes_reach_timing_and_the_cache_as_single_changes_do(service: Service, unique: str) -> None:
    """A paused job stops firing and a resumed one fires again (timing learns of each change at once), and
    a cached ``GET /jobs`` never hides the change (the response cache version is bumped)."""
    tag = f"t{uuid.uuid4().hex[:8]}"
    subject = f"tenant.dev.bulk.{tag}"
    every_second = IntervalSchedule(seconds=1)
    fires: Collected[bytes] = Collected()
    notices: Collected[JobNotice] = Collected()
    nc = await nats.connect(service.settings.nats_url)
    bus = await NatsRunBus.connect(service.settings)
    try:

        async def fired(msg: Msg) -> None:
            await fires.add(msg.data)

        await nc.subscribe(subject, cb=fired)
        stop_following = await bus.job_changes(notices.add)
        async with AsyncClient(service.url, DEV_KEY) as client:
            jobs = [
                await client.create_job(new_job(f"{unique}-{i}", subject, tags=[tag], schedule=every_second))
                for i in range(3)
            ]
            await fires.at_least(3, "the jobs fire")
            listed = await client.list_jobs(tag=tag)  # cached from here on (Redis), as is one job's read
            assert {j.status for j in listed.items} == {JobStatus.ACTIVE}
            assert (await client.get_job(jobs[0].id)).status == JobStatus.ACTIVE
            notices.items.clear()

            assert (await client.pause_jobs(JobSelector(tag=tag))).changed == 3
            await notices.at_least(3, "a change notice per paused job")
            assert {n.job_id for n in notices.items} == {j.id for j in jobs}
            assert all(n.timing is not None and n.timing.status == JobStatus.PAUSED for n in notices.items)
            assert {j.status for j in (await client.list_jobs(tag=tag)).items} == {JobStatus.PAUSED}
            assert (await client.get_job(jobs[0].id)).status == JobStatus.PAUSED
            paused_at = datetime.now(UTC)
            await asyncio.sleep(4)
            # Judged by when fires were scheduled, not when they arrived: a fire published just before the
            # pause may still be delivered after it on a busy machine. The notice takes milliseconds.
            later = await client.list_tenant_runs(scheduled_from=paused_at + timedelta(seconds=1), limit=500)
            assert [r for r in later.items if r.job_id in {j.id for j in jobs}] == [], "paused jobs kept firing"

            arrived = len(fires.items)
            assert (await client.resume_jobs(JobSelector(tag=tag))).changed == 3
            await fires.at_least(arrived + 3, "the resumed jobs fire again")
            assert (await client.delete_jobs(JobSelector(tag=tag))).changed == 3
            assert (await client.list_jobs(tag=tag)).items == []
        await stop_following()
    finally:
        await bus.close()
        await nc.close()


def cli(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDSVC_")}
    environ |= {"SCHEDSVC_URL": service.url, "SCHEDSVC_API_KEY": DEV_KEY}
    return subprocess.run(
        [sys.executable, "-m", "schedsvc.cli", "jobs", *args], env=environ, capture_output=True, text=True, timeout=60
    )


async def test_the_cli_acts_on_a_selector_and_refuses_none(service: Service, client: AsyncClient, unique: str) -> None:
    for i in range(2):
        await client.create_job(new_job(f"{unique}-{i}", metadata={"owner": unique}))
    paused = await asyncio.to_thread(cli, service, "pause", "--meta", f"owner={unique}", "--output", "json")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout) == {"matched": 2, "changed": 2, "more": False}
    listed = await asyncio.to_thread(cli, service, "ls", "--meta", f"owner={unique}", "--status", "paused")
    assert listed.stdout.count(unique) == 2, listed.stdout
    removed = await asyncio.to_thread(cli, service, "rm", "--name-prefix", f"{unique}-", "--limit", "1")
    assert removed.stdout.strip() == "matched 2, changed 1 (more match: run it again)", removed.stderr
    for args in (("pause",), ("rm", "some-id", "--tag", "x")):
        refused = await asyncio.to_thread(cli, service, *args)
        assert refused.returncode == EXIT_USAGE and refused.stderr.startswith("error: selector:"), refused.stderr


async def test_a_metadata_key_with_a_colon_is_refused_by_the_list_filter_and_matched_by_a_selector(
    service: Service, client: AsyncClient, unique: str
) -> None:
    """``GET /jobs?metadata=a:b:x`` means the key ``a``: the clients refuse to send it for the key ``a:b``."""
    job = await client.create_job(new_job(f"{unique}-colon", metadata={"a:b": "x"}))
    with pytest.raises(ValueError, match="'a:b'"):
        await client.list_jobs(metadata={"a:b": "x"}, name=unique)
    with Client(service.url, DEV_KEY) as sync, pytest.raises(ValueError, match="'a:b'"):
        sync.list_jobs(metadata={"a:b": "x"})
    listed = await asyncio.to_thread(cli, service, "ls", "--meta", "a:b=x")
    assert listed.returncode == EXIT_USAGE and listed.stderr.startswith("error: --meta: "), listed.stderr
    paused = await asyncio.to_thread(cli, service, "pause", "--meta", "a:b=x", "--name-prefix", unique)
    assert paused.stdout.strip() == "matched 1, changed 1", paused.stderr  # the JSON selector says it as it is
    assert (await client.get_job(job.id)).status == JobStatus.PAUSED


async def test_one_call_changes_at_most_a_thousand_jobs_and_says_more_remain(
    service: Service, client: AsyncClient, unique: str
) -> None:
    """1,001 matching jobs (written straight to the database through the job codec, for speed): the first
    call pauses 1,000 and says ``more``; the second pauses the last one."""
    settings = service.settings
    now = datetime.now(UTC)
    docs = []
    for i in range(MAX_BULK_JOBS + 1):
        job_id = str(ObjectId())
        document = job_codec.new_document(
            job_id,
            "dev",
            new_job(f"{unique}-{i:04d}", tags=[unique]),
            status=JobStatus.ACTIVE,
            next_run=now + timedelta(hours=1),
            partition=partition_of(job_id, settings.partitions),
            now=now,
        )
        docs.append(job_codec.encode(document))
    mongo = connect(settings)
    try:
        await database(mongo, settings)[names.JOBS].insert_many(docs)
    finally:
        await mongo.close()
    started = time.monotonic()
    first = await client.pause_jobs(JobSelector(tag=unique))
    took = time.monotonic() - started
    assert (first.matched, first.changed, first.more) == (MAX_BULK_JOBS + 1, MAX_BULK_JOBS, True)
    second = await client.pause_jobs(JobSelector(tag=unique))
    assert (second.changed, second.more) == (1, False)
    assert (await client.delete_jobs(JobSelector(tag=unique))).changed == MAX_BULK_JOBS
    assert took < 30, f"pausing 1,000 jobs took {took:.1f}s"
