"""An in-process cache that change notices empty at once, with a bounded lifetime as the backstop.

Used for what every request or run would otherwise re-read from MongoDB although it almost never
changes: validated API keys (``api.auth``) and tenants' signing secrets (``execution._tenants``). A
change is announced on NATS (``NatsRunBus.publish_tenant_change``) and every process drops the affected
entries within the notice's delivery time. Two gaps are closed here rather than trusted away:

* a notice that arrives while a value is being read from the database: the read started before the
  change may return the old value, so a value is stored only if no notice arrived since its read began
  (:attr:`epoch`);
* notices missed while disconnected from NATS (core NATS does not replay them): when ``gaps()``, the
  count of reconnections, moves, everything is dropped. A process that missed a notice and never
  reconnected still drops every entry after ``lifetime`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class NoticedCache(Generic[K, V]):
    """``key -> value`` for at most ``lifetime`` seconds; entries are dropped by notices, in bulk on a gap."""

    def __init__(self, lifetime: float, max_entries: int = 50_000, gaps: Callable[[], int] | None = None) -> None:
        self._lifetime = lifetime
        self._max = max_entries
        self._gaps = gaps
        self._seen_gaps = gaps() if gaps else 0
        self._entries: dict[K, tuple[float, V]] = {}
        self.epoch = 0
        """Changes every time entries are dropped; read it before a database read and pass it to :meth:`put`."""

    def get(self, key: K) -> V | None:
        if self._gaps is not None and self._gaps() != self._seen_gaps:
            self._seen_gaps = self._gaps()
            self.clear()
            return None
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del self._entries[key]
            return None
        return hit[1]

    def put(self, key: K, value: V, epoch: int) -> None:
        """Store ``value`` read from the database after :attr:`epoch` was ``epoch`` (else it may be stale)."""
        if epoch != self.epoch:
            return
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self._lifetime, value)

    def drop(self, predicate: Callable[[K, V], bool]) -> int:
        """Drop the entries a change notice names; returns how many."""
        self.epoch += 1
        doomed = [k for k, (_, v) in self._entries.items() if predicate(k, v)]
        for k in doomed:
            del self._entries[k]
        return len(doomed)

    def clear(self) -> None:
        self.epoch += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
