"""A job's optional ``description`` over real HTTP: a ``schedsvc serve`` process on a loopback port.

Created, returned by every read (one job, the list), patched, cleared, and refused above 1,000
characters with a problem detail naming the field.
"""

from __future__ import annotations

from typing import Any

import httpx
from tests.conftest import DEV_KEY

AUTH = {"Authorization": f"Bearer {DEV_KEY}"}


def job_body(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": {"kind": "cron", "expression": "0 9 * * *", "timezone": "Europe/Berlin"},
        "target": {"kind": "http", "url": "https://hooks.example.com/run"},
        **fields,
    }


async def test_a_description_is_stored_returned_patched_and_cleared(service_url: str) -> None:
    async with httpx.AsyncClient(base_url=service_url, headers=AUTH, timeout=30) as http:
        created = await http.post("/jobs", json=job_body("described", description="Nightly report for ops"))
        assert created.status_code == 201, created.text
        job = created.json()
        assert job["description"] == "Nightly report for ops"

        fetched = (await http.get(f"/jobs/{job['id']}")).json()
        assert fetched["description"] == "Nightly report for ops"
        listed = (await http.get("/jobs", params={"name": "described"})).json()["items"]
        assert [j["description"] for j in listed] == ["Nightly report for ops"]

        longest = "é" * 1000
        patched = await http.patch(f"/jobs/{job['id']}", json={"description": longest})
        assert patched.status_code == 200, patched.text
        assert patched.json()["description"] == longest
        assert (await http.get(f"/jobs/{job['id']}")).json()["description"] == longest

        cleared = await http.patch(f"/jobs/{job['id']}", json={"description": None})
        assert cleared.status_code == 200, cleared.text
        assert cleared.json()["description"] is None

        plain = (await http.post("/jobs", json=job_body("plain"))).json()
        assert plain["description"] is None


async def test_a_description_over_1000_characters_is_refused_naming_the_field(service_url: str) -> None:
    async with httpx.AsyncClient(base_url=service_url, headers=AUTH, timeout=30) as http:
        refused = await http.post("/jobs", json=job_body("too-long", description="x" * 1001))
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "description" in refused.text

        job = (await http.post("/jobs", json=job_body("patched-too-long"))).json()
        refused = await http.patch(f"/jobs/{job['id']}", json={"description": "x" * 1001})
        assert refused.status_code == 422, refused.text
        assert "description" in refused.text
        assert (await http.get(f"/jobs/{job['id']}")).json()["description"] is None
