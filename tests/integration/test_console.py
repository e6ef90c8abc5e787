"""The console's forms over HTTP (no browser) against the API app in the test process, with real MongoDB
wire protocol (SecantusDB) and NATS: the job's notification target on its page and in its edit form, and
bulk actions on the jobs list. What the console did is read back through the REST API, for this tenant
and for another one, whose jobs must be untouched."""

from __future__ import annotations

import asyncio
import html
import re
import uuid
from typing import Any

import httpx
from tests.conftest import DEV_KEY, Api

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


async def sign_in(api: Api) -> str:
    """Signs the test client in to the console as the ``dev`` tenant; returns the session's CSRF token."""
    signed_in = await api.client.post("/console/sign-in", data={"api_key": DEV_KEY}, follow_redirects=False)
    assert signed_in.status_code == 303, signed_in.text
    listed = await api.client.get("/console/jobs")
    match = TOKEN.search(listed.text)
    assert match is not None
    return match.group(1)


async def create_job(api: Api, name: str, headers: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "schedule": {"kind": "interval", "seconds": 3600},
        "target": {"kind": "nats", "subject": "tenant.dev.console"},
        **fields,
    }
    r = await api.client.post("/jobs", json=body, headers=headers or api.headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def job_of(api: Api, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = await api.client.get(f"/jobs/{job_id}", headers=headers or api.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def field_error(page: httpx.Response, field: str) -> str:
    match = re.search(rf'id="{re.escape(field)}-error">(.*?)</p>', page.text, re.DOTALL)
    assert match is not None, f"no error beside {field}"
    return html.unescape(match.group(1))


def flash_of(page: httpx.Response) -> str:
    match = re.search(r'<p class="flash [a-z]+" role="status">(.*?)</p>', page.text, re.DOTALL)
    assert match is not None, "no flash message"
    return html.unescape(match.group(1))


# -- the notification target ----------------------------------------------------------------------


def edit_form(job: dict[str, Any], csrf: str, **changes: str) -> dict[str, str]:
    """The job page's edit form as a browser posts it (for an interval job with a NATS target)."""
    return {
        "csrf_token": csrf,
        "version": str(job["version"]),
        "name": job["name"],
        "description": job.get("description") or "",
        "tags": ", ".join(job["tags"]),
        "schedule.kind": "interval",
        "schedule.seconds": str(job["schedule"]["seconds"]),
        "target.kind": "nats",
        "target.subject": job["target"]["subject"],
        "retry.maxAttempts": str(job["retry"]["maxAttempts"]),
        "overlap": job["overlap"],
        "notify.url": (job.get("notify") or {}).get("url", ""),
        **changes,
    }


async def test_the_job_page_says_where_notifications_go_and_never_shows_a_header_value(api: Api) -> None:
    await sign_in(api)
    own = await create_job(
        api,
        "own-target",
        notify={"url": "http://127.0.0.1:9/own", "headers": {"X-Notify-Token": "notify-secret-1"}},
    )
    page = await api.client.get(f"/console/jobs/{own['id']}")
    assert page.status_code == 200
    assert "http://127.0.0.1:9/own" in page.text and "X-Notify-Token" in page.text
    assert "notify-secret-1" not in page.text  # nor in the JSON view, nor in the form

    plain = await create_job(api, "no-target")
    page = await api.client.get(f"/console/jobs/{plain['id']}")
    assert re.search(r'<dd class="notify">none', page.text)

    # The tenant's default, set through the API. Its change notice (kind "data") reaches the console too, and
    # must not read as a revocation: the session stays signed in.
    default = {"url": "http://127.0.0.1:9/tenant", "headers": {"X-Tenant-Token": "tenant-secret-2"}}
    patched = await api.client.patch("/tenant/settings", json={"notify": default}, headers=api.headers)
    assert patched.status_code == 200, patched.text
    await asyncio.sleep(1.0)  # the notice is on its way to every replica within about a second
    page = await api.client.get(f"/console/jobs/{plain['id']}")
    assert page.status_code == 200 and "Notifications" in page.text, "the settings change signed the session out"
    assert "tenant default (<code>http://127.0.0.1:9/tenant</code>)" in page.text
    assert "X-Tenant-Token" in page.text and "tenant-secret-2" not in page.text
    page = await api.client.get(f"/console/jobs/{own['id']}")  # its own target still wins
    assert "http://127.0.0.1:9/tenant" not in page.text


async def notify_with_header(api: Api, job: dict[str, Any], url: str) -> dict[str, Any]:
    """The job after the API set its notify target to ``url`` with a header (``X-Token: kept``)."""
    patched = await api.client.patch(
        f"/jobs/{job['id']}", json={"notify": {"url": url, "headers": {"X-Token": "kept"}}}, headers=api.headers
    )
    assert patched.status_code == 200, patched.text
    return dict(patched.json())


async def test_the_edit_form_sets_changes_and_clears_the_notify_url_keeping_its_headers_on_its_origin(api: Api) -> None:
    csrf = await sign_in(api)
    job = await create_job(api, "notified")
    saved = await api.client.post(
        f"/console/jobs/{job['id']}", data=edit_form(job, csrf, **{"notify.url": "http://127.0.0.1:9/a"})
    )
    assert saved.status_code == 200 and flash_of(saved) == "Saved."
    job = await job_of(api, job["id"])
    assert job["notify"] == {"url": "http://127.0.0.1:9/a", "headers": {}}

    # Saved again as it is: nothing changed, so neither does the version (nobody else's edit is refused for it).
    again = await api.client.post(f"/console/jobs/{job['id']}", data=edit_form(job, csrf))
    assert again.status_code == 200 and flash_of(again) == "Saved."
    assert await job_of(api, job["id"]) == job

    # Headers set through the API stay when the URL changes: the console never shows their values.
    job = await notify_with_header(api, job, "http://127.0.0.1:9/a")
    await api.client.post(
        f"/console/jobs/{job['id']}", data=edit_form(job, csrf, **{"notify.url": "http://127.0.0.1:9/b"})
    )
    job = await job_of(api, job["id"])
    assert job["notify"] == {"url": "http://127.0.0.1:9/b", "headers": {"X-Token": "kept"}}

    # ... but not to another host or port: they may be credentials for the old one alone.
    await api.client.post(
        f"/console/jobs/{job['id']}", data=edit_form(job, csrf, **{"notify.url": "http://127.0.0.2:9/b"})
    )
    moved = await job_of(api, job["id"])
    assert moved["notify"] == {"url": "http://127.0.0.2:9/b", "headers": {}}
    job = await notify_with_header(api, job, "http://127.0.0.1:9/b")

    # Saved with the URL as it is (another field changed): the target stays whole.
    await api.client.post(f"/console/jobs/{job['id']}", data=edit_form(job, csrf, description="renotified"))
    changed = await job_of(api, job["id"])
    assert (changed["description"], changed["notify"]) == ("renotified", job["notify"])
    job = changed

    # Empty: the job's own target is removed, the tenant's default applies again.
    await api.client.post(f"/console/jobs/{job['id']}", data=edit_form(job, csrf, **{"notify.url": ""}))
    assert (await job_of(api, job["id"]))["notify"] is None


async def test_a_bad_notify_url_is_the_apis_error_beside_the_field(api: Api) -> None:
    csrf = await sign_in(api)
    job = await create_job(api, "bad-notify")
    for bad in ("ftp://127.0.0.1/x", "http://user:pw@127.0.0.1/x", "http://10.1.2.3/x"):
        answer = await api.client.patch(f"/jobs/{job['id']}", json={"notify": {"url": bad}}, headers=api.headers)
        assert answer.status_code == 422, answer.text
        [problem] = answer.json()["errors"]
        assert problem["field"] == "notify.url"

        page = await api.client.post(f"/console/jobs/{job['id']}", data=edit_form(job, csrf, **{"notify.url": bad}))
        assert page.status_code == 422
        assert field_error(page, "notify.url") == problem["message"]
        assert 'id="notify.url" name="notify.url" type="url" value="' + html.escape(bad) in page.text  # kept
    assert await job_of(api, job["id"]) == job  # nothing was written


async def test_an_edit_without_the_csrf_token_is_refused(api: Api) -> None:
    csrf = await sign_in(api)
    job = await create_job(api, "guarded")
    form = edit_form(job, csrf, **{"notify.url": "http://127.0.0.1:9/x"})
    del form["csrf_token"]
    assert (await api.client.post(f"/console/jobs/{job['id']}", data=form)).status_code == 403
    form["csrf_token"] = "not-the-sessions-token"
    assert (await api.client.post(f"/console/jobs/{job['id']}", data=form)).status_code == 403
    assert (await job_of(api, job["id"]))["notify"] is None


# -- bulk actions ---------------------------------------------------------------------------------


def bulk_form(csrf: str, action: str, **fields: str) -> dict[str, str]:
    return {"csrf_token": csrf, "action": action, **{f"selector.{k}": v for k, v in fields.items() if k != "limit"}} | (
        {"limit": fields["limit"]} if "limit" in fields else {}
    )


async def test_bulk_actions_change_the_matching_jobs_of_this_tenant_only(api: Api) -> None:
    csrf = await sign_in(api)
    tag = f"t{uuid.uuid4().hex[:6]}"
    mine = [(await create_job(api, f"{tag}-{i}", tags=[tag]))["id"] for i in range(3)]
    already = await create_job(api, f"{tag}-paused", tags=[tag], paused=True)
    untagged = await create_job(api, f"{tag}-untagged")
    their_target = {"kind": "nats", "subject": "tenant.other.console"}
    theirs = [await create_job(api, f"{tag}-theirs-{i}", api.other, tags=[tag], target=their_target) for i in range(2)]

    # Pause: every matching job, once; the list afterwards is filtered by the selector.
    paused = await api.client.post("/console/jobs/bulk", data=bulk_form(csrf, "pause", tag=tag), follow_redirects=False)
    assert (paused.status_code, paused.headers["location"]) == (303, f"/console/jobs?tag={tag}")
    listed = await api.client.get(paused.headers["location"])
    assert flash_of(listed) == "4 jobs matched; 3 were paused. The others were not active."
    for job_id in [*mine, already["id"]]:
        assert (await job_of(api, job_id))["status"] == "paused"
    assert (await job_of(api, untagged["id"]))["status"] == "active"

    # Resume with a limit: some, and "more" in words; the repeat reaches the rest.
    resumed = await api.client.post("/console/jobs/bulk", data=bulk_form(csrf, "resume", tag=tag, limit="3"))
    assert flash_of(resumed) == "4 jobs matched; 3 were resumed. More remain: repeat the action."
    resumed = await api.client.post("/console/jobs/bulk", data=bulk_form(csrf, "resume", tag=tag, limit="3"))
    assert flash_of(resumed) == "4 jobs matched; 1 was resumed. The others were not paused."

    # Delete asks first: a page of what would go, and nothing gone yet.
    asked = await api.client.post("/console/jobs/bulk", data=bulk_form(csrf, "delete", tag=tag, namePrefix=tag))
    assert asked.status_code == 200
    assert "4 jobs match" in asked.text and f"{tag}-paused" in asked.text and "theirs" not in asked.text
    assert 'name="confirm" value="yes"' in asked.text
    assert (await job_of(api, mine[0]))["status"] == "active"
    confirmed = bulk_form(csrf, "delete", tag=tag, namePrefix=tag) | {"confirm": "yes"}
    deleted = await api.client.post("/console/jobs/bulk", data=confirmed)
    assert flash_of(deleted) == "4 jobs matched; 4 were deleted."
    assert "No job matches these filters" in deleted.text
    for job_id in [*mine, already["id"]]:
        assert (await api.client.get(f"/jobs/{job_id}", headers=api.headers)).status_code == 404
    assert (await job_of(api, untagged["id"]))["status"] == "active"

    # The other tenant's jobs with the same tag: untouched by all of it.
    for job in theirs:
        now = await job_of(api, job["id"], api.other)
        assert (now["status"], now["version"]) == ("active", job["version"])


async def test_bad_bulk_input_is_shown_beside_its_field_and_changes_nothing(api: Api) -> None:
    csrf = await sign_in(api)
    job = await create_job(api, "bystander", tags=["keep"])
    cases = [
        ({}, "selector", "name at least one of tag, namePrefix, status, metadata"),
        ({"tag": "two words"}, "selector.tag", "only letters, digits and _ . : / = -"),
        ({"tag": "keep", "limit": "0"}, "limit", "Expected `int` >= 1"),
        ({"tag": "keep", "limit": "1001"}, "limit", "Expected `int` <= 1000"),
        ({"tag": "keep", "limit": "many"}, "limit", "must be a whole number"),
        ({"status": "sleeping"}, "selector.status", "Invalid enum value 'sleeping'"),
    ]
    for fields, field, message in cases:
        for action in ("pause", "delete"):
            page = await api.client.post("/console/jobs/bulk", data=bulk_form(csrf, action, **fields))
            assert page.status_code == 422, (fields, page.text[-500:])
            assert message in field_error(page, field)
    unknown = await api.client.post("/console/jobs/bulk", data=bulk_form(csrf, "explode", tag="keep"))
    assert unknown.status_code == 400
    assert await job_of(api, job["id"]) == job


async def test_a_bulk_action_without_the_csrf_token_is_refused(api: Api) -> None:
    await sign_in(api)
    job = await create_job(api, "guarded-bulk", tags=["guarded"])
    for action in ("pause", "delete"):
        form = {"action": action, "selector.tag": "guarded", "confirm": "yes"}
        assert (await api.client.post("/console/jobs/bulk", data=form)).status_code == 403
    assert await job_of(api, job["id"]) == job
