"""The bounded fetch loop shared by the run loop and the notification sender: no NATS, a scripted consumer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from schedsvc.bus.consumers import JetStreamDelivery
from schedsvc.execution._pump import DeliveryPump


class _Msg:
    def __init__(self) -> None:
        self.naks = 0

    async def nak(self, delay: float | None = None) -> None:
        self.naks += 1


class _Consumer:
    """Hands out ``messages`` in the batch sizes asked for; then nothing, as an idle stream does."""

    def __init__(self, messages: list[int]) -> None:
        self.pending = [JetStreamDelivery(m, 1, _Msg()) for m in messages]  # type: ignore[arg-type]
        self.asked: list[int] = []
        self.fetched = asyncio.Event()
        self.gate: asyncio.Event | None = None

    async def fetch(self, batch: int, timeout: float) -> list[JetStreamDelivery[int]]:
        self.asked.append(batch)
        if self.gate is not None:
            await self.gate.wait()
        taken, self.pending = self.pending[:batch], self.pending[batch:]
        if taken:
            self.fetched.set()
        else:
            await asyncio.sleep(timeout)
        return taken


def _pump(consumer: _Consumer, handle: Any, **options: Any) -> DeliveryPump[JetStreamDelivery[int]]:
    settings: dict[str, Any] = {"capacity": 2, "batch_max": 64, "fetch_timeout": 0.01, "error_pause": 0.01}
    return DeliveryPump(consumer, handle, what="tests", **{**settings, **options})  # type: ignore[arg-type]


async def test_it_fetches_no_more_than_its_free_slots() -> None:
    release = asyncio.Event()
    handled: list[int] = []

    async def handle(delivery: JetStreamDelivery[int]) -> None:
        handled.append(delivery.message)
        await release.wait()

    consumer = _Consumer([1, 2, 3])
    pump = _pump(consumer, handle)
    pump.start("test-pump")
    await consumer.fetched.wait()
    await asyncio.sleep(0.05)
    assert handled == [1, 2] and consumer.asked == [2]  # both slots taken: no fetch until one frees
    release.set()
    await asyncio.sleep(0.05)
    assert handled == [1, 2, 3]
    await pump.stop_fetching()
    assert not pump.fetching
    assert await pump.drain(1.0) == 0


async def test_drain_cancels_what_outlives_the_grace() -> None:
    async def handle(delivery: JetStreamDelivery[int]) -> None:
        await asyncio.Event().wait()  # never finishes

    consumer = _Consumer([1])
    pump = _pump(consumer, handle)
    pump.start("test-pump")
    await consumer.fetched.wait()
    await asyncio.sleep(0)
    await pump.stop_fetching()
    assert await pump.drain(0.01) == 1


@pytest.mark.parametrize("hand_back", [True, False])
async def test_what_a_fetch_returns_after_stopping_began_goes_back_when_asked(hand_back: bool) -> None:
    handled: list[int] = []

    async def handle(delivery: JetStreamDelivery[int]) -> None:
        handled.append(delivery.message)

    consumer = _Consumer([])
    consumer.gate = asyncio.Event()  # the fetch under way returns only once stopping began
    pump = _pump(consumer, handle, hand_back_when_stopping=hand_back)
    pump.start("test-pump")
    await asyncio.sleep(0)
    stopping = asyncio.create_task(pump.stop_fetching())
    await asyncio.sleep(0)
    late = JetStreamDelivery(7, 1, _Msg())  # type: ignore[arg-type]
    consumer.pending = [late]
    consumer.gate.set()
    await stopping
    await pump.drain(1.0)
    assert (late._msg.naks, handled) == ((1, []) if hand_back else (0, [7]))
