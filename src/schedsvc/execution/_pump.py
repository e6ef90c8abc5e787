"""Bounded consumption of a pull consumer, shared by the run loop and the notification sender.

A process fetches only as many messages as it has free slots, each handled in its own task, so a busy
process leaves work to idle ones and nothing waits in a local queue past its ack deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from schedsvc.store.base import Delivery, Subscription

log = logging.getLogger(__name__)

D = TypeVar("D", bound=Delivery[Any])


@dataclass(eq=False)
class DeliveryPump(Generic[D]):
    """Fetches while fewer than ``capacity`` deliveries are in flight and hands each to ``handle`` in a task.

    Lifecycle: :meth:`start`; :meth:`stop_fetching` ends the loop (after the fetch under way, which
    ``fetch_timeout`` bounds); :meth:`drain` then waits for the tasks in flight.
    """

    subscription: Subscription[D]
    handle: Callable[[D], Coroutine[Any, Any, None]]
    capacity: int
    """Deliveries in flight at most."""
    batch_max: int
    """Messages one fetch asks for at most."""
    fetch_timeout: float
    error_pause: float
    """How long to wait after a failed fetch before the next."""
    what: str
    """What is fetched, for the log."""
    hand_back_when_stopping: bool = False
    """Put back at once (nak, no delay) what a fetch returns after stopping began, rather than handle it."""
    _inflight: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _slot_freed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _loop: asyncio.Task[None] | None = field(default=None, init=False)
    _stopping: bool = field(default=False, init=False)

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
            free = self.capacity - len(self._inflight)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                deliveries = await self.subscription.fetch(min(free, self.batch_max), self.fetch_timeout)
            except Exception:
                log.warning("fetching %s failed; retrying", self.what, exc_info=True)
                await asyncio.sleep(self.error_pause)
                continue
            for delivery in deliveries:
                if self._stopping and self.hand_back_when_stopping:
                    with contextlib.suppress(Exception):
                        await delivery.nak()
                    continue
                task = asyncio.create_task(self.handle(delivery))
                self._inflight.add(task)
                task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slot_freed.set()
