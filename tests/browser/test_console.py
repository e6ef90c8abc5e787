"""The console in a real browser against a real service: sign in, create and edit jobs through the forms,
see fires, pause/resume, run now, failures, sign out; and the session, CSRF and CSP rules it relies on."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
from playwright.async_api import Page, expect
from tests.browser.conftest import OTHER_TENANT, Console, screenshot, sign_in

from schedsvc.bus.nats import announce_tenant_change
from schedsvc.store import MongoTenantStore, connect, database


async def test_a_job_is_created_run_paused_and_resumed_through_the_forms(console: Console, page: Page) -> None:
    name = f"nightly-{uuid.uuid4().hex[:6]}"
    await sign_in(page, console)
    await screenshot(page, "jobs-empty")
    await page.keyboard.press("Tab")  # the keyboard's first stop skips the navigation
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.get_by_role("link", name="New job").first.click()

    # A bad cron expression comes back as an error beside its field, with what was typed kept.
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Cron expression (cron)").fill("61 * * * *")
    await page.get_by_label("Time zone (cron, calendar)").fill("Europe/Berlin")
    await page.get_by_label("URL (http)").fill(console.receiver.url("/ok"))
    await page.get_by_role("button", name="Create job").click()
    expression = page.get_by_label("Cron expression (cron)")
    await expect(expression).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#schedule\\.expression-error")).to_contain_text("cron")
    await expect(page.get_by_label("Name")).to_have_value(name)
    await screenshot(page, "new-job-field-error")

    await expression.fill("30 2 * * *")
    await page.get_by_role("button", name="Create job").click()
    await page.wait_for_url(re.compile(r".*/console/jobs/[^/]+$"))
    await expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    fires = page.locator("ol.fires li")
    await expect(fires).to_have_count(10)
    await expect(fires.first).to_contain_text("02:30:00 CE")  # Berlin time, CET or CEST

    await page.get_by_role("button", name=f"Pause {name}").click()
    await expect(page.locator("h1 .status")).to_have_text("paused")
    await page.get_by_role("button", name=f"Resume {name}").click()
    await expect(page.locator("h1 .status")).to_have_text("active")

    await page.get_by_role("button", name=f"Run {name} now").click()
    # The page reloads itself until the run shows up: no script, a meta refresh.
    await expect(page.locator("table.runs .outcome.succeeded")).to_have_count(1, timeout=20_000)
    await expect(page.locator("svg rect.bar.succeeded")).to_have_count(1)
    await screenshot(page, "job")

    await page.goto(f"{console.url}/console/jobs")
    row = page.get_by_role("row").filter(has_text=name)
    await expect(row.locator(".status")).to_have_text("active")
    await expect(row).to_contain_text("At 02:30 AM (Europe/Berlin)")
    await expect(row.locator("svg.spark rect.bar.succeeded")).to_have_count(1)  # its recent runs at a glance
    await screenshot(page, "jobs")
    await page.set_viewport_size({"width": 390, "height": 844})
    await expect(row.locator(".status")).to_be_visible()
    await screenshot(page, "jobs-phone")

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/console/sign-in")
    await page.goto(f"{console.url}/console/jobs")
    await expect(page).to_have_url(re.compile(r".*/console/sign-in$"))


async def test_a_failing_job_shows_its_error_on_its_page_and_on_failures(console: Console, page: Page) -> None:
    name = f"failing-{uuid.uuid4().hex[:6]}"
    await sign_in(page, console)
    await page.goto(f"{console.url}/console/jobs/new")
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Kind").first.select_option("interval")
    await page.get_by_label("Every N seconds (interval)").fill("86400")
    await page.get_by_label("URL (http)").fill(console.receiver.url("/fail"))
    await page.get_by_label("Attempts per run").fill("1")
    await page.get_by_role("button", name="Create job").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    await expect(page.locator("p.summary")).to_have_count(1)

    await page.get_by_role("button", name=f"Run {name} now").click()
    failed = page.locator("table.runs tbody tr").filter(has=page.locator(".outcome.failed"))
    await expect(failed).to_have_count(1, timeout=20_000)
    await expect(failed.locator('td[data-label="Attempts"]')).to_have_text("1")
    detail = failed.locator('td[data-label="Detail"]')
    await expect(detail.locator(".error-text")).to_contain_text("HTTP 500")
    await expect(detail.locator(".snippet")).to_have_text("target exploded")  # what the target answered

    await page.get_by_role("link", name="Failures").click()
    row = page.locator("table.runs tbody tr").filter(has_text=name)
    await expect(row).to_have_count(1)
    await expect(row.locator(".outcome")).to_have_text("failed")
    await screenshot(page, "failures")

    # Retry from the failures page: one more attempt of the same run, shown in its job's history.
    await row.get_by_role("button", name=re.compile(r"^Retry the run of ")).click()
    await page.wait_for_url(re.compile(r".*/console/jobs/[^/]+$"))
    await expect(page.locator(".flash")).to_contain_text("Retry queued")
    retried = page.locator("table.runs tbody tr").filter(has=page.locator(".outcome.failed"))
    await expect(retried.locator('td[data-label="Attempts"]')).to_have_text("2", timeout=20_000)
    await expect(retried).to_have_count(1)  # the same run, not a new one

    await page.get_by_role("link", name="Failures").click()
    await page.set_viewport_size({"width": 390, "height": 844})
    await screenshot(page, "failures-phone")


async def test_jobs_can_be_filtered_edited_with_the_version_and_deleted(console: Console, page: Page) -> None:
    tag = f"t{uuid.uuid4().hex[:6]}"
    await sign_in(page, console)
    for i in range(2):
        await page.goto(f"{console.url}/console/jobs/new")
        await page.get_by_label("Name").fill(f"{tag}-job-{i}")
        await page.get_by_label("Cron expression (cron)").fill("0 9 * * MON-FRI")
        await page.get_by_label("Tags").fill(tag)
        await page.get_by_label("Kind").nth(1).select_option("nats")
        await page.get_by_label("NATS subject (nats)").fill("tenant.dev.console")
        await page.get_by_role("button", name="Create job").click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text(f"{tag}-job-{i}")

    await page.goto(f"{console.url}/console/jobs?tag={tag}")
    await expect(page.locator("table.jobs tbody tr")).to_have_count(2)
    await page.get_by_label("Name starts with").fill(f"{tag}-job-1")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("table.jobs tbody tr")).to_have_count(1)
    await page.get_by_role("button", name=f"Pause {tag}-job-1").click()  # from the list: back to the same list
    await expect(page.locator("table.jobs tbody tr .status")).to_have_text("paused")
    await expect(page).to_have_url(re.compile(rf".*/console/jobs\?.*name={tag}-job-1"))
    await page.get_by_role("link", name=f"{tag}-job-1").click()

    # Edit with a stale version: someone else changed the job after this page was rendered.
    job_url = page.url
    job_id = job_url.rsplit("/", 1)[1]
    async with httpx.AsyncClient(base_url=console.url, headers={"Authorization": f"Bearer {console.key}"}) as api:
        response = await api.patch(f"/jobs/{job_id}", json={"description": "changed by the API"})
        assert response.status_code == 200
    await page.get_by_label("Description").fill("changed in the console")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.locator(".flash.error")).to_contain_text("changed this job while you edited it")
    await page.get_by_label("Description").fill("changed in the console")
    await page.get_by_label("Cron expression (cron)").fill("0 10 1 * *")
    await page.get_by_label("Time zone (cron, calendar)").fill("Europe/Berlin")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.locator(".flash")).to_have_text("Saved.")
    await expect(page.locator("p.summary")).to_contain_text("changed in the console")
    await expect(page.locator("ol.fires li").first).to_contain_text("10:00:00")
    # Ten monthly fires in Berlin always span a daylight-saving change, marked on the fire after it.
    await expect(page.locator("ol.fires .dst").first).to_contain_text("UTC offset")
    await screenshot(page, "job-edited-dst")

    await page.get_by_role("link", name="Delete this job…").click()
    await page.get_by_role("button", name="Delete the job").click()
    await page.wait_for_url("**/console/jobs")
    await expect(page.locator(".flash")).to_have_text("Deleted.")
    await page.goto(job_url)
    await expect(page.get_by_role("heading", level=1)).to_have_text("404")


async def test_sessions_are_server_side_csrf_checked_and_tenant_scoped(console: Console, page: Page) -> None:
    await page.goto(f"{console.url}/console/sign-in")
    await screenshot(page, "sign-in")
    await page.get_by_label("API key").fill("sk_0000000000000000_" + "x" * 43)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator(".flash.error")).to_contain_text("unknown or revoked")

    await sign_in(page, console)
    cookies = await page.context.cookies()
    [session] = [c for c in cookies if c["name"] == "schedsvc_console"]
    assert (session["httpOnly"], session["sameSite"], session["path"]) == (True, "Strict", "/console")
    assert console.key not in str(cookies)

    async with httpx.AsyncClient(base_url=console.url, cookies={"schedsvc_console": session["value"]}) as browserless:
        listed = await browserless.get("/console/jobs")
        assert listed.status_code == 200
        policy = listed.headers["content-security-policy"]
        assert "unsafe-inline" not in policy and "default-src 'none'" in policy
        refused = await browserless.post("/console/jobs", data={"name": "forged"})  # no CSRF token
        assert refused.status_code == 403
        assert "No job matches" in (await browserless.get("/console/jobs?name=forged")).text

    # Another tenant sees none of this tenant's jobs, and not one of its job pages.
    job_link = page.locator("table.jobs tbody a").first
    job_path = await job_link.get_attribute("href")
    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, console, console.other_key)
    await expect(page.locator("p.empty")).to_contain_text("no jobs yet")
    await page.goto(f"{console.url}{job_path}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("404")


async def test_revoking_the_key_ends_its_console_sessions(console: Console) -> None:
    mongo = connect(console.settings)
    store = MongoTenantStore(database(mongo, console.settings))
    key = await store.create_key(OTHER_TENANT)
    async with httpx.AsyncClient(base_url=console.url) as browserless:
        signed_in = await browserless.post("/console/sign-in", data={"api_key": key.key})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/console/jobs"
        assert (await browserless.get("/console/jobs")).status_code == 200
        assert await store.revoke_key(key.key_id)
        await mongo.close()
        assert await announce_tenant_change(console.settings, "key", key.key_id)  # as `schedsvc tenants revoke`
        for _ in range(40):
            response = await browserless.get("/console/jobs")
            if response.status_code == 303:
                break
            await asyncio.sleep(0.05)
        assert (response.status_code, response.headers["location"]) == (303, "/console/sign-in")
        again = await browserless.post("/console/sign-in", data={"api_key": key.key})
        assert again.status_code == 401


async def test_pausing_from_a_stale_page_a_job_someone_else_paused_says_it_is_paused(
    console: Console, page: Page
) -> None:
    """The console pauses through the API's own use case (``If-Match`` semantics: 412 for a stale version);
    when the job is already as asked, it says so rather than that nothing was done."""
    name = f"stale-{uuid.uuid4().hex[:6]}"
    body = {
        "name": name,
        "schedule": {"kind": "interval", "seconds": 3600},
        "target": {"kind": "nats", "subject": "tenant.dev.console"},
    }
    async with httpx.AsyncClient(base_url=console.url, headers={"Authorization": f"Bearer {console.key}"}) as api:
        job = (await api.post("/jobs", json=body)).json()
        await sign_in(page, console)
        await page.goto(f"{console.url}/console/jobs/{job['id']}")  # rendered at version 1
        assert (await api.post(f"/jobs/{job['id']}/pause")).status_code == 200
        await page.get_by_role("button", name=f"Pause {name}").click()
        await expect(page.locator(".flash")).to_have_text(f"{name} is paused.")
        await page.goto(f"{console.url}/console/jobs/{job['id']}")  # now at version 2
        assert (await api.patch(f"/jobs/{job['id']}", json={"tags": ["changed"]})).status_code == 200
        await page.get_by_role("button", name=f"Resume {name}").click()
        await expect(page.locator(".flash.error")).to_contain_text("The job changed since the page was shown")
        assert (await api.get(f"/jobs/{job['id']}")).json()["status"] == "paused"


async def test_the_jobs_matching_a_tag_are_paused_then_deleted_after_a_confirmation(
    console: Console, page: Page
) -> None:
    """A bulk action from the filtered list: the bulk form starts from the filters, pause reports what it did
    in words, delete shows what would go before anything does; another tenant's jobs with the same tag stay."""
    tag = f"bulk{uuid.uuid4().hex[:6]}"
    body = {"schedule": {"kind": "interval", "seconds": 3600}, "tags": [tag]}
    async with (
        httpx.AsyncClient(base_url=console.url, headers={"Authorization": f"Bearer {console.key}"}) as api,
        httpx.AsyncClient(base_url=console.url, headers={"Authorization": f"Bearer {console.other_key}"}) as other,
    ):
        for i in range(3):
            target = {"kind": "nats", "subject": "tenant.dev.console"}
            assert (await api.post("/jobs", json={**body, "name": f"{tag}-{i}", "target": target})).status_code == 201
        target = {"kind": "nats", "subject": f"tenant.{OTHER_TENANT}.console"}
        theirs = (await other.post("/jobs", json={**body, "name": f"{tag}-theirs", "target": target})).json()

        await sign_in(page, console)
        await page.goto(f"{console.url}/console/jobs?tag={tag}")
        await expect(page.locator("table.jobs tbody tr")).to_have_count(3)
        await expect(page.get_by_label("Tag is")).to_have_value(tag)  # the filters fill the bulk form in
        await page.get_by_role("button", name="Pause matching jobs").click()
        await expect(page.locator(".flash")).to_have_text("3 jobs matched; 3 were paused.")
        await expect(page.locator("table.jobs tbody tr .status")).to_have_text(["paused"] * 3)

        await page.get_by_role("button", name="Delete matching jobs…").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Delete the matching jobs?")
        await expect(page.locator("ul.matched li")).to_have_count(3)
        await screenshot(page, "bulk-delete-confirm")
        await page.get_by_role("button", name="Delete 3 jobs").click()
        await expect(page.locator(".flash")).to_have_text("3 jobs matched; 3 were deleted.")
        await expect(page.locator("p.empty")).to_contain_text("No job matches these filters")

        still = await other.get(f"/jobs/{theirs['id']}")
        assert (still.status_code, still.json()["status"], still.json()["version"]) == (200, "active", 1)
