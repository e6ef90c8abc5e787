"""The sweeper's loop without I/O: what it asks the ledger, what it publishes, and that a failing sweep does not
end it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from schedsvc.domain.errors import StoreUnavailableError
from schedsvc.domain.models import RunMessage
from schedsvc.domain.rules import partition_of
from schedsvc.domain.runs import StrandedRetry, retry_message_id
from schedsvc.domain.time import utcnow
from schedsvc.execution.sweeper import STRANDED_AFTER_SECONDS, RetrySweeper

REOPENED = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
STRANDED = StrandedRetry(
    RunMessage("job-1", "acme", 1_795_000_000_000, 1_795_000_100_000, "scheduled", 0),
    retry_message_id("job-1:1795000000000", 1, REOPENED),
)


class Ledger:
    """Answers ``stranded_retries`` from a script: an exception is raised, a list returned."""

    def __init__(self, *answers: list[StrandedRetry] | Exception) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[datetime, int]] = []

    async def stranded_retries(self, reopened_before: datetime, limit: int) -> list[StrandedRetry]:
        self.asked.append((reopened_before, limit))
        answer = self.answers.pop(0) if self.answers else []
        if isinstance(answer, Exception):
            raise answer
        return answer


class Publisher:
    def __init__(self) -> None:
        self.published: list[tuple[list[RunMessage], list[int], list[str]]] = []

    async def publish_runs(
        self, messages: Sequence[RunMessage], partitions: Sequence[int], message_ids: Sequence[str] | None = None
    ) -> int:
        assert message_ids is not None
        self.published.append((list(messages), list(partitions), list(message_ids)))
        return len(messages)


def sweeper(ledger: Ledger, publisher: Publisher, **options: Any) -> RetrySweeper:
    return RetrySweeper(cast(Any, ledger), cast(Any, publisher), 8, **options)


async def test_a_sweep_publishes_the_stranded_retries_under_their_own_message_ids() -> None:
    ledger, publisher = Ledger([STRANDED]), Publisher()
    assert await sweeper(ledger, publisher, batch=50).sweep() == 1
    [(before, limit)] = ledger.asked
    assert limit == 50
    assert abs(utcnow() - timedelta(seconds=STRANDED_AFTER_SECONDS) - before) < timedelta(seconds=1)
    assert publisher.published == [([STRANDED.message], [partition_of("job-1", 8)], [STRANDED.message_id])]
    assert await sweeper(Ledger([]), publisher).sweep() == 0 and len(publisher.published) == 1  # nothing to do


async def test_a_failing_sweep_is_logged_and_the_next_one_tries_again(caplog: Any) -> None:
    ledger, publisher = Ledger(StoreUnavailableError("MongoDB is down"), [STRANDED]), Publisher()
    running = sweeper(ledger, publisher, interval=0.01)
    running.start()
    try:
        for _ in range(200):
            if publisher.published:
                break
            await asyncio.sleep(0.01)
    finally:
        await running.stop()
    assert len(publisher.published) == 1
    assert "sweeping stranded retries on demand failed: StoreUnavailableError" in caplog.text


class SwallowingPublisher(Publisher):
    """Publishes slowly and turns a cancellation into its own error, as the NATS client's publish_async does."""

    async def publish_runs(
        self, messages: Sequence[RunMessage], partitions: Sequence[int], message_ids: Sequence[str] | None = None
    ) -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("too many stalled messages") from None
        return 0


async def test_stop_ends_the_sweeper_even_when_a_library_swallows_the_cancellation() -> None:
    running = sweeper(Ledger(*[[STRANDED]] * 100), SwallowingPublisher(), interval=0.01)
    running.start()
    await asyncio.sleep(0.1)  # inside a publish by now
    await asyncio.wait_for(running.stop(), 2)
