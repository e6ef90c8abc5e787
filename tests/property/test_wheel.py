"""``schedsvc._timing.TimingWheel`` against a heap-based reference over random operation sequences.

Properties: no timer pops before its deadline, none is missed by a ``pop_due(now)`` with
``now >= deadline``, none pops twice, pops come in deadline order, a limit returns the earliest
timers, cancel is True exactly for pending handles (stale handles give False), and
``next_deadline``/``len`` agree with the reference after every step.
"""

from __future__ import annotations

import array
import heapq
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from schedsvc._timing import TimingWheel

# Deltas from the current time: behind the clock, within the lowest levels, across every level,
# and beyond the wheel's span (2**36 ticks) into the overflow list.
DELTAS = st.one_of(
    st.integers(-2_000, 2_000),
    st.integers(-10, 300_000),
    st.integers(0, 2**37),
    st.sampled_from([0, 1, 63, 64, 4095, 4096, 2**36 - 1, 2**36, 2**36 + 1, 2**42]),
)
ADVANCES = st.one_of(
    st.integers(-500, 0),
    st.integers(0, 2_000),
    st.integers(0, 400_000),
    st.integers(0, 2**38),
)


class WheelAgainstHeap(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.wheel: TimingWheel
        self.now = 0
        self.pending: dict[int, tuple[int, int]] = {}  # handle -> (deadline, key)
        self.heap: list[tuple[int, int, int]] = []  # (deadline, key, handle), lazily pruned
        self.stale: list[int] = []
        self.next_key = 0

    @initialize(start=st.integers(-(2**50), 2**50), tick=st.sampled_from([1, 1, 7, 1000]))
    def start(self, start: int, tick: int) -> None:
        self.wheel = TimingWheel(start, tick)
        self.now = start

    def _remember(self, handle: int, deadline: int, key: int) -> None:
        assert handle not in self.pending
        self.pending[handle] = (deadline, key)
        heapq.heappush(self.heap, (deadline, key, handle))

    def _prune(self) -> None:
        while self.heap and self.heap[0][2] not in self.pending:
            heapq.heappop(self.heap)

    @rule(delta=DELTAS)
    def insert(self, delta: int) -> None:
        deadline, key = self.now + delta, self.next_key
        self.next_key += 1
        self._remember(self.wheel.insert(deadline, key), deadline, key)

    @rule(deltas=st.lists(DELTAS, max_size=40), as_array=st.booleans())
    def insert_many(self, deltas: list[int], as_array: bool) -> None:
        deadlines = [self.now + d for d in deltas]
        keys = list(range(self.next_key, self.next_key + len(deltas)))
        self.next_key += len(deltas)
        if as_array:
            handles = self.wheel.insert_many(array.array("q", deadlines), array.array("Q", keys))
        else:
            handles = self.wheel.insert_many(deadlines, keys)
        assert len(handles) == len(deltas)
        for handle, deadline, key in zip(handles, deadlines, keys, strict=True):
            self._remember(handle, deadline, key)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def cancel_pending(self, data: st.DataObject) -> None:
        handle = data.draw(st.sampled_from(sorted(self.pending)))
        assert self.wheel.cancel(handle) is True
        del self.pending[handle]
        self.stale.append(handle)

    @rule(data=st.data())
    def cancel_stale_or_unknown(self, data: st.DataObject) -> None:
        unknown = st.one_of(st.integers(0, 2**64 - 1), st.integers(-(2**70), -1))
        handle = data.draw(st.sampled_from(self.stale) if self.stale else unknown)
        # A drawn "unknown" int can collide with a live handle; then it must cancel it.
        assert self.wheel.cancel(handle) is (handle in self.pending)
        if self.pending.pop(handle, None) is not None:
            self.stale.append(handle)

    @rule(data=st.data())
    def cancel_many(self, data: st.DataObject) -> None:
        pool = sorted(self.pending) + self.stale + [2**63 + 5]
        handles = data.draw(st.lists(st.sampled_from(pool), max_size=10, unique=True))
        expected = sum(1 for h in handles if h in self.pending)
        assert self.wheel.cancel_many(handles) == expected
        for h in handles:
            if h in self.pending:
                del self.pending[h]
                self.stale.append(h)

    @rule(advance=ADVANCES, limit=st.one_of(st.none(), st.integers(0, 30)))
    def pop_due(self, advance: int, limit: int | None) -> None:
        now = self.now + advance
        keys, deadlines = self.wheel.pop_due(now, limit)
        due = sorted(d for d, _ in self.pending.values() if d <= now)
        # Deadline order, exactly the earliest due ones; among equal deadlines at a limit's cut
        # any may be chosen, so match the popped timers by key.
        assert deadlines == (due if limit is None else due[:limit])
        by_key = {k: h for h, (_, k) in self.pending.items()}
        for key, deadline in zip(keys, deadlines, strict=True):
            handle = by_key.pop(key)  # KeyError: popped twice or never inserted
            assert self.pending.pop(handle) == (deadline, key)
            self.stale.append(handle)
        self.now = max(self.now, now)

    @invariant()
    def agrees_with_reference(self) -> None:
        if not hasattr(self, "wheel"):
            return
        assert len(self.wheel) == len(self.pending)
        self._prune()
        assert self.wheel.next_deadline() == (self.heap[0][0] if self.heap else None)


WheelAgainstHeap.TestCase.settings = settings(
    max_examples=int(os.environ.get("TIMING_EXAMPLES", "100")),
    stateful_step_count=30,
    deadline=None,
    derandomize=not os.environ.get("TIMING_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow],
)
TestWheelAgainstHeap = WheelAgainstHeap.TestCase


def test_wheel_memory_per_timer_and_buffer_inputs() -> None:
    wheel = TimingWheel(0)
    n = 100_000
    deadlines = array.array("q", range(1, 3 * n, 3))
    handles = wheel.insert_many(deadlines, array.array("Q", range(n)))
    assert len(wheel) == n == len(handles)
    assert wheel.memory_bytes() / len(wheel) <= 64
    # Raw native-endian bytes are accepted too (e.g. the output of next_fires).
    wheel.insert_many(array.array("q", [5, 6]).tobytes(), [n, n + 1])
    keys, popped = wheel.pop_due(6)
    assert keys == [0, 1, n, n + 1]
    assert popped == [1, 4, 5, 6]
    assert wheel.cancel_many(array.array("Q", handles[1:10])) == 8
    assert wheel.next_deadline() == 31
