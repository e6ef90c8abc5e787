"""The wheel registry: which jobs this replica has armed in the Rust timing wheel, and which are in flight.

A job is in exactly one of three places: armed (in the wheel, under a fresh key), in flight (taken out
by the dispatcher, being published and advanced), or nowhere (not due within the horizon, not owned, or
forgotten). A change that arrives for an in-flight job marks it *stale*: it is re-read from the database
once its batch is done, because the batch's conditional advance decides what the database holds.
Arming, cancelling and taking go through the wheel's batch calls.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence

from schedsvc._timing import TimingWheel
from schedsvc.timing.planning import TimedJob


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class WheelRegistry:
    """The armed and in-flight jobs of one timing replica, and the wheel that holds their deadlines."""

    def __init__(self) -> None:
        self._wheel = TimingWheel(now_ms(), 1)
        self._armed: dict[str, TimedJob] = {}
        self._by_key: dict[int, TimedJob] = {}
        self._next_key = 0
        self._in_flight: set[str] = set()
        self._stale: set[str] = set()
        self.wake = asyncio.Event()
        """Set when a deadline earlier than the one the dispatcher sleeps until is armed."""
        self.sleeping_until_ms: int | None = None

    def __len__(self) -> int:
        return len(self._wheel)

    def armed(self, job_id: str) -> TimedJob | None:
        return self._armed.get(job_id)

    def armed_jobs(self) -> list[TimedJob]:
        return list(self._armed.values())

    def in_flight(self, job_id: str) -> bool:
        return job_id in self._in_flight

    def next_deadline(self) -> int | None:
        return self._wheel.next_deadline()

    # -- arming and forgetting --------------------------------------------------------------------

    def arm(self, jobs: Sequence[TimedJob], deadlines: Sequence[int] | None = None) -> None:
        """Put jobs in the wheel, due at their ``due_ms`` (or at ``deadlines``), replacing armed copies."""
        if not jobs:
            return
        self.forget(job.id for job in jobs if job.id in self._armed)
        due = [job.due_ms for job in jobs] if deadlines is None else list(deadlines)
        keys = []
        for job in jobs:
            self._next_key += 1
            job.key = self._next_key
            keys.append(job.key)
        handles = self._wheel.insert_many(due, keys)
        loaded_at = time.monotonic()
        for job, handle in zip(jobs, handles, strict=True):
            job.handle, job.loaded_at = handle, loaded_at
            self._armed[job.id] = job
            self._by_key[job.key] = job
        earliest = min(due)
        if self.sleeping_until_ms is None or earliest < self.sleeping_until_ms:
            self.wake.set()

    def forget(self, job_ids: Iterable[str]) -> None:
        """Take jobs out of the wheel (those not armed are ignored)."""
        handles = []
        for job_id in job_ids:
            job = self._armed.pop(job_id, None)
            if job is not None:
                self._by_key.pop(job.key, None)
                if job.handle is not None:
                    handles.append(job.handle)
                    job.handle = None
        if handles:
            self._wheel.cancel_many(handles)

    def forget_partitions(self, partitions: Collection[int]) -> None:
        self.forget([job.id for job in self._armed.values() if job.partition in partitions])

    # -- the dispatcher's side --------------------------------------------------------------------

    def take_due(self, now: int, limit: int) -> list[TimedJob]:
        """Pop up to ``limit`` due jobs out of the wheel; they are in flight until :meth:`landed`."""
        keys, _deadlines = self._wheel.pop_due(now, limit)
        jobs = []
        for key in keys:
            job = self._by_key.pop(key, None)
            if job is not None:
                job.handle = None
                del self._armed[job.id]
                self._in_flight.add(job.id)
                jobs.append(job)
        return jobs

    def mark_stale(self, job_id: str) -> None:
        """A change arrived while the job was in flight: re-read it once its batch is done."""
        self._stale.add(job_id)

    def is_stale(self, job_id: str) -> bool:
        return job_id in self._stale

    def landed(self, jobs: Iterable[TimedJob]) -> list[str]:
        """The batch of ``jobs`` is done; returns the ids among them that changed meanwhile (to re-read)."""
        stale = []
        for job in jobs:
            self._in_flight.discard(job.id)
            if job.id in self._stale:
                self._stale.discard(job.id)
                stale.append(job.id)
        return stale


KNOWN_VERSIONS_MAX = 200_000
"""Jobs whose latest version a replica remembers. Beyond, the oldest are forgotten: an out-of-order
notice about one of them is then taken as it comes, and the periodic full rescan corrects it."""


class KnownVersions:
    """The newest version of each job this replica has seen (read or announced), to drop stale notices."""

    def __init__(self, limit: int = KNOWN_VERSIONS_MAX) -> None:
        self._versions: OrderedDict[str, int] = OrderedDict()
        self._limit = limit

    def saw(self, job_id: str, version: int) -> None:
        if self._versions.get(job_id, -1) < version:
            self._versions[job_id] = version
            self._versions.move_to_end(job_id)
            if len(self._versions) > self._limit:
                self._versions.popitem(last=False)

    def deleted(self, job_id: str) -> None:
        self.saw(job_id, sys.maxsize)

    def newer(self, job_id: str, version: int) -> bool:
        """Whether ``version`` is newer than any seen for the job."""
        return self._versions.get(job_id, -1) < version
