"""Bounded consumption of a pull consumer, shared by the run loop and the notification sender.

A process fetches only as many messages as it has free slots, each handled in its own task, so a busy
process leaves work to idle ones and nothing waits in a local queue past its ack deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from schedsvc.bus.consumers import Delivery, PullSubscription

log = logging.getLogger(__name__)

D = TypeVar("D", bound=Delivery[Any])


class DeliveryPump(Generic[D]):
    """Fetches while fewer than ``capacity`` deliveries are in flight and hands each to ``handle`` in a task.

    Lifecycle: :meth:`start`; :meth:`stop_fetching` ends the loop (after the fetch under way, which
    ``fetch_timeout`` bounds); :meth:`drain` then waits for the tasks in flight.
    """

    def __init__(
        self,
        subscription: PullSubscription[Any, D],
        handle: Callable[[D], Coroutine[Any, Any, None]],
        *,
        capacity: int,
        batch_max: int,
        fetch_timeout: float,
        error_pause: float,
        what: str,
        hand_back_when_stopping: bool = False,
    ) -> None:
        self._subscription = subscription
        self._handle = handle
        self._capacity = capacity
        self._batch_max = batch_max
        self._fetch_timeout = fetch_timeout
        self._error_pause = error_pause
        self._what = what
        """What is fetched, for the log."""
        self._hand_back_when_stopping = hand_back_when_stopping
        """Put back at once (nak, no delay) what a fetch returns after stopping began, rather than handle it."""
        self._inflight: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def fetching(self) -> bool:
        """Started, not stopping, and the loop is alive."""
        return self._loop is not None and not self._loop.done() and not self._stopping

    def start(self, name: str) -> None:
        self._loop = asyncio.create_task(self._fetch_loop(), name=name)

    async def stop_fetching(self) -> None:
        """End the loop; deliveries already handed out go on."""
        self._stopping = True
        self._slot_freed.set()
        if self._loop is not None:
            with contextlib.suppress(Exception):
                await self._loop

    async def drain(self, timeout: float) -> int:
        """Let the tasks in flight finish for up to ``timeout`` seconds, then cancel the rest; returns how many
        were cancelled."""
        if not self._inflight:
            return 0
        _, late = await asyncio.wait(set(self._inflight), timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        return len(late)

    async def _fetch_loop(self) -> None:
        while not self._stopping:
            free = self._capacity - len(self._inflight)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                deliveries = await self._subscription.fetch(min(free, self._batch_max), self._fetch_timeout)
            except Exception:
                log.warning("fetching %s failed; retrying", self._what, exc_info=True)
                await asyncio.sleep(self._error_pause)
                continue
            for delivery in deliveries:
                if self._stopping and self._hand_back_when_stopping:
                    with contextlib.suppress(Exception):
                        await delivery.nak()
                    continue
                task = asyncio.create_task(self._handle(delivery))
                self._inflight.add(task)
                task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slot_freed.set()
