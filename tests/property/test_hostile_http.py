"""Hostile clients against the service over real HTTP: never a 5xx, never a partial write.

Hypothesis generates JSON bodies (huge integers, NUL keys, deep nesting, wrong types, bad instants and
zones), raw bytes, headers, query strings and cursors; the service runs under granian (``schedsvc serve``)
on loopback. Bounded: a few dozen examples per test, the whole module well under a minute.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import DEV_KEY
from tests.support import servers

AUTH = {"Authorization": f"Bearer {DEV_KEY}"}
BOUNDED = settings(
    max_examples=100, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


SERVICE_SETTINGS = {"rate_limit_per_minute": 100_000, "log_level": "INFO"}


@pytest.fixture(scope="module")
def service(api_service: servers.ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_service.url, timeout=30) as client:
        yield client
    api_service.stop()  # every line is written before the log is read
    output = api_service.log.read_text()
    assert "Traceback" not in output, output[-5000:]
    # Every line the process wrote (stdout and stderr), granian's own included, is a JSON object.
    for line in output.splitlines():
        assert isinstance(json.loads(line), dict), line


def valid_job(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": {"kind": "interval", "seconds": 60},
        "target": {"kind": "http", "url": "https://hooks.example.com/x"},
    }


HOSTILE_SCALARS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, -(2**63) - 1, 10**30, "60", "true", 0, -1, 1e308, "", "\u0000", "Europe", "America"]),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.sampled_from(["9999-12-31T23:00:00-14:00", "0001-01-01T00:30:00+14:00", "2030-01-01T00:00:00"]),
)
HOSTILE_JSON = st.recursive(
    HOSTILE_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.just("a\u0000b")), inner, max_size=4),
    ),
    max_leaves=20,
)
FIELDS = [
    ("name",),
    ("schedule",),
    ("schedule", "seconds"),
    ("schedule", "kind"),
    ("schedule", "anchor"),
    ("schedule", "startAt"),
    ("schedule", "timezone"),
    ("target",),
    ("target", "url"),
    ("target", "body"),
    ("target", "headers"),
    ("retry",),
    ("retry", "maxAttempts"),
    ("metadata",),
    ("tags",),
    ("paused",),
    ("colour",),
]


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": [value]}
    return value


@st.composite
def hostile_job(draw: st.DrawFn) -> dict[str, Any]:
    body = valid_job(draw(st.text(min_size=1, max_size=12)))
    for path in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)):
        value = draw(st.one_of(HOSTILE_JSON, st.integers(1, 400).map(deep)))
        node = body
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    return body


def job_ids(client: httpx.Client) -> list[str]:
    r = client.get("/jobs", params={"limit": 500}, headers=AUTH)
    assert r.status_code == 200, r.text
    return [j["id"] for j in r.json()["items"]]


def assert_4xx_problem(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/problem+json"), r.text
        assert r.json()["status"] == r.status_code


@BOUNDED
@given(body=hostile_job())
def test_hostile_job_bodies(service: httpx.Client, body: dict[str, Any]) -> None:
    client = service
    before = job_ids(client)
    r = client.post("/jobs", content=json.dumps(body).encode(), headers={**AUTH, "Content-Type": "application/json"})
    assert_4xx_problem(r)
    after = job_ids(client)
    if r.status_code == 201:
        client.delete(f"/jobs/{r.json()['id']}", headers=AUTH)
    else:
        assert after == before  # nothing half-written


@BOUNDED
@given(body=hostile_job(), if_match=st.one_of(st.none(), st.text(max_size=30), st.integers().map(lambda n: f'"{n}"')))
def test_hostile_patches_leave_the_job_unchanged(
    service: httpx.Client, body: dict[str, Any], if_match: str | None
) -> None:
    client = service
    target = client.post("/jobs", json=valid_job("patch-target"), headers=AUTH)
    job = (
        target.json()
        if target.status_code == 201
        else client.get("/jobs", params={"name": "patch-target"}, headers=AUTH).json()["items"][0]
    )
    patch = {k: v for k, v in body.items() if k not in ("paused", "name")}
    headers = {**AUTH, "Content-Type": "application/json"}
    if if_match is not None and if_match.isascii() and if_match.isprintable():
        headers["If-Match"] = if_match
    r = client.patch(f"/jobs/{job['id']}", content=json.dumps(patch).encode(), headers=headers)
    assert_4xx_problem(r)
    now = client.get(f"/jobs/{job['id']}", headers=AUTH).json()
    if r.status_code != 200:
        assert now == job
    else:
        client.delete(f"/jobs/{job['id']}", headers=AUTH)


@BOUNDED
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
        st.text(max_size=50).map(str.encode),
    )
)
def test_raw_bodies_anonymous_preview_included(service: httpx.Client, raw: bytes) -> None:
    client = service
    for path, headers in (("/jobs", AUTH), ("/schedules/preview", {})):
        r = client.post(path, content=raw, headers={**headers, "Content-Type": "application/json"})
        assert_4xx_problem(r)


@BOUNDED
@given(
    params=st.dictionaries(
        st.sampled_from(["limit", "cursor", "status", "tag", "name", "q", "cursor "]),
        st.one_of(st.text(max_size=40), st.integers(-(10**20), 10**20).map(str)),
        max_size=3,
    ),
    forged=st.one_of(
        st.none(),
        st.binary(max_size=40),
        st.integers(-(10**40), 10**40).map(lambda n: json.dumps({"before": n}).encode()),
    ),
)
def test_query_strings_and_cursors(service: httpx.Client, params: dict[str, str], forged: bytes | None) -> None:
    import base64

    client = service
    if forged is not None:
        params["cursor"] = base64.urlsafe_b64encode(forged).decode().rstrip("=")
    for path in ("/jobs", "/jobs/000000000000000000000000/runs"):
        assert_4xx_problem(client.get(path, params=params, headers=AUTH))
