"""Waiting for what a service does in the background (a run finishing, a message arriving), with a bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

WAIT = 30.0
"""Seconds a test waits for the service by default: generous, so a busy machine does not fail it."""


async def wait_until(check: Callable[[], Awaitable[Any]], timeout: float = WAIT) -> Any:
    """``check()``'s first truthy value, polled every 50 ms; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)
