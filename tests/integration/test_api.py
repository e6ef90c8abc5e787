"""The jobs API through Litestar's test client, against a real SecantusDB process and NATS."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from litestar.testing import AsyncTestClient
from tests.conftest import DEV_KEY, Api, api_settings

from schedsvc import names
from schedsvc.api import create_app
from schedsvc.bus import announce_tenant_change
from schedsvc.config import Settings
from schedsvc.store import MongoTenantStore, connect, database


def job_body(name: str = "nightly", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "schedule": {"kind": "cron", "expression": "0 9 * * MON-FRI", "timezone": "Europe/Berlin"},
        "target": {"kind": "http", "url": "https://hooks.example.com/run", "method": "POST"},
    }
    body.update(overrides)
    return body


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
    assert job["catchup"] == {"policy": "latest", "windowSeconds": 3600, "misfireGraceSeconds": 60}
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


async def test_an_empty_patch_changes_nothing_not_even_the_version(api: Api) -> None:
    job = await create(api)
    for if_match in ({}, {"If-Match": '"1"'}):
        r = await api.client.patch(f"/jobs/{job['id']}", json={}, headers={**api.headers, **if_match})
        assert r.status_code == 200, r.text
        assert r.json() == job and r.headers["etag"] == '"1"'
    stale = await api.client.patch(f"/jobs/{job['id']}", json={}, headers={**api.headers, "If-Match": '"7"'})
    assert stale.status_code == 412, stale.text
    missing = await api.client.patch("/jobs/0123456789abcdef01234567", json={}, headers=api.headers)
    assert missing.status_code == 404, missing.text


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


async def test_a_repeat_while_the_first_create_is_in_progress_is_a_409(api: Api) -> None:
    """The key is kept with the new job's id before the job is inserted; a repeat that finds no job yet is
    told to repeat later (409), not that it reused the key (422)."""
    headers = {**api.headers, "Idempotency-Key": "slow"}
    assert (await api.client.post("/jobs", json=job_body("slow"), headers=headers)).status_code == 201
    mongo = connect(api.settings)
    try:
        kept = database(mongo, api.settings)[names.IDEMPOTENCY]
        claim = {"_id": {"tenant": "dev", "op": "createJob", "key": "slow"}}
        # As the claim looks while its job is being inserted: the job's id chosen, the job not there yet.
        assert (await kept.update_one(claim, {"$set": {"reply": str(ObjectId()).encode()}})).modified_count == 1
    finally:
        await mongo.close()
    r = await api.client.post("/jobs", json=job_body("slow"), headers=headers)
    assert r.status_code == 409, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["Idempotency-Key"]


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
        (
            job_body(schedule={"kind": "calendar", "every": 1, "unit": "days", "time": "25:00"}),
            "schedule.time",
            "HH:MM",
        ),
        (job_body(tags=["two words"]), "tags", "letters, digits"),
        (job_body(target={"kind": "smtp", "to": "a@b"}), "target", "kind"),
        (job_body(target={"kind": "http", "url": "http://169.254.169.254/latest/meta-data"}), "target.url", "metadata"),
        (job_body(target={"kind": "http", "url": "http://10.1.2.3/hook"}), "target.url", "private"),
        (job_body(target={"kind": "http", "url": "http://[::ffff:192.168.0.1]/hook"}), "target.url", "private"),
        (job_body(target={"kind": "nats", "subject": "orders.created"}), "target.subject", "granted"),
        (job_body(target={"kind": "nats", "subject": "schedsvc.runs.1"}), "target.subject", ""),
        (job_body(name=""), "name", "length"),
        (job_body(name="nightly\x00report"), "name", "control characters"),
        (job_body(name="two\nlines"), "name", "control characters"),
        (job_body(name="trailing\n"), "name", "control characters"),
        (job_body(name="escape\u009b31m"), "name", "control characters"),
        (job_body(retry={"maxAttempts": 0}), "retry.maxAttempts", ">= 1"),
        (job_body(retry={"minBackoffSeconds": 10, "maxBackoffSeconds": 1}), "retry", "maxBackoffSeconds"),
        (job_body(catchup={"policy": "sometimes"}), "catchup.policy", ""),
        (job_body(catchup={"misfireGraceSeconds": 0}), "catchup.misfireGraceSeconds", ">= 1"),
        (job_body(catchup={"misfireGraceSeconds": 86_401}), "catchup.misfireGraceSeconds", "<= 86400"),
        (job_body(overlap="bufferAll"), "overlap", "enum"),
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


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"tags": ["ok", "two words"]}, "tags.1"),
        ({"tags": ["billing\n"]}, "tags.0"),
        ({"metadata": {"team": "x" * 1025}}, "metadata"),
        ({"target": {"kind": "http", "url": "http://127.0.0.1:9/x", "headers": {"X-A": "v" * 4097}}}, "target.headers"),
    ],
)
async def test_an_item_of_a_list_or_map_is_named_by_its_path(api: Api, fields: dict[str, Any], named: str) -> None:
    r = await api.client.post("/jobs", json=job_body(**fields), headers=api.headers)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [named], r.text


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


async def test_a_missing_body_is_named_as_such(api: Api) -> None:
    job = await create(api)
    json_type = {**api.headers, "Content-Type": "application/json"}
    for method, path, headers in (
        ("POST", "/jobs", json_type),
        ("POST", "/jobs", api.headers),  # no body and no content type
        ("PATCH", f"/jobs/{job['id']}", json_type),
        ("PATCH", "/tenant/settings", json_type),
        ("POST", "/runs/retry", json_type),
    ):
        r = await api.client.request(method, path, headers=headers)
        assert r.status_code == 400, (method, path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"] == [{"field": "body", "message": "this request needs a JSON body"}], r.text
    assert (await api.client.get(f"/jobs/{job['id']}", headers=api.headers)).json()["version"] == job["version"]


async def test_bad_query_and_headers(api: Api) -> None:
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "many"}, {"status": "sleeping"}, {"cursor": "!!"}):
        r = await api.client.get("/jobs", params=params, headers=api.headers)
        assert r.status_code == 400, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    job = await create(api)
    r = await api.client.patch(f"/jobs/{job['id']}", json={"name": "x"}, headers={**api.headers, "If-Match": "three"})
    assert r.status_code == 400
    # A single-valued filter given twice is refused rather than answered with one of them, or with nothing.
    for path, params in (
        ("/jobs", [("status", "active"), ("status", "paused")]),
        ("/jobs", [("limit", "1"), ("limit", "2")]),
        ("/runs", [("job", "a"), ("job", "b")]),
    ):
        r = await api.client.get(path, params=params, headers=api.headers)
        assert r.status_code == 400, (path, params, r.text)
        assert r.json()["errors"] == [{"field": params[0][0], "message": "given 2 times; it takes one value"}]
    # The list parameters take several: every metadata pair must match; a run in any of the statuses.
    # Each problem names the parameter as the client sent it, not as the handler calls it.
    for path, params, headers, field in (
        ("/runs", {"from": "99999-01-01T00:00:00Z"}, {}, "from"),
        ("/runs", {"to": "tomorrow"}, {}, "to"),
        ("/jobs", {}, {"Idempotency-Key": "k" * 256}, "Idempotency-Key"),
    ):
        method = "POST" if headers else "GET"
        body = job_body() if headers else None
        r = await api.client.request(method, path, params=params, json=body, headers={**api.headers, **headers})
        assert r.status_code == 400, r.text
        assert [e["field"] for e in r.json()["errors"]] == [field], r.text
    pairs = [("metadata", "team:a"), ("metadata", "tier:b")]
    assert (await api.client.get("/jobs", params=pairs, headers=api.headers)).status_code == 200
    statuses = [("status", "failed"), ("status", "succeeded")]
    assert (await api.client.get("/runs", params=statuses, headers=api.headers)).status_code == 200


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


# -- hostile input: each class of request that once reached a 500 --------------------------------------


async def assert_problem(r: Any, status: int, *fields: str) -> dict[str, Any]:
    """A problem detail with ``status`` whose ``errors`` name every one of ``fields`` (by prefix)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = r.json()
    named = [e["field"] for e in problem.get("errors") or []]
    for field in fields:
        assert any(f == field or f.startswith(field + ".") for f in named), (field, problem)
    return problem


async def job_count(api: Api) -> int:
    r = await api.client.get("/jobs", params={"limit": 500}, headers=api.headers)
    assert r.status_code == 200, r.text
    return len(r.json()["items"])


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        # Integers BSON cannot hold, anywhere in the body.
        ({"metadata": {"n": 10**30}}, ["metadata.n"]),
        ({"target": {"kind": "http", "url": "https://h.example.com/", "body": {"n": 2**63}}}, ["target.body.n"]),
        ({"target": {"kind": "http", "url": "https://h.example.com/", "body": [-(2**63) - 1]}}, ["target.body.0"]),
        # NUL in object keys (MongoDB refuses them).
        ({"metadata": {"a\u0000b": "x"}}, ["metadata"]),
        ({"target": {"kind": "http", "url": "https://h.example.com/", "body": {"k\u0000": 1}}}, ["target.body"]),
        ({"target": {"kind": "nats", "subject": "tenant.dev.x", "headers": {"X\u0000": "1"}}}, ["target.headers"]),
        # Free-form fields deeper than the documented limit.
        (
            {
                "target": {
                    "kind": "http",
                    "url": "https://h.example.com/",
                    "body": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
                }
            },
            ["target.body"],
        ),
        # Zone names that are directories of the zone database.
        ({"schedule": {"kind": "cron", "expression": "0 9 * * *", "timezone": "Europe"}}, ["schedule.timezone"]),
        ({"schedule": {"kind": "calendar", "unit": "days", "time": "09:00", "timezone": "Etc"}}, ["schedule.timezone"]),
        # Instants that leave years 1-9999 once their offset is applied.
        ({"schedule": {"kind": "once", "at": "9999-12-31T23:00:00-14:00"}}, ["schedule.at"]),
        ({"schedule": {"kind": "interval", "seconds": 60, "anchor": "0001-01-01T00:30:00+14:00"}}, ["schedule.anchor"]),
        (
            {"schedule": {"kind": "interval", "seconds": 60, "startAt": "0001-01-01T00:30:00+14:00"}},
            ["schedule.startAt"],
        ),
        ({"schedule": {"kind": "interval", "seconds": 60, "endAt": "9999-12-31T23:00:00-14:00"}}, ["schedule.endAt"]),
        # A cron step that overflows is refused, not read as "the first value only".
        ({"schedule": {"kind": "cron", "expression": "*/99999999999999999999 * * * *"}}, ["schedule.expression"]),
        # Strict types: no coercion.
        ({"schedule": {"kind": "interval", "seconds": "60"}}, ["schedule.seconds"]),
        ({"paused": "true"}, ["paused"]),
        ({"schedule": {"kind": "once", "at": 0}}, ["schedule.at"]),
        # Non-canonical IP literals and a trailing dot.
        *[
            ({"target": {"kind": "http", "url": f"http://{host}/hook"}}, ["target.url"])
            for host in ("127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "1.2.3.4.", "hooks.example.com.", "8.8.8")
        ],
        # Header names and values, hop-by-hop and service headers in any case, for HTTP and NATS.
        (
            {"target": {"kind": "http", "url": "https://h.example.com/", "headers": {"Bad Name": "1"}}},
            ["target.headers"],
        ),
        (
            {"target": {"kind": "http", "url": "https://h.example.com/", "headers": {"X-A": "a\r\nX-B: b"}}},
            ["target.headers.X-A"],
        ),
        (
            {"target": {"kind": "http", "url": "https://h.example.com/", "headers": {"idempotency-key": "1"}}},
            ["target.headers.idempotency-key"],
        ),
        (
            {"target": {"kind": "http", "url": "https://h.example.com/", "headers": {"Keep-Alive": "1"}}},
            ["target.headers.Keep-Alive"],
        ),
        ({"target": {"kind": "nats", "subject": "tenant.dev.x", "headers": {"X-A": "a\nb"}}}, ["target.headers.X-A"]),
        (
            {"target": {"kind": "nats", "subject": "tenant.dev.x", "headers": {"IDEMPOTENCY-KEY": "1"}}},
            ["target.headers.IDEMPOTENCY-KEY"],
        ),
        (
            {"target": {"kind": "nats", "subject": "tenant.dev.x", "headers": {"Nats-Msg-Id": "1"}}},
            ["target.headers.Nats-Msg-Id"],
        ),
        ({"target": {"kind": "nats", "subject": "tenant.dev.a\u0007b"}}, ["target.subject"]),
    ],
)
async def test_hostile_bodies_are_4xx_naming_the_field_and_write_nothing(
    api: Api, overrides: dict[str, Any], fields: list[str]
) -> None:
    await assert_problem(await api.client.post("/jobs", json=job_body(**overrides), headers=api.headers), 422, *fields)
    assert await job_count(api) == 0
    # The same through PATCH leaves the job as it was.
    job = await create(api)
    patch = {k: v for k, v in overrides.items() if k != "paused"} or {"paused": True}  # not patchable
    r = await api.client.patch(f"/jobs/{job['id']}", json=patch, headers=api.headers)
    assert 400 <= r.status_code < 500, r.text
    assert (await api.client.get(f"/jobs/{job['id']}", headers=api.headers)).json() == job


async def test_every_invalid_field_is_listed(api: Api) -> None:
    body = job_body(
        name="",
        schedule={"kind": "interval", "seconds": 0},
        target={"kind": "http", "url": "http://127.1/"},
        retry={"maxAttempts": "3"},
        colour="blue",
    )
    await assert_problem(
        await api.client.post("/jobs", json=body, headers=api.headers),
        422,
        "name",
        "schedule.seconds",
        "retry.maxAttempts",
        "colour",
    )
    # The schedule and the target policy are reported together too.
    body = job_body(
        schedule={"kind": "once", "at": "2001-01-01T00:00:00Z"}, target={"kind": "http", "url": "http://0x7f.1/"}
    )
    await assert_problem(await api.client.post("/jobs", json=body, headers=api.headers), 422, "schedule", "target.url")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b'{"name": "\xff\xfe"}', 400),  # invalid UTF-8
        (b"[" * 5000 + b"]" * 5000, 400),  # deeper than the decoder's recursion limit
        (b'{"metadata": ' + b'{"a": ' * 70 + b"1" + b"}" * 71, 422),  # deeper than the body limit
    ],
)
async def test_unreadable_bodies_are_4xx(api: Api, raw: bytes, status: int) -> None:
    headers = {**api.headers, "Content-Type": "application/json"}
    await assert_problem(await api.client.post("/jobs", content=raw, headers=headers), status)
    # Anonymous too.
    r = await api.client.post("/schedules/preview", content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert await job_count(api) == 0


async def test_preview_refuses_hostile_schedules_and_instants(api: Api) -> None:
    for body, field in (
        ({"schedule": {"kind": "interval", "seconds": 60}, "after": "9999-12-31T23:00:00-14:00"}, "after"),
        ({"schedule": {"kind": "interval", "seconds": 60}, "after": "0001-01-01T00:30:00+14:00"}, "after"),
        ({"schedule": {"kind": "cron", "expression": "0 0 * * *", "timezone": "America"}}, "schedule.timezone"),
        ({"schedule": {"kind": "interval", "seconds": 60}, "count": "3"}, "count"),
        ({"schedule": {"kind": "once", "at": "9999-12-31T23:59:59Z"}, "after": "9999-12-31T23:59:58Z"}, None),
    ):
        r = await api.client.post("/schedules/preview", json=body)
        if field is None:
            assert r.status_code in (200, 422), r.text
        else:
            await assert_problem(r, 422, field)
    r = await api.client.post(
        "/schedules/preview",
        json={"schedule": {"kind": "interval", "seconds": 86400}, "after": "9999-12-30T00:00:00Z", "count": 5},
    )
    assert r.status_code in (200, 422), r.text


async def test_if_match_must_fit_a_version_and_is_honoured_on_pause_and_resume(api: Api) -> None:
    job = await create(api)
    url = f"/jobs/{job['id']}"
    for value in ('"' + "9" * 20 + '"', "three", '"-1"', '"1'):
        for method, path, body in (
            ("PATCH", url, {"name": "x"}),
            ("DELETE", url, None),
            ("POST", url + "/pause", None),
            ("POST", url + "/resume", None),
        ):
            r = await api.client.request(method, path, json=body, headers={**api.headers, "If-Match": value})
            assert r.status_code == 400, (method, path, value, r.text)
    for path in ("/pause", "/resume"):
        r = await api.client.post(url + path, headers={**api.headers, "If-Match": '"0"'})
        await assert_problem(r, 412)
    r = await api.client.post(url + "/pause", headers={**api.headers, "If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["status"] == "paused"
    r = await api.client.post(url + "/resume", headers={**api.headers, "If-Match": '"1"'})
    await assert_problem(r, 412)  # the pause made it version 2
    r = await api.client.post(url + "/resume", headers={**api.headers, "If-Match": 'W/"2"'})
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert (await api.client.get(url, headers=api.headers)).json()["version"] == 3


async def test_forged_cursors_and_unknown_query_parameters_are_400(api: Api) -> None:
    import base64
    import json

    job = await create(api)

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    runs_forged = [b64(json.dumps({"before": v}).encode()) for v in (10**30, -(10**30), "x", 1.5, True, None)]
    jobs_forged = [b64(b"not-an-object-id"), b64(b"\xff\xfe"), "A", "a" * 200, "é", "../../"]
    for cursor in runs_forged + jobs_forged:
        for path in ("/jobs", f"/jobs/{job['id']}/runs"):
            r = await api.client.get(path, params={"cursor": cursor}, headers=api.headers)
            await assert_problem(r, 400)
    await assert_problem(await api.client.get("/jobs", params={"q": "x"}, headers=api.headers), 400, "q")
    await assert_problem(
        await api.client.get(f"/jobs/{job['id']}/runs", params={"status": "x"}, headers=api.headers), 400, "status"
    )
    await assert_problem(await api.client.get(f"/jobs/{job['id']}", params={"x": "1"}, headers=api.headers), 400, "x")


async def test_a_failed_create_releases_its_idempotency_key(api: Api) -> None:
    headers = {**api.headers, "Idempotency-Key": "retry-me"}
    await create(api, job_body("taken"))
    assert (await api.client.post("/jobs", json=job_body("taken"), headers=headers)).status_code == 409
    await api.client.delete(
        f"/jobs/{(await api.client.get('/jobs', headers=api.headers)).json()['items'][0]['id']}", headers=api.headers
    )
    r = await api.client.post("/jobs", json=job_body("taken"), headers=headers)  # the identical retry
    assert r.status_code == 201, r.text


async def test_options_lists_every_method_of_the_path(api: Api) -> None:
    job = await create(api)
    for path, methods in ((f"/jobs/{job['id']}", {"GET", "PATCH", "DELETE"}), ("/jobs", {"GET", "POST"})):
        r = await api.client.options(path, headers=api.headers)
        assert r.status_code == 204, r.text
        assert {m.strip() for m in r.headers["allow"].split(",")} == methods | {"OPTIONS"}


async def test_run_now_without_nats_is_503_with_retry_after(settings: Settings, drop_database: None) -> None:
    """A process started while NATS is down is live, not ready, and answers run-now with 503."""
    from tests.support import servers

    down = f"nats://127.0.0.1:{servers.free_port()}"  # nothing listens there
    settings = api_settings(settings, nats_url=down)
    async with AsyncTestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {DEV_KEY}"}
        assert (await client.get("/health/live")).status_code == 200
        ready = await client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["nats"] != "ok"
        r = await client.post("/jobs", json=job_body(), headers=headers)
        assert r.status_code == 201, r.text
        r = await client.post(f"/jobs/{r.json()['id']}/run", headers=headers)
        await assert_problem(r, 503)
        assert int(r.headers["retry-after"]) > 0
