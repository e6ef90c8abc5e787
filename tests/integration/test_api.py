"""The jobs API through Litestar's test client, against a real SecantusDB process and NATS."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from schedsvc.api import create_app
from schedsvc.bus import announce_tenant_change
from schedsvc.config import Settings
from schedsvc.store import MongoTenantStore, connect, database

DEV_KEY = "sk_00000000000000aa_" + "a" * 43


def job_body(name: str = "nightly", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "schedule": {"kind": "cron", "expression": "0 9 * * MON-FRI", "timezone": "Europe/Berlin"},
        "target": {"kind": "http", "url": "https://hooks.example.com/run", "method": "POST"},
    }
    body.update(overrides)
    return body


@dataclasses.dataclass
class Api:
    client: AsyncTestClient[Any]
    headers: dict[str, str]
    other: dict[str, str]
    settings: Settings


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    settings = dataclasses.replace(settings, roles=frozenset({"api"}), dev_mode=True, dev_api_key=DEV_KEY)
    app = create_app(settings)
    async with AsyncTestClient(app) as client:
        mongo = connect(settings)
        try:
            other_key, _ = await MongoTenantStore(database(mongo, settings)).create_tenant("other")
        finally:
            await mongo.close()
        yield Api(
            client, {"Authorization": f"Bearer {DEV_KEY}"}, {"Authorization": f"Bearer {other_key.key}"}, settings
        )
    mongo = connect(settings)
    await mongo.drop_database(settings.database)
    await mongo.close()


async def create(api: Api, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = await api.client.post("/jobs", json=body or job_body(), headers=headers or api.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def test_create_returns_job_with_defaults_location_and_etag(api: Api) -> None:
    r = await api.client.post("/jobs", json=job_body(), headers=api.headers)
    assert r.status_code == 201, r.text
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert r.headers["etag"] == '"1"'
    assert job["status"] == "active"
    assert job["version"] == 1
    assert job["retry"] == {
        "maxAttempts": 3,
        "minBackoffSeconds": 1.0,
        "maxBackoffSeconds": 60.0,
        "maxEventAgeSeconds": 3600.0,
    }
    assert job["catchup"] == {"policy": "latest", "windowSeconds": 3600}
    assert job["overlap"] == "allow"
    assert job["lastRun"] is None
    next_run = datetime.fromisoformat(job["nextRun"])
    local = next_run.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute, local.weekday() < 5) == (9, 0, True)
    assert next_run > datetime.now(UTC)

    got = await api.client.get(f"/jobs/{job['id']}", headers=api.headers)
    assert got.status_code == 200
    assert got.json() == job


async def test_interval_anchor_defaults_to_creation_and_next_run_follows(api: Api) -> None:
    before = datetime.now(UTC)
    job = await create(api, job_body(schedule={"kind": "interval", "seconds": 90}))
    anchor = datetime.fromisoformat(job["schedule"]["anchor"])
    assert before - timedelta(seconds=1) <= anchor <= datetime.now(UTC)
    assert datetime.fromisoformat(job["nextRun"]) == anchor + timedelta(seconds=90)


async def test_list_paginates_stably_while_jobs_are_created(api: Api) -> None:
    created = [(await create(api, job_body(f"job-{i:02d}")))["id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = await api.client.get("/jobs", params=params, headers=api.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [j["id"] for j in page["items"]]
        if len(seen) == 3:  # a job created mid-way appears once, at the end
            created.append((await create(api, job_body("late-comer")))["id"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == created


async def test_list_filters(api: Api) -> None:
    a = await create(api, job_body("alpha-1", tags=["billing"]))
    await create(api, job_body("beta-1", tags=["reports"]))
    c = await create(api, job_body("alpha-2"))
    await api.client.post(f"/jobs/{c['id']}/pause", headers=api.headers)

    async def names(**params: Any) -> list[str]:
        r = await api.client.get("/jobs", params=params, headers=api.headers)
        assert r.status_code == 200, r.text
        return [j["name"] for j in r.json()["items"]]

    assert await names(name="alpha") == ["alpha-1", "alpha-2"]
    assert await names(tag="billing") == [a["name"]]
    assert await names(status="paused") == ["alpha-2"]
    assert await names(status="active", name="alpha") == ["alpha-1"]


async def test_patch_with_if_match_and_stale_version(api: Api) -> None:
    job = await create(api)
    r = await api.client.patch(
        f"/jobs/{job['id']}",
        json={"schedule": {"kind": "interval", "seconds": 30}},
        headers={**api.headers, "If-Match": '"1"'},
    )
    assert r.status_code == 200, r.text
    changed = r.json()
    assert changed["version"] == 2
    assert r.headers["etag"] == '"2"'
    assert changed["schedule"]["kind"] == "interval"
    assert datetime.fromisoformat(changed["nextRun"]) <= datetime.now(UTC) + timedelta(seconds=31)
    assert changed["name"] == job["name"] and changed["target"] == job["target"]

    stale = await api.client.patch(
        f"/jobs/{job['id']}", json={"name": "renamed"}, headers={**api.headers, "If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"].startswith("application/problem+json")
    assert (await api.client.get(f"/jobs/{job['id']}", headers=api.headers)).json()["name"] == job["name"]


async def test_duplicate_name_is_a_conflict(api: Api) -> None:
    await create(api, job_body("same"))
    r = await api.client.post("/jobs", json=job_body("same"), headers=api.headers)
    assert r.status_code == 409
    assert r.json()["errors"][0]["field"] == "name"
    # Names are unique per tenant only.
    r = await api.client.post("/jobs", json=job_body("same"), headers=api.other)
    assert r.status_code == 201


async def test_pause_resume_delete(api: Api) -> None:
    job = await create(api)
    r = await api.client.post(f"/jobs/{job['id']}/pause", headers=api.headers)
    assert r.status_code == 200 and r.json()["status"] == "paused"
    r = await api.client.post(f"/jobs/{job['id']}/resume", headers=api.headers)
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert r.json()["version"] == 3
    r = await api.client.delete(f"/jobs/{job['id']}", headers=api.headers)
    assert r.status_code == 204
    assert (await api.client.get(f"/jobs/{job['id']}", headers=api.headers)).status_code == 404


async def test_idempotent_create(api: Api) -> None:
    headers = {**api.headers, "Idempotency-Key": "create-42"}
    first = await api.client.post("/jobs", json=job_body("idem"), headers=headers)
    again = await api.client.post("/jobs", json=job_body("idem"), headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    listed = (await api.client.get("/jobs", headers=api.headers)).json()["items"]
    assert [j["name"] for j in listed] == ["idem"]
    different = await api.client.post("/jobs", json=job_body("other-name"), headers=headers)
    assert different.status_code == 422
    # The same key from another tenant is another key.
    other = await api.client.post("/jobs", json=job_body("idem"), headers={**api.other, "Idempotency-Key": "create-42"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


async def test_run_now_is_accepted_as_manual(api: Api) -> None:
    job = await create(api)
    r = await api.client.post(f"/jobs/{job['id']}/run", headers=api.headers)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["trigger"] == "manual"
    assert body["runId"].startswith(f"{job['id']}:")
    runs = await api.client.get(f"/jobs/{job['id']}/runs", headers=api.headers)
    assert runs.status_code == 200
    assert runs.json()["nextCursor"] is None


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"name": "stolen"}),
        ("DELETE", "", None),
        ("POST", "/pause", None),
        ("POST", "/resume", None),
        ("POST", "/run", None),
        ("GET", "/runs", None),
    ],
)
async def test_other_tenants_job_is_not_found(api: Api, method: str, suffix: str, body: Any) -> None:
    job = await create(api)
    r = await api.client.request(method, f"/jobs/{job['id']}{suffix}", json=body, headers=api.other)
    assert r.status_code == 404, r.text
    missing = await api.client.request(method, f"/jobs/{'0' * 24}{suffix}", json=body, headers=api.other)
    assert missing.status_code == 404
    assert r.json()["detail"] == missing.json()["detail"]
    assert (await api.client.get("/jobs", headers=api.other)).json()["items"] == []
    still = await api.client.get(f"/jobs/{job['id']}", headers=api.headers)
    assert still.json() == job


async def test_authentication_required(api: Api) -> None:
    assert (await api.client.get("/jobs")).status_code == 401
    r = await api.client.get("/jobs", headers={"Authorization": "Bearer sk_0123456789abcdef_" + "b" * 43})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert (await api.client.get("/jobs", headers={"Authorization": "Basic abc"})).status_code == 401


async def test_revoked_key_stops_working(api: Api) -> None:
    mongo = connect(api.settings)
    store = MongoTenantStore(database(mongo, api.settings))
    key = await store.create_key("other")
    headers = {"Authorization": f"Bearer {key.key}"}
    assert (await api.client.get("/jobs", headers=headers)).status_code == 200
    assert await store.revoke_key(key.key_id)
    await mongo.close()
    # The key is cached as valid; the announced revocation drops it (tests/integration/test_auth_push.py
    # shows it across replicas and through the command line).
    assert await announce_tenant_change(api.settings, "key", key.key_id)
    for _ in range(40):
        if (await api.client.get("/jobs", headers=headers)).status_code == 401:
            break
        await asyncio.sleep(0.05)
    assert (await api.client.get("/jobs", headers=headers)).status_code == 401


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        (job_body(schedule={"kind": "weekly"}), "schedule", "kind"),
        (job_body(schedule={"kind": "cron", "expression": "61 * * * *"}), "schedule.expression", "61"),
        (job_body(schedule={"kind": "cron", "expression": "0 0 30 2 *"}), "schedule.expression", "never"),
        (job_body(schedule={"kind": "cron", "expression": "* * *"}), "schedule.expression", "field"),
        (
            job_body(schedule={"kind": "cron", "expression": "0 9 * * *", "timezone": "Mars/Base"}),
            "schedule.timezone",
            "Mars/Base",
        ),
        (job_body(schedule={"kind": "interval", "seconds": 0}), "schedule.seconds", ">= 1"),
        (
            job_body(
                schedule={
                    "kind": "interval",
                    "seconds": 60,
                    "startAt": "2030-01-02T00:00:00Z",
                    "endAt": "2030-01-01T00:00:00Z",
                }
            ),
            "schedule",
            "endAt",
        ),
        (job_body(schedule={"kind": "once", "at": "2001-01-01T00:00:00Z"}), "schedule", "no fire"),
        (job_body(schedule={"kind": "once", "at": "2031-01-01T00:00:00"}), "schedule.at", "timezone"),
        (job_body(target={"kind": "http", "url": "ftp://example.com/x"}), "target.url", "http"),
        (job_body(target={"kind": "smtp", "to": "a@b"}), "target", "kind"),
        (job_body(target={"kind": "http", "url": "http://169.254.169.254/latest/meta-data"}), "target.url", "metadata"),
        (job_body(target={"kind": "http", "url": "http://10.1.2.3/hook"}), "target.url", "private"),
        (job_body(target={"kind": "http", "url": "http://[::ffff:192.168.0.1]/hook"}), "target.url", "private"),
        (job_body(target={"kind": "nats", "subject": "orders.created"}), "target.subject", "granted"),
        (job_body(target={"kind": "nats", "subject": "schedsvc.runs.1"}), "target.subject", ""),
        (job_body(name=""), "name", "length"),
        (job_body(retry={"maxAttempts": 0}), "retry.maxAttempts", ">= 1"),
        (job_body(retry={"minBackoffSeconds": 10, "maxBackoffSeconds": 1}), "retry", "maxBackoffSeconds"),
        (job_body(catchup={"policy": "sometimes"}), "catchup.policy", ""),
        ({**job_body(), "colour": "blue"}, "colour", "unknown"),
        ({"schedule": job_body()["schedule"], "target": job_body()["target"]}, "name", "missing"),
    ],
)
async def test_bad_input_names_the_field(api: Api, body: dict[str, Any], field: str, fragment: str) -> None:
    r = await api.client.post("/jobs", json=body, headers=api.headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == 422
    fields = [e["field"] for e in problem["errors"]]
    assert any(f == field or f.startswith(field + ".") or field.startswith(f) for f in fields), problem
    assert fragment.lower() in problem["detail"].lower() + " ".join(e["message"].lower() for e in problem["errors"])
    assert (await api.client.get("/jobs", headers=api.headers)).json()["items"] == []


async def test_malformed_json_oversized_and_wrong_content_type(api: Api) -> None:
    r = await api.client.post(
        "/jobs", content=b'{"name": ', headers={**api.headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")
    r = await api.client.post("/jobs", content=b"name=x", headers={**api.headers, "Content-Type": "text/plain"})
    assert r.status_code == 415
    big = job_body(metadata={"blob": "x" * 1000}, tags=["t"])
    big["target"]["body"] = "y" * (api.settings.max_request_bytes + 10)
    r = await api.client.post("/jobs", json=big, headers=api.headers)
    assert r.status_code == 413


async def test_bad_query_and_headers(api: Api) -> None:
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "many"}, {"status": "sleeping"}, {"cursor": "!!"}):
        r = await api.client.get("/jobs", params=params, headers=api.headers)
        assert r.status_code == 400, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    job = await create(api)
    r = await api.client.patch(f"/jobs/{job['id']}", json={"name": "x"}, headers={**api.headers, "If-Match": "three"})
    assert r.status_code == 400


async def test_preview(api: Api) -> None:
    r = await api.client.post(
        "/schedules/preview",
        json={
            "schedule": {"kind": "cron", "expression": "30 2 * * *", "timezone": "America/New_York"},
            "after": "2026-03-07T12:00:00Z",
            "count": 3,
        },
    )
    assert r.status_code == 200, r.text
    # 02:30 does not exist on 2026-03-08 in New York: the fire moves to the end of the gap.
    assert r.json()["fires"] == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]
    r = await api.client.post("/schedules/preview", json={"schedule": {"kind": "cron", "expression": "bad"}})
    assert r.status_code == 422
    r = await api.client.post("/schedules/preview", json={"schedule": {"kind": "interval", "seconds": 5}, "count": 101})
    assert r.status_code == 422


async def test_openapi_document(api: Api) -> None:
    r = await api.client.get("/schema/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/runs", "/schedules/preview"} <= set(paths)
