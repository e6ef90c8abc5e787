"""Run semantics and run history through the HTTP API, against a real SecantusDB process and NATS.

Covers the ``once`` bounds (issue 14, bug 1) and the tenant-wide run history (``GET /runs``,
``GET /runs/{runId}``), with two tenants to check isolation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import AsyncTestClient
from tests.conftest import DEV_KEY, Api

from schedsvc.api import create_app
from schedsvc.config import Settings
from schedsvc.domain import RunMessage, RunStatus, run_id
from schedsvc.store import connect
from schedsvc.store.runs import AttemptRecord, MongoRunStore


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


# -- run history: GET /runs and GET /runs/{runId} ------------------------------------------------------


async def record_run(
    api: Api, tenant: str, job_id: str, scheduled: datetime, outcome: str, trigger: str = "scheduled"
) -> str:
    """A run written the way execution writes it (claims, failed attempts, final status)."""
    store = MongoRunStore(api.db, api.settings)
    ms = int(scheduled.timestamp() * 1000)
    message = RunMessage(job_id, tenant, ms, ms, trigger, 1)
    now = datetime.now(UTC)
    attempt = await store.claim_attempt(message, 0, now, now + timedelta(seconds=30))
    assert attempt == 1
    failed = AttemptRecord(now, now + timedelta(milliseconds=120), 500, "HTTP 500", "boom", 1, "http_status")
    if outcome == "running":
        return run_id(job_id, ms)
    if outcome == "succeeded":
        ok = AttemptRecord(now, now + timedelta(milliseconds=80), 200, None, "ok", 1)
        await store.finish(message, RunStatus.SUCCEEDED, ok, now)
    elif outcome == "retrying":
        await store.record_retry(run_id(job_id, ms), 1, failed, now + timedelta(seconds=5))
    else:
        await store.finish(message, RunStatus(outcome), failed, now)
    return run_id(job_id, ms)


async def all_pages(api: Api, params: dict[str, Any], headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = await api.client.get(
            "/runs", params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers or api.headers
        )
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["nextCursor"]
        if cursor is None:
            return items


async def test_tenant_run_history_filters_pages_and_outlives_the_job(api: Api) -> None:
    every_minute = {"kind": "interval", "seconds": 60}
    a = (await api.client.post("/jobs", json=job_body("a", every_minute), headers=api.headers)).json()["id"]
    b = (await api.client.post("/jobs", json=job_body("b", every_minute), headers=api.headers)).json()["id"]
    theirs = (await api.client.post("/jobs", json=job_body("a", every_minute), headers=api.other)).json()["id"]
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    mine = []
    for i, outcome in enumerate(["succeeded", "failed", "succeeded", "retrying", "failed"]):
        mine.append(await record_run(api, "dev", a, t0 + timedelta(minutes=i), outcome))
        # Job b fires at the same instants: the cursor must separate runs that share one.
        mine.append(await record_run(api, "dev", b, t0 + timedelta(minutes=i), "succeeded", trigger="catchup"))
    other = await record_run(api, "other", theirs, t0, "failed")

    # Newest first, across jobs, one tenant's only, and the same whatever the page size.
    newest_first = sorted(mine, key=lambda rid: (int(rid.split(":")[1]), rid), reverse=True)
    for limit in (1, 3, 50):
        assert [r["id"] for r in await all_pages(api, {"limit": limit})] == newest_first
    assert [r["id"] for r in await all_pages(api, {}, api.other)] == [other]

    failed = await all_pages(api, {"status": "failed"})
    assert [r["id"] for r in failed] == [mine[8], mine[2]]
    assert {r["error"] for r in failed} == {"HTTP 500"}
    [attempt] = failed[0]["attemptHistory"]
    assert attempt["number"] == 1 and attempt["httpStatus"] == 500 and attempt["errorClass"] == "http_status"
    assert attempt["durationMs"] == 120 and attempt["responseSnippet"] == "boom"
    both = await all_pages(api, {"status": ["failed", "queued"]})
    assert [r["id"] for r in both] == [mine[8], mine[6], mine[2]]
    retrying = both[1]
    assert retrying["status"] == "queued" and retrying["nextAttemptAt"] is not None
    assert retrying["attemptHistory"][0]["nextRetryAt"] == retrying["nextAttemptAt"]
    assert [r["id"] for r in await all_pages(api, {"job": b, "trigger": "catchup"})] == mine[1::2][::-1]
    assert {r["jobId"] for r in await all_pages(api, {"job": b})} == {b}
    assert {r["trigger"] for r in await all_pages(api, {"trigger": "catchup"})} == {"catchup"}
    window = {"from": iso(t0 + timedelta(minutes=1)), "to": iso(t0 + timedelta(minutes=3))}
    assert sorted(r["id"] for r in await all_pages(api, window)) == sorted(mine[2:6])
    assert await all_pages(api, {"job": theirs}) == []  # another tenant's job: nothing, not an error

    # One run by id, with its attempts; another tenant's run is not found, as a missing one.
    r = await api.client.get(f"/runs/{mine[2]}", headers=api.headers)
    assert r.status_code == 200 and r.json()["status"] == "failed" and len(r.json()["attemptHistory"]) == 1
    for rid, headers in ((other, api.headers), (mine[2], api.other), (f"{a}:1", api.headers)):
        r = await api.client.get(f"/runs/{rid}", headers=headers)
        assert r.status_code == 404, r.text
        assert r.headers["content-type"].startswith("application/problem+json")

    # Deleting the job keeps its runs, by id and in the tenant-wide list, until retention.
    assert (await api.client.delete(f"/jobs/{a}", headers=api.headers)).status_code == 204
    assert (await api.client.get(f"/runs/{mine[2]}", headers=api.headers)).status_code == 200
    assert [r["id"] for r in await all_pages(api, {"job": a})] == [mine[8], mine[6], mine[4], mine[2], mine[0]]


async def test_run_history_refuses_bad_queries(api: Api) -> None:
    for params in (
        {"colour": "blue"},
        {"status": "sleeping"},
        {"trigger": "cron"},
        {"limit": 0},
        {"limit": 501},
        {"cursor": "!!"},
        {"cursor": "eyJiZWZvcmUiOjF9"},  # a job-history cursor ({"before":1}): no run id
        {"cursor": "eyJiZWZvcmUiOjEwMDAwMDAwMDAwMDAwMDAwMDAwLCJpZCI6IngifQ"},  # out of range
        {"from": "2026-11-01T00:00:00"},  # no offset
        {"to": "yesterday"},
    ):
        r = await api.client.get("/runs", params=params, headers=api.headers)
        assert r.status_code == 400, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await api.client.get("/runs")
    assert r.status_code == 401


async def test_nats_reached_after_start_up_completes_the_service(settings: Settings, tmp_path: Any) -> None:
    """Started while NATS is down, the API process is live and not ready; once NATS appears it connects
    (with backoff), becomes ready and queues runs (merged from the hostile-input work onto main's wiring)."""
    from schedsvc import embedded

    port = embedded.free_port()
    settings = dataclasses.replace(
        settings, nats_url=f"nats://127.0.0.1:{port}", roles=frozenset({"api"}), dev_mode=True, dev_api_key=DEV_KEY
    )
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    nats_server = embedded.nats(tmp_path / "nats", port=port)
    try:
        async with AsyncTestClient(create_app(settings)) as client:
            assert (await client.get("/health/ready")).status_code == 503
            r = await client.post("/jobs", json=job_body("later", {"kind": "interval", "seconds": 60}), headers=headers)
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            assert (await client.post(f"/jobs/{job_id}/run", headers=headers)).status_code == 503
            await asyncio.to_thread(nats_server.start)
            deadline = time.monotonic() + 30
            while (await client.get("/health/ready")).status_code != 200:
                assert time.monotonic() < deadline, "not ready 30 s after NATS came up"
                await asyncio.sleep(0.2)
            r = await client.post(f"/jobs/{job_id}/run", headers=headers)
            assert r.status_code == 202, r.text
    finally:
        await asyncio.to_thread(nats_server.stop)
        mongo = connect(settings)
        await mongo.drop_database(settings.database)
        await mongo.close()
