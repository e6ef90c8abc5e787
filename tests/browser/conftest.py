"""A real service (``schedsvc serve``, every module, sessions in Redis) and Debian's Chromium driven by
Playwright, for the console's flows. ``make chromium`` installs the browser; Playwright never downloads one."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright
from redis.asyncio import Redis
from tests.conftest import DEV_KEY, create_tenant, running_service

from schedsvc.config import Settings
from schedsvc.testing import Reply, WebhookReceiver

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OTHER_TENANT = "console-other"
SCREENSHOTS = os.environ.get("SCHEDSVC_CONSOLE_SCREENSHOTS")
"""A directory to save the pages' screenshots in (docs/console is refreshed with it); none by default."""


@dataclasses.dataclass
class Console:
    url: str
    key: str
    other_key: str
    settings: Settings
    receiver: WebhookReceiver


@pytest.fixture(scope="module")
async def console(
    service_settings: Callable[..., Settings], redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Console]:
    settings = service_settings(
        "console",
        redis_url=redis_url,
        partitions=4,
        target_allow_networks=(ipaddress.ip_network("127.0.0.0/8"),),
    )
    receiver = WebhookReceiver(default=Reply(200))
    receiver.routes["/fail"] = lambda call, n: Reply(500, b"target exploded")
    await receiver.start()
    try:
        with running_service(settings, tmp_path_factory.mktemp("console") / "service.log") as server:
            other_key = await create_tenant(settings, OTHER_TENANT)
            yield Console(server.url, DEV_KEY, other_key, settings, receiver)
    finally:
        await receiver.close()
        await _forget_sessions(redis_url, f"{settings.prefix}:console-sessions")


async def _forget_sessions(redis_url: str, namespace: str) -> None:
    """The machine's Redis is shared: remove the sessions these tests left (they would expire in 8 hours)."""
    client = Redis.from_url(redis_url)
    try:
        async for key in client.scan_iter(match=f"{namespace}:*"):
            await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's package 'chromium'")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh browser context; at the end, no page may have broken its Content-Security-Policy."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(10_000)
    refused: list[str] = []
    page.on(
        "console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None
    )
    yield page
    await context.close()
    assert refused == []


async def screenshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        await asyncio.to_thread(Path(SCREENSHOTS).mkdir, parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


async def sign_in(page: Page, console: Console, key: str | None = None) -> None:
    await page.goto(f"{console.url}/console/")
    await page.get_by_label("API key").fill(key or console.key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/console/jobs")
