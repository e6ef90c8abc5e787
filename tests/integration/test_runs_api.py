"""Run semantics and run history through the HTTP API, against a real SecantusDB process and NATS.

Covers the ``once`` bounds (issue 14, bug 1) and the tenant-wide run history (``GET /runs``,
``GET /runs/{runId}``), with two tenants to check isolation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from schedsvc.api import create_app
from schedsvc.config import Settings
from schedsvc.store import MongoTenantStore, connect, database

DEV_KEY = "sk_00000000000000ab_" + "b" * 43


@dataclasses.dataclass
class Api:
    client: AsyncTestClient[Any]
    headers: dict[str, str]
    other: dict[str, str]
    settings: Settings
    db: Any


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    settings = dataclasses.replace(settings, roles=frozenset({"api"}), dev_mode=True, dev_api_key=DEV_KEY)
    app = create_app(settings)
    mongo = connect(settings)
    try:
        async with AsyncTestClient(app) as client:
            other_key, _ = await MongoTenantStore(database(mongo, settings)).create_tenant("other")
            yield Api(
                client,
                {"Authorization": f"Bearer {DEV_KEY}"},
                {"Authorization": f"Bearer {other_key.key}"},
                settings,
                database(mongo, settings),
            )
    finally:
        await mongo.drop_database(settings.database)
        await mongo.close()


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def job_body(name: str, schedule: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "schedule": schedule, "target": {"kind": "http", "url": "https://hooks.example.com/run"}}


# -- bug 1: a once schedule honours startAt/endAt ------------------------------------------------------


async def test_once_outside_its_bounds_is_refused_like_an_at_in_the_past(api: Api) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    at = now + timedelta(seconds=40)
    ended = {"kind": "once", "at": iso(at), "startAt": iso(now), "endAt": iso(now + timedelta(seconds=10))}
    not_started = {"kind": "once", "at": iso(at), "startAt": iso(at + timedelta(seconds=1))}
    for schedule in (ended, not_started):
        r = await api.client.post("/jobs", json=job_body("late", schedule), headers=api.headers)
        assert r.status_code == 422, r.text
        problem = r.json()
        assert [e["field"] for e in problem["errors"]] == ["schedule"], problem
        assert "no fire" in problem["detail"] + " ".join(e["message"] for e in problem["errors"])
    assert (await api.client.get("/jobs", headers=api.headers)).json()["items"] == []

    inside = {"kind": "once", "at": iso(at), "startAt": iso(at), "endAt": iso(at)}
    r = await api.client.post("/jobs", json=job_body("inside", inside), headers=api.headers)
    assert r.status_code == 201, r.text
    job = r.json()
    assert datetime.fromisoformat(job["nextRun"]) == at
    # A change that moves `at` outside the bounds is refused too, and leaves the job as it was.
    r = await api.client.patch(f"/jobs/{job['id']}", json={"schedule": ended}, headers=api.headers)
    assert r.status_code == 422, r.text
    assert (await api.client.get(f"/jobs/{job['id']}", headers=api.headers)).json() == job


async def test_preview_of_a_once_outside_its_bounds_has_no_fire(api: Api) -> None:
    at = datetime(2031, 1, 1, tzinfo=UTC)
    body = {
        "schedule": {"kind": "once", "at": iso(at), "endAt": iso(at - timedelta(days=1))},
        "after": iso(at - timedelta(days=30)),
    }
    r = await api.client.post("/schedules/preview", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["fires"] == []
    body["schedule"]["endAt"] = iso(at)
    r = await api.client.post("/schedules/preview", json=body)
    assert r.json()["fires"] == ["2031-01-01T00:00:00Z"]
