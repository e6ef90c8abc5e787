"""The timing service against real SecantusDB and NATS JetStream: on-time fires, anchors, completion,
time zones, jitter, job changes, and catch-up after a pause and after a full stop.

Jobs are inserted straight into MongoDB (built by the job codec), not through the API.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import nats
import pytest

from schedsvc import names
from schedsvc.bus import NatsRunBus
from schedsvc.config import Settings
from schedsvc.domain.jobs import JobChange, JobNotice
from schedsvc.domain.models import CatchupPolicy, JobStatus, NatsTarget, RunMessage, Schedule
from schedsvc.store import job_codec
from schedsvc.store.job_codec import JobDocument
from schedsvc.testing import delete_run_streams, job_document
from schedsvc.timing import compile_schedule, from_ms, to_ms
from schedsvc.timing.catchup import CATCHUP_ALL_LIMIT, MISSED_RECORD_LIMIT
from schedsvc.timing.planning import job_seed
from schedsvc.timing.service import TimingService
from schedsvc.wiring import Adapters, timing_service

_decode = msgspec.msgpack.Decoder(RunMessage).decode


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, step: float = 0.05) -> bool:
    """Poll ``check`` until it holds or ``timeout`` passes; return its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(step)
    return await check()


def job_doc(
    schedule: dict[str, Any],
    *,
    partitions: int,
    next_run: datetime | None = None,
    status: JobStatus = JobStatus.ACTIVE,
    catchup: dict[str, Any] | None = None,
    created: datetime | None = None,
) -> JobDocument:
    """A job document as the API stores it; ``nextRun`` defaults to the first fire after creation."""
    created = created or datetime.now(UTC)
    parsed = msgspec.convert(schedule, Schedule, strict=False)  # type: ignore[arg-type,var-annotated,unused-ignore]
    if next_run is None:
        first = compile_schedule(parsed, created=created).next_after(to_ms(created))
        next_run = None if first is None else from_ms(first)
    return job_document(
        "acme",
        partitions,
        next_run=next_run,
        status=status,
        now=created,
        schedule=parsed,
        target=NatsTarget(subject="tenant.acme.ping"),
        catchup=msgspec.convert(catchup or {}, CatchupPolicy),
    )


@dataclass
class Received:
    """Run messages seen on the run subjects (core NATS: every publish, duplicates included)."""

    messages: list[tuple[RunMessage, int]] = field(default_factory=list)

    def of(self, job_id: str) -> list[RunMessage]:
        return [m for m, _ in self.messages if m.job_id == job_id]

    def arrivals(self, job_id: str) -> list[tuple[RunMessage, int]]:
        return [(m, at) for m, at in self.messages if m.job_id == job_id]

    async def wait_for(self, job_id: str, count: int, timeout: float) -> list[RunMessage]:
        async def enough() -> bool:
            return len(self.of(job_id)) >= count

        await eventually(enough, timeout, step=0.02)
        return self.of(job_id)


@dataclass
class Timing:
    settings: Settings
    db: Any
    bus: NatsRunBus
    received: Received
    service: TimingService | None = None

    async def start(self) -> TimingService:
        self.service = timing_service(await Adapters.over(self.settings, self.db, self.bus))
        await self.service.start()
        return self.service

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None

    async def insert(self, doc: JobDocument) -> str:
        await self.db[names.JOBS].insert_one(job_codec.encode(doc))
        # Announced as the job repository does: with the timing view, so timing need not read it back.
        view = job_codec.read_timing(job_codec.encode(doc))
        await self.bus.publish_job_change(JobNotice(doc.tenant, doc.id, doc.partition, view))
        return doc.id

    async def change(self, job_id: str, change: JobChange) -> None:
        """An API write as the job repository makes it, announced to timing."""
        update = job_codec.change_update(change, datetime.now(UTC))
        await self.db[names.JOBS].update_one(job_codec.of_id(job_id), update)
        stored = await self.db[names.JOBS].find_one(job_codec.of_id(job_id))
        view = job_codec.read_timing(stored)
        await self.bus.publish_job_change(JobNotice(view.tenant, job_id, view.partition, view))

    async def delete(self, job_id: str) -> None:
        partition = (await self.job(job_id)).partition
        await self.db[names.JOBS].delete_one(job_codec.of_id(job_id))
        await self.bus.publish_job_change(JobNotice("acme", job_id, partition))  # no view: timing re-reads

    async def job(self, job_id: str) -> JobDocument:
        return job_codec.decode(await self.db[names.JOBS].find_one(job_codec.of_id(job_id)))

    async def completed(self, job_id: str) -> bool:
        return (await self.job(job_id)).status == JobStatus.COMPLETED

    async def runs(self, job_id: str) -> list[dict[str, Any]]:
        return [r async for r in self.db[names.RUNS].find({"jobId": job_id}).sort("scheduledAt", 1)]

    async def stream_ids(self) -> list[str]:
        return [i async for i in self.bus.stream_message_ids()]


@pytest.fixture
async def timing(settings: Settings, mongo_db: Any, nats_url: str) -> AsyncIterator[Timing]:
    bus = await NatsRunBus.connect(settings)
    await bus.ensure_streams()
    received = Received()
    nc = await nats.connect(nats_url)

    async def on_msg(msg: Any) -> None:
        received.messages.append((_decode(msg.data), now_ms()))

    sub = await nc.subscribe(f"{bus.names.run_subject_root}.>", cb=on_msg)
    t = Timing(settings, mongo_db, bus, received)
    try:
        yield t
    finally:
        await t.stop()
        await sub.unsubscribe()
        await nc.close()
        await delete_run_streams(settings)
        await bus.close()


async def test_a_job_created_two_seconds_ahead_fires_on_time(timing: Timing) -> None:
    service = await timing.start()
    assert service.ready
    assert len(service.owned_partitions) == timing.settings.partitions
    at = datetime.now(UTC) + timedelta(seconds=2)
    doc = job_doc({"kind": "once", "at": at}, partitions=timing.settings.partitions)
    job_id = await timing.insert(doc)

    [message] = await timing.received.wait_for(job_id, 1, timeout=6)
    [(_, arrived)] = timing.received.arrivals(job_id)
    assert message.scheduled_ms == to_ms(at) == message.due_ms
    assert message.trigger == "scheduled"
    assert message.tenant == "acme"
    assert 0 <= arrived - to_ms(at) < 300, "published within 300 ms of its instant"
    # A once schedule completes after its fire.
    await eventually(lambda: timing.completed(job_id), 3)
    stored = await timing.job(job_id)
    assert stored.status == JobStatus.COMPLETED
    assert stored.next_run is None
    await asyncio.sleep(0.5)
    assert len(timing.received.of(job_id)) == 1
    assert await timing.stream_ids() == [f"{job_id}:{to_ms(at)}"]


async def test_interval_fires_stay_on_their_anchor_and_stop_at_end(timing: Timing) -> None:
    await timing.start()
    anchor = from_ms(now_ms() - 10_000 + 337)  # fires at ...x.337 s, every second
    end = datetime.now(UTC) + timedelta(seconds=3.5)
    doc = job_doc(
        {"kind": "interval", "seconds": 1, "anchor": anchor, "endAt": end}, partitions=timing.settings.partitions
    )
    job_id = await timing.insert(doc)
    messages = await timing.received.wait_for(job_id, 3, timeout=6)
    assert len(messages) >= 3
    anchor_ms = to_ms(anchor)
    assert all((m.scheduled_ms - anchor_ms) % 1000 == 0 for m in messages)
    steps = {b.scheduled_ms - a.scheduled_ms for a, b in itertools.pairwise(messages)}
    assert steps == {1000}
    for m, arrived in timing.received.arrivals(job_id):
        assert 0 <= arrived - m.due_ms < 300
    assert await eventually(lambda: timing.completed(job_id), 4)
    assert all(m.scheduled_ms <= to_ms(end) for m in timing.received.of(job_id))


async def test_cron_in_a_non_utc_zone_fires_at_the_local_instant(timing: Timing) -> None:
    await timing.start()
    zone = ZoneInfo("Asia/Kathmandu")  # UTC+05:45: a wrong zone would be off by hours
    target = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    local = target.astimezone(zone)
    expression = f"{local.second} {local.minute} {local.hour} * * *"
    doc = job_doc(
        {"kind": "cron", "expression": expression, "timezone": zone.key}, partitions=timing.settings.partitions
    )
    assert doc.next_run == target
    job_id = await timing.insert(doc)
    [message] = await timing.received.wait_for(job_id, 1, timeout=7)
    assert message.scheduled_ms == to_ms(target)
    [(_, arrived)] = timing.received.arrivals(job_id)
    assert 0 <= arrived - to_ms(target) < 300

    # The next fire is a day later, by the zone's wall clock. nextRun advances after the publish.
    async def advanced() -> bool:
        return (await timing.job(job_id)).next_run != target

    await eventually(advanced, 5)
    stored = await timing.job(job_id)
    assert stored.next_run is not None
    assert stored.next_run.astimezone(zone).time() == local.time()
    assert stored.next_run - target == timedelta(days=1)


async def test_jitter_delays_the_publication_but_not_the_nominal_instant(timing: Timing) -> None:
    await timing.start()
    at = datetime.now(UTC) + timedelta(seconds=1)
    doc = job_doc({"kind": "once", "at": at, "jitterSeconds": 3}, partitions=timing.settings.partitions)
    compiled = compile_schedule(doc.schedule)
    due = compiled.fire_instant(to_ms(at), job_seed(doc.id))
    assert to_ms(at) <= due <= to_ms(at) + 3000
    job_id = await timing.insert(doc)
    [message] = await timing.received.wait_for(job_id, 1, timeout=7)
    assert (message.scheduled_ms, message.due_ms) == (to_ms(at), due)
    [(_, arrived)] = timing.received.arrivals(job_id)
    assert 0 <= arrived - due < 300


async def test_pausing_and_deleting_stop_the_fires(timing: Timing) -> None:
    await timing.start()
    parts = timing.settings.partitions
    paused = await timing.insert(job_doc({"kind": "interval", "seconds": 1}, partitions=parts))
    deleted = await timing.insert(job_doc({"kind": "interval", "seconds": 1}, partitions=parts))
    await timing.received.wait_for(paused, 1, timeout=4)
    await timing.received.wait_for(deleted, 1, timeout=4)
    await timing.change(paused, JobChange(status=JobStatus.PAUSED))
    await timing.delete(deleted)
    await asyncio.sleep(0.5)  # a fire already in flight may still land
    counts = len(timing.received.of(paused)), len(timing.received.of(deleted))
    await asyncio.sleep(2.5)
    assert (len(timing.received.of(paused)), len(timing.received.of(deleted))) == counts


async def test_a_notice_older_than_what_timing_knows_is_ignored(timing: Timing) -> None:
    """Notices from several API replicas may arrive out of order: an older one must not undo a newer one."""
    await timing.start()
    doc = job_doc({"kind": "interval", "seconds": 1}, partitions=timing.settings.partitions)
    job_id = await timing.insert(doc)
    await timing.received.wait_for(job_id, 1, timeout=4)
    active_v1 = job_codec.read_timing(job_codec.encode(doc))
    await timing.change(job_id, JobChange(status=JobStatus.PAUSED))  # version 2, announced
    await timing.change(job_id, JobChange(name="renamed"))  # version 3, still paused
    await asyncio.sleep(0.5)  # a fire already in flight may still land
    count = len(timing.received.of(job_id))
    # The creation notice again, late: it says "active" at version 1.
    await timing.bus.publish_job_change(JobNotice(doc.tenant, job_id, doc.partition, active_v1))
    await asyncio.sleep(2.5)
    assert len(timing.received.of(job_id)) == count
    assert (await timing.job(job_id)).status == JobStatus.PAUSED


@pytest.mark.parametrize("policy", ["skip", "latest", "all"])
async def test_catchup_after_a_pause(timing: Timing, policy: str) -> None:
    await timing.start()
    doc = job_doc(
        {"kind": "interval", "seconds": 1},
        partitions=timing.settings.partitions,
        catchup={"policy": policy, "windowSeconds": 3600},
    )
    job_id = await timing.insert(doc)
    await timing.received.wait_for(job_id, 1, timeout=4)
    await timing.change(job_id, JobChange(status=JobStatus.PAUSED))
    await asyncio.sleep(0.5)
    before = len(timing.received.of(job_id))
    paused_next = (await timing.job(job_id)).next_run
    assert paused_next is not None
    await asyncio.sleep(3)
    resumed = datetime.now(UTC)
    await timing.change(job_id, JobChange(status=JobStatus.ACTIVE, resumed_at=resumed))
    await asyncio.sleep(1.5)

    during_pause = list(range(to_ms(paused_next), to_ms(resumed), 1000))
    assert len(during_pause) >= 3
    after = timing.received.of(job_id)[before:]
    caught_up = [m.scheduled_ms for m in after if m.trigger == "catchup"]
    missed = [to_ms(r["scheduledAt"]) for r in await timing.runs(job_id) if r["status"] == "missed"]
    expected_runs = {"skip": [], "latest": during_pause[-1:], "all": during_pause}[policy]
    assert caught_up == expected_runs
    assert sorted(missed) == [ms for ms in during_pause if ms not in expected_runs]
    # Regular fires resume after the pause, and resumedAt is cleared.
    scheduled = [m.scheduled_ms for m in after if m.trigger == "scheduled"]
    assert scheduled
    assert min(scheduled) >= to_ms(resumed)
    assert (await timing.job(job_id)).resumed_at is None


@pytest.mark.parametrize(
    ("policy", "runs", "missed"),
    [("skip", 0, 6), ("latest", 1, 5), ("all", 2, 4)],
)
async def test_catchup_after_a_full_stop(timing: Timing, policy: str, runs: int, missed: int) -> None:
    parts = timing.settings.partitions
    now = from_ms(now_ms())
    # Fires at -575 s, -475 s, ... -75 s while no replica ran; the next one is 25 s ahead.
    anchor = now - timedelta(seconds=575)
    stale = job_doc(
        {"kind": "interval", "seconds": 100, "anchor": anchor},
        partitions=parts,
        next_run=anchor,
        created=anchor,
        catchup={"policy": policy, "windowSeconds": 250},
    )
    # A fire 20 s overdue is within the grace period: it runs as scheduled even under "skip".
    recent_at = now - timedelta(seconds=20)
    recent = job_doc(
        {"kind": "once", "at": recent_at},
        partitions=parts,
        next_run=recent_at,
        catchup={"policy": "skip", "windowSeconds": 0},
    )
    await timing.db[names.JOBS].insert_many([job_codec.encode(stale), job_codec.encode(recent)])
    await timing.start()

    await timing.received.wait_for(recent.id, 1, timeout=4)
    [recent_message] = timing.received.of(recent.id)
    assert recent_message.trigger == "scheduled"

    async def advanced() -> bool:
        return (await timing.job(stale.id)).next_run != anchor

    await eventually(advanced, 4)

    fires = [to_ms(anchor) + k * 100_000 for k in range(6)]
    messages = timing.received.of(stale.id)
    assert [m.scheduled_ms for m in messages] == fires[len(fires) - runs :]
    assert all(m.trigger == "catchup" for m in messages)
    records = await timing.runs(stale.id)
    assert [to_ms(r["scheduledAt"]) for r in records] == fires[:missed]
    assert {(r["status"], r["tenant"]) for r in records} <= {("missed", "acme")}
    assert all(r["_id"] == f"{stale.id}:{to_ms(r['scheduledAt'])}" for r in records)
    stored = await timing.job(stale.id)
    assert stored.next_run == anchor + timedelta(seconds=600)
    assert stored.status == JobStatus.ACTIVE


async def test_a_short_misfire_grace_records_an_outage_s_fires_as_missed(timing: Timing) -> None:
    """A 16 s outage of an every-second ``skip`` job with a 2 s misfire grace: the fires older than 2 s
    are recorded as missed instead of being delivered all at once (issue 14); the default grace would
    deliver all 16."""
    started = now_ms()
    anchor = from_ms(started - 16_000)
    doc = job_doc(
        {"kind": "interval", "seconds": 1, "anchor": anchor},
        partitions=timing.settings.partitions,
        next_run=anchor,
        created=anchor,
        catchup={"policy": "skip", "windowSeconds": 3600, "misfireGraceSeconds": 2},
    )
    assert doc.catchup.misfire_grace_seconds == 2
    await timing.db[names.JOBS].insert_one(job_codec.encode(doc))
    assert (await timing.job(doc.id)).catchup.misfire_grace_seconds == 2  # stored through the codec
    await timing.start()

    async def advanced() -> bool:
        return (await timing.job(doc.id)).next_run > from_ms(started)  # type: ignore[operator]

    assert await eventually(advanced, 10)
    planned_at = now_ms()
    overdue = [m.scheduled_ms for m in timing.received.of(doc.id) if m.scheduled_ms <= started]
    assert overdue, "the fires within the grace still run"
    assert min(overdue) >= started - 2000 - 1000  # nothing older than the grace (plus the planning delay)
    missed = [to_ms(r["scheduledAt"]) for r in await timing.runs(doc.id)]
    assert {r["status"] for r in await timing.runs(doc.id)} == {"missed"}
    assert len(missed) >= 12
    assert missed[0] == to_ms(anchor)
    assert max(missed) < min(overdue) and max(missed) < planned_at - 2000


async def test_stop_hands_partitions_over_to_another_replica_at_once(timing: Timing) -> None:
    parts = timing.settings.partitions
    first = await timing.start()
    job_id = await timing.insert(job_doc({"kind": "interval", "seconds": 1}, partitions=parts))
    await timing.received.wait_for(job_id, 2, timeout=5)
    await timing.stop()
    stopped_at = now_ms()
    assert first.owned_partitions == {}
    second = timing_service(await Adapters.over(timing.settings, timing.db, timing.bus))
    await second.start()
    try:
        assert len(second.owned_partitions) == parts  # no wait for lease expiry
        count = len(timing.received.of(job_id))
        await timing.received.wait_for(job_id, count + 2, timeout=4)
        gap = [m.scheduled_ms for m in timing.received.of(job_id) if m.scheduled_ms > stopped_at - 1000]
        assert gap == list(range(gap[0], gap[0] + 1000 * len(gap), 1000)), "no fire lost in the hand-off"
    finally:
        await second.stop()
    ids = await timing.stream_ids()
    assert len(ids) == len(set(ids))


async def start_after_outage(timing: Timing, outage_seconds: int, window_seconds: int) -> tuple[str, int]:
    """A job firing every second, last advanced ``outage_seconds`` ago, catching up ``all`` fires of a window
    of ``window_seconds``: starts timing and waits until it has advanced the job past now. Returns the job's
    id and when timing started (ms)."""
    anchor = from_ms(now_ms() - outage_seconds * 1000)
    doc = job_doc(
        {"kind": "interval", "seconds": 1, "anchor": anchor},
        partitions=timing.settings.partitions,
        next_run=anchor,
        created=anchor,
        catchup={"policy": "all", "windowSeconds": window_seconds},
    )
    await timing.db[names.JOBS].insert_one(job_codec.encode(doc))
    started = now_ms()
    await timing.start()

    async def advanced() -> bool:
        return (await timing.job(doc.id)).next_run > from_ms(started)  # type: ignore[operator]

    assert await eventually(advanced, 10)
    return doc.id, started


async def test_a_very_long_outage_is_caught_up_in_bounded_work(timing: Timing) -> None:
    # Six hours of a job firing every second: 21,600 overdue fires.
    job_id, started = await start_after_outage(timing, outage_seconds=6 * 3600, window_seconds=3600)
    messages = timing.received.of(job_id)
    # The newest 1000 late fires of the window run as catch-up, the fires within the grace period as
    # scheduled; of the other ~20,000 only the newest 100 are recorded as missed.
    caught_up = [m.scheduled_ms for m in messages if m.trigger == "catchup"]
    scheduled = [m.scheduled_ms for m in messages if m.trigger == "scheduled"]
    assert len(caught_up) == CATCHUP_ALL_LIMIT
    assert caught_up == sorted(set(caught_up))
    assert 50 <= len(scheduled) <= 62
    assert min(scheduled) >= started - 61_000
    assert max(caught_up) < min(scheduled)
    records = await timing.runs(job_id)
    assert len(records) == MISSED_RECORD_LIMIT
    assert {r["status"] for r in records} == {"missed"}
    assert to_ms(records[-1]["scheduledAt"]) < min(caught_up)


async def test_an_outage_longer_than_a_huge_window_skips_to_the_grace_period(timing: Timing) -> None:
    # Every second for 31 days with a 30-day window: millions of overdue fires, enumerated in bounded work.
    job_id, _ = await start_after_outage(timing, outage_seconds=31 * 86_400, window_seconds=30 * 86_400)
    messages = timing.received.of(job_id)
    assert {m.trigger for m in messages} == {"scheduled"}
    assert 50 <= len(messages) <= 62
    assert await timing.runs(job_id) == []  # skipped wholesale: counted in a metric, not recorded
