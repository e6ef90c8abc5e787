"""``POST /jobs/{id}/backfill`` through the HTTP API, with the execution module, against a real SecantusDB
process, NATS JetStream and a webhook receiver on 127.0.0.1: bounds and field-naming problems, runs
recorded with trigger ``backfill``, idempotence of a repeated backfill, missed fires run, overlap honoured.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.conftest import Api, running_api
from tests.support.waiting import wait_until

from schedsvc import names
from schedsvc.bus import NatsRunBus
from schedsvc.config import Settings
from schedsvc.domain.models import run_id
from schedsvc.domain.wire import MAX_BACKFILL_FIRES
from schedsvc.testing import Reply, WebhookReceiver
from schedsvc.timing import to_ms


@dataclasses.dataclass
class Service(Api):
    """The API app and the webhook receiver its jobs call."""

    receiver: WebhookReceiver

    async def create(self, route: str, **fields: Any) -> dict[str, Any]:
        body = {
            "name": f"backfill-{route.strip('/')}",
            "schedule": {"kind": "interval", "seconds": 60},
            "target": {"kind": "http", "url": self.receiver.url(route)},
            "retry": {"maxAttempts": 1},
            **fields,
        }
        r = await self.client.post("/jobs", json=body, headers=self.headers)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    async def backfill(self, job_id: str, first: datetime | str, last: datetime | str, **kw: Any) -> Any:
        body = {"from": _iso(first), "to": _iso(last)}
        return await self.client.post(f"/jobs/{job_id}/backfill", json=body, headers=kw.get("headers", self.headers))

    async def runs(self, job_id: str) -> list[dict[str, Any]]:
        return [r async for r in self.db[names.RUNS].find({"jobId": job_id}).sort("scheduledAt", 1)]


def _iso(value: datetime | str) -> str:
    return value if isinstance(value, str) else value.isoformat().replace("+00:00", "Z")


@contextlib.asynccontextmanager
async def serving(settings: Settings, roles: frozenset[str]) -> AsyncIterator[Service]:
    async with WebhookReceiver() as receiver, running_api(settings, roles, run_ack_wait_seconds=2.0) as api:
        yield Service(**vars(api), receiver=receiver)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[Service]:
    """The API with the execution module: backfilled fires run."""
    async with serving(settings, frozenset({"api", "execution"})) as service:
        yield service


@pytest.fixture
async def api_only(settings: Settings) -> AsyncIterator[Service]:
    """The API alone: backfilled fires stay queued in the run stream."""
    async with serving(settings, frozenset({"api"})) as service:
        yield service


async def test_a_backfill_refuses_bad_ranges_naming_the_field(api_only: Service) -> None:
    service = api_only
    job = await service.create("/refused")
    anchor = datetime.fromisoformat(job["schedule"]["anchor"])
    cases = [
        ({"from": _iso(anchor), "to": _iso(anchor - timedelta(minutes=1))}, "to"),
        ({"from": "2026-11-01T00:00:00", "to": _iso(anchor)}, "from"),  # naive: no UTC offset
        ({"from": _iso(anchor - timedelta(hours=1)), "to": "2026-11-01T00:00:00"}, "to"),
        ({"from": _iso(anchor), "to": _iso(datetime.now(UTC) + timedelta(hours=1))}, "to"),  # the future
        ({"from": _iso(anchor - timedelta(days=1)), "to": _iso(anchor)}, "to"),  # 1,441 fires
        ({"to": _iso(anchor)}, "from"),
        ({"from": "0001-01-01T00:00:00+01:00", "to": _iso(anchor)}, "from"),  # before year 1 in UTC
    ]
    for body, field in cases:
        r = await service.client.post(f"/jobs/{job['id']}/backfill", json=body, headers=service.headers)
        assert r.status_code == 422, (body, r.text)
        assert [e["field"] for e in r.json()["errors"]] == [field], (body, r.json())
    # The earliest instants a datetime holds are a range like any other.
    r = await service.backfill(job["id"], "0001-01-01T00:00:00Z", "0001-01-01T00:02:30Z")
    assert r.status_code == 202, r.text
    early = r.json()["fires"]
    assert early in (2, 3)
    # Another tenant's job answers as a missing one.
    first = anchor - timedelta(minutes=MAX_BACKFILL_FIRES)
    r = await service.backfill(job["id"], first, anchor, headers=service.other)
    assert r.status_code == 404
    assert (await service.backfill("nope", first, anchor)).status_code == 404
    assert await service.runs(job["id"]) == []
    # Exactly the bound is accepted: 1,000 fires a minute apart.
    r = await service.backfill(job["id"], first, anchor - timedelta(minutes=1))
    assert r.status_code == 202, r.text
    assert r.json() == {"jobId": job["id"], "fires": MAX_BACKFILL_FIRES, "queued": MAX_BACKFILL_FIRES}
    bus = await NatsRunBus.connect(service.settings)
    try:
        ids = [i async for i in bus.stream_message_ids()]
    finally:
        await bus.close()
    assert len(ids) == MAX_BACKFILL_FIRES + early


async def test_a_backfill_runs_each_fire_once_and_reruns_nothing(service: Service) -> None:
    job = await service.create("/history")
    anchor = datetime.fromisoformat(job["schedule"]["anchor"])
    fires = [anchor - timedelta(minutes=m) for m in (5, 4, 3, 2, 1)]
    r = await service.backfill(job["id"], fires[0], fires[-1])
    assert r.status_code == 202, r.text
    assert r.json() == {"jobId": job["id"], "fires": 5, "queued": 5}
    expected = {run_id(job["id"], to_ms(f)) for f in fires}

    async def all_succeeded() -> list[dict[str, Any]] | None:
        runs = await service.runs(job["id"])
        return runs if len(runs) == 5 and all(r["status"] == "succeeded" for r in runs) else None

    runs = await wait_until(all_succeeded)
    assert {r["_id"] for r in runs} == expected
    assert {r["trigger"] for r in runs} == {"backfill"}
    calls = service.receiver.calls_to("/history")
    assert sorted(c.idempotency_key for c in calls) == sorted(expected)

    # The same range again (and an overlapping one): nothing queued, nothing called twice.
    r = await service.backfill(job["id"], fires[0], fires[-1])
    assert r.json() == {"jobId": job["id"], "fires": 5, "queued": 0}
    r = await service.backfill(job["id"], fires[2], fires[-1] + timedelta(seconds=30))
    assert r.json() == {"jobId": job["id"], "fires": 3, "queued": 0}
    await asyncio.sleep(1.0)
    assert len(service.receiver.calls_to("/history")) == 5

    # A fire recorded as missed (as the timing module records it) is what a backfill is for: it runs.
    missed_at = anchor - timedelta(minutes=6)
    missed_id = run_id(job["id"], to_ms(missed_at))
    await service.db[names.RUNS].insert_one(
        {
            "_id": missed_id,
            "jobId": job["id"],
            "tenant": "dev",
            "scheduledAt": missed_at,
            "trigger": "scheduled",
            "status": "missed",
            "attempts": 0,
            "finishedAt": datetime.now(UTC),
            "error": "missed: no replica ran the job's partition or the job was paused",
        }
    )
    r = await service.backfill(job["id"], missed_at, fires[-1])
    assert r.json() == {"jobId": job["id"], "fires": 6, "queued": 1}

    async def missed_ran() -> dict[str, Any] | None:
        run = await service.db[names.RUNS].find_one({"_id": missed_id})
        return run if run["status"] == "succeeded" else None

    ran = await wait_until(missed_ran)
    assert ran["trigger"] == "backfill" and ran["attempts"] == 1
    r = await service.client.get("/runs", params={"trigger": "backfill"}, headers=service.headers)
    assert len(r.json()["items"]) == 6
    # The stream holds each fire once (message id = run id).
    bus = await NatsRunBus.connect(service.settings)
    try:
        ids = [i async for i in bus.stream_message_ids()]
    finally:
        await bus.close()
    assert sorted(ids) == sorted(expected | {missed_id})


@pytest.mark.parametrize(
    ("overlap", "expected"),
    [("skip", ["skipped", "skipped", "succeeded"]), ("bufferOne", ["skipped", "succeeded", "succeeded"])],
)
async def test_a_backfill_honours_the_overlap_policy(service: Service, overlap: str, expected: list[str]) -> None:
    """A backfill's fires arrive together: under ``skip`` one calls the target and the rest are skipped;
    under ``bufferOne`` one more waits and runs after it. Never two calls at once."""
    route = f"/one-at-a-time-{overlap}"
    service.receiver.routes[route] = lambda c, n: Reply(delay=1.0)
    job = await service.create(route, overlap=overlap)
    anchor = datetime.fromisoformat(job["schedule"]["anchor"])
    r = await service.backfill(job["id"], anchor - timedelta(minutes=3), anchor - timedelta(minutes=1))
    assert r.json()["queued"] == 3

    async def all_final() -> list[str] | None:
        statuses = sorted(r["status"] for r in await service.runs(job["id"]))
        return statuses if len(statuses) == 3 and "running" not in statuses and "queued" not in statuses else None

    assert await wait_until(all_final) == expected
    calls = service.receiver.calls_to(route)
    assert len(calls) == expected.count("succeeded")
    assert all(later.at - earlier.at >= 1.0 for earlier, later in itertools.pairwise(calls))
    assert {r["trigger"] for r in await service.runs(job["id"])} == {"backfill"}
