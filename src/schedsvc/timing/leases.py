"""Partition leases without a leader: heartbeats, fair share, take, give back, renew, release.

Every replica runs the same loop (:meth:`PartitionLeases.tick`, every ``heartbeat_seconds``):

1. Leases whose local validity ran out (renewals failed for too long) are dropped first: the listener
   stops publishing for them.
2. Heartbeat the membership document, count live members (both by the database clock), and compute
   the fair share ``ceil(partitions / members)``.
3. Renew the leases still held, read back what the database says this member owns, with epochs.
4. Above the fair share: give the surplus back at once (after the listener stopped using it). Below:
   take free or expired partitions (in random order, so joining replicas rarely collide).

A lease is valid locally until ``sent + remaining - margin``, where ``sent`` is the local monotonic
instant the read-back was sent and ``remaining`` the time left by the database clock: the database
evaluated it later than ``sent``, so this never overestimates, whatever the offset between clocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from schedsvc.domain.rules import describe_partitions
from schedsvc.domain.timing import LeaseGrant
from schedsvc.observability.metrics import LEASE_CHANGES, PARTITIONS_OWNED
from schedsvc.store.base import LeaseStore

log = logging.getLogger(__name__)


class LeaseListener(Protocol):
    """Told when this replica starts or stops owning partitions."""

    async def partitions_lost(self, partitions: Sequence[int]) -> None:
        """Stop publishing for ``partitions``; must not return before in-flight publishes are done."""

    async def partitions_gained(self, grants: dict[int, int]) -> None:
        """Start serving the partitions (``partition -> epoch``)."""


@dataclass(slots=True)
class _Held:
    epoch: int
    valid_until: float
    """Local monotonic instant after which this replica must no longer publish for the partition."""


def fair_share(partitions: int, members: int) -> int:
    """How many partitions each of ``members`` replicas aims at (the shares cover every partition)."""
    return math.ceil(partitions / max(1, members))


class PartitionLeases:
    """This replica's view of its leases, kept current by a heartbeat task."""

    def __init__(
        self,
        store: LeaseStore,
        member: str,
        partitions: int,
        *,
        ttl_seconds: float,
        heartbeat_seconds: float,
        listener: LeaseListener,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.member = member
        self.partitions = partitions
        self._ttl_ms = int(ttl_seconds * 1000)
        self._heartbeat = heartbeat_seconds
        # Room for one publish batch between the last validity check and the publish itself.
        self._margin = ttl_seconds / 5
        self._listener = listener
        self._clock = clock
        self._held: dict[int, _Held] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_heartbeat: float | None = None
        self.members = 0
        self.target = 0

    # -- queries used on the hot path -------------------------------------------------------------

    def holds(self, partition: int, epoch: int) -> bool:
        """Whether this replica may still publish for ``partition`` under lease ``epoch``."""
        held = self._held.get(partition)
        return held is not None and held.epoch == epoch and self._clock() < held.valid_until

    def epoch_of(self, partition: int) -> int | None:
        held = self._held.get(partition)
        return None if held is None else held.epoch

    @property
    def owned(self) -> dict[int, int]:
        """Partitions held now, with their epochs."""
        now = self._clock()
        return {p: h.epoch for p, h in self._held.items() if now < h.valid_until}

    @property
    def alive(self) -> bool:
        """Whether a heartbeat reached the database within the lease TTL."""
        return self._last_heartbeat is not None and self._clock() - self._last_heartbeat < self._ttl_ms / 1000

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join (first tick awaited, so the replica owns its share on return) and keep heartbeating."""
        await self._store.ensure_partitions(self.partitions)
        await self.tick()
        self._task = asyncio.create_task(self._run(), name=f"leases-{self.member}")

    async def stop(self) -> None:
        """Stop heartbeating and release every lease at once (graceful hand-off)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        released = sorted(self._held)
        self._held.clear()
        PARTITIONS_OWNED.set(0)
        if released:
            await self._listener.partitions_lost(released)
        try:
            await self._store.release(self.member, released)
            await self._store.forget_member(self.member)
        except Exception:
            log.exception("could not release leases on stop; they expire after the TTL")
            return
        LEASE_CHANGES.labels(change="released").inc(len(released))
        log.info("member %s left, released partitions %s", self.member, describe_partitions(released))

    async def _run(self) -> None:
        due = self._clock()
        while True:
            due += self._heartbeat
            await asyncio.sleep(max(0.0, due - self._clock()))
            due = max(due, self._clock() - self._heartbeat)  # after a stall, do not tick in a burst
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease heartbeat failed; leases lapse locally if this persists")

    # -- one round --------------------------------------------------------------------------------

    async def tick(self) -> None:
        """One heartbeat round (see the module docstring)."""
        await self._drop_lapsed()
        await self._store.heartbeat(self.member, self._ttl_ms)
        self._last_heartbeat = self._clock()
        live = await self._store.live_members()
        self.members = max(1, len(live))
        self.target = fair_share(self.partitions, self.members)
        await self._store.renew(self.member, sorted(self._held), self._ttl_ms)
        read_at, grants = await self._read_back()

        surplus = len(grants) - self.target
        if surplus > 0:
            # Give back the highest-numbered ones: deterministic, and any choice balances equally.
            give = sorted(g.partition for g in grants)[-surplus:]
            await self._give_back(give)
            grants = [g for g in grants if g.partition not in give]
        elif surplus < 0:
            free = await self._store.free_partitions()
            random.shuffle(free)
            if free:
                await self._store.acquire(self.member, free[:-surplus], self._ttl_ms)
                read_at, grants = await self._read_back()
        await self._apply(grants, read_at)

        if random.random() < 0.05:  # occasionally, any member tidies up after crashed ones
            await self._store.purge_members(older_than_ms=10 * self._ttl_ms)

    async def _read_back(self) -> tuple[float, list[LeaseGrant]]:
        sent = self._clock()
        return sent, await self._store.owned(self.member)

    async def _apply(self, grants: list[LeaseGrant], read_at: float) -> None:
        now_epochs = {g.partition: g.epoch for g in grants}
        lost = [p for p, h in self._held.items() if now_epochs.get(p) != h.epoch]
        if lost:
            for p in lost:
                del self._held[p]
            LEASE_CHANGES.labels(change="lost").inc(len(lost))
            log.warning("member %s lost partitions %s", self.member, describe_partitions(lost))
            await self._listener.partitions_lost(sorted(lost))
        gained: dict[int, int] = {}
        for g in grants:
            valid_until = read_at + g.remaining_ms / 1000 - self._margin
            held = self._held.get(g.partition)
            if held is None:
                gained[g.partition] = g.epoch
                self._held[g.partition] = _Held(g.epoch, valid_until)
            else:
                held.valid_until = valid_until
        PARTITIONS_OWNED.set(len(self._held))
        if gained:
            LEASE_CHANGES.labels(change="acquired").inc(len(gained))
            log.info("member %s acquired partitions %s", self.member, describe_partitions(gained))
            await self._listener.partitions_gained(gained)

    async def _give_back(self, partitions: Sequence[int]) -> None:
        for p in partitions:
            self._held.pop(p, None)
        PARTITIONS_OWNED.set(len(self._held))
        # Stop publishing first; only then may another member take over.
        await self._listener.partitions_lost(partitions)
        await self._store.release(self.member, partitions)
        LEASE_CHANGES.labels(change="released").inc(len(partitions))
        given = describe_partitions(partitions)
        log.info("member %s gave back partitions %s (fair share %d)", self.member, given, self.target)

    async def _drop_lapsed(self) -> None:
        now = self._clock()
        lapsed = sorted(p for p, h in self._held.items() if now >= h.valid_until)
        if lapsed:
            for p in lapsed:
                del self._held[p]
            PARTITIONS_OWNED.set(len(self._held))
            LEASE_CHANGES.labels(change="lapsed").inc(len(lapsed))
            log.warning("member %s: leases on %s lapsed locally", self.member, describe_partitions(lapsed))
            await self._listener.partitions_lost(lapsed)
