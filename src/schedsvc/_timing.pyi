"""Timing core of schedsvc, implemented in Rust (``rust_core/``).

Only ``schedsvc.timing`` imports this module. All instants are epoch milliseconds (``int``, the
BSON datetime precision). Every validation failure raises ``ValueError`` with a message naming the
problem; an ``int`` outside the 64-bit range is a ``ValueError`` too. Calls never panic.

Cron and calendar fires fall on whole seconds between 0001-01-01 and 9999-12-31 UTC; interval
and once schedules accept any 64-bit instant. The semantics (DST rules, cron dialect) are
described in ``docs/schedules.md``.

Zones are the ones ``zoneinfo`` knows: the first cron or calendar schedule in a zone asks
``schedsvc.timing.zonedb.tzif(name)`` for the zone's TZif bytes (from ``zoneinfo.TZPATH``, then the
``tzdata`` package, as ``zoneinfo`` looks them up) and builds the zone once for the process, with
its POSIX rule applied in every year up to 9999.
"""

from collections.abc import Iterable, Sequence
from typing import Final, final

from typing_extensions import Buffer

__version__: Final[str]

NO_FIRE: Final[int]
"""``-2**63``: marks "no further fire" in the arrays returned by :func:`next_fires`."""

@final
class Schedule:
    """An immutable, thread-safe schedule: cron, interval, calendar or once.

    Optional ``start_ms``/``end_ms`` bound the fires (both inclusive: fires before ``start_ms``
    are skipped, fires after ``end_ms`` never happen). ``jitter_ms`` only affects
    :meth:`fire_instant`; nominal fire times never include jitter.
    """

    @staticmethod
    def cron(
        expression: str,
        timezone: str = "UTC",
        start_ms: int | None = None,
        end_ms: int | None = None,
        jitter_ms: int = 0,
    ) -> Schedule:
        """A cron schedule evaluated in the IANA zone ``timezone``.

        ``expression`` has 5 fields (minute hour day-of-month month day-of-week), 6 fields with
        seconds first, or is one of ``@yearly @annually @monthly @weekly @daily @midnight
        @hourly``. Supports names, ranges, steps, lists, ``L``, ``LW``, ``nW``, ``<dow>L``,
        ``<dow>#n`` and ``?``. Raises ``ValueError`` for a syntax error, a reversed range, a
        zone ``zoneinfo`` does not know (``unknown time zone '<name>'``), ``end_ms < start_ms``,
        a negative jitter, or an expression that can never fire (e.g. ``0 0 30 2 *``).
        """

    @staticmethod
    def interval(
        every_ms: int,
        anchor_ms: int,
        start_ms: int | None = None,
        end_ms: int | None = None,
        jitter_ms: int = 0,
    ) -> Schedule:
        """Fires at ``anchor_ms + k * every_ms`` for every integer ``k`` (real elapsed time, no
        time zone). ``every_ms`` must be >= 1000."""

    @staticmethod
    def calendar(
        every: int,
        unit: str,
        time: str,
        timezone: str,
        anchor_date: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        jitter_ms: int = 0,
    ) -> Schedule:
        """Every ``every`` (>= 1) ``unit`` (``"days"``, ``"weeks"`` or ``"months"``) at local wall
        time ``time`` (``"HH:MM"`` or ``"HH:MM:SS"``) in ``timezone``, starting on
        ``anchor_date`` (``"YYYY-MM-DD"``, the first occurrence).

        Weeks keep the anchor's weekday; months keep its day of month, clamped to the month's
        last day. A wall time in a DST gap fires at the end of the gap; in an overlap, at the
        first occurrence.
        """

    @staticmethod
    def once(at_ms: int, start_ms: int | None = None, end_ms: int | None = None, jitter_ms: int = 0) -> Schedule:
        """A single fire at ``at_ms``; none when ``at_ms`` lies outside ``[start_ms, end_ms]``."""

    def next_after(self, after_ms: int) -> int | None:
        """The nominal fire strictly after ``after_ms``, or None when there is none."""

    def next_n(self, after_ms: int, count: int) -> list[int]:
        """Up to ``count`` (0..1,000,000) nominal fires strictly after ``after_ms``, strictly
        increasing. Releases the GIL for long runs."""

    def fires_between(self, after_ms: int, until_ms: int, limit: int) -> list[int]:
        """Nominal fires ``f`` with ``after_ms < f <= until_ms``, earliest first, at most
        ``limit`` (0..1,000,000)."""

    def fire_instant(self, nominal_ms: int, seed: int) -> int:
        """``nominal_ms`` plus a deterministic jitter in ``[0, jitter_ms]``.

        The jitter is ``h % (jitter_ms + 1)`` with ``h = splitmix64(seed ^ splitmix64(nominal_ms))``
        over unsigned 64-bit arithmetic, so it is the same on every machine and for every call.
        ``seed`` is any int in ``[-2**63, 2**64)`` (negative values as two's complement). The
        result saturates at ``2**63 - 1``.
        """

    @property
    def timezone(self) -> str:
        """The IANA zone name (``"UTC"`` for interval and once schedules)."""

    @property
    def jitter_ms(self) -> int:
        """The maximum jitter added by :meth:`fire_instant`."""

def next_fires(
    schedules: Sequence[Schedule],
    after_ms: Sequence[int] | Buffer,
    seeds: Sequence[int] | Buffer | None = None,
) -> tuple[bytes, bytes]:
    """Batch next fire, computed without the GIL.

    For each ``i``: the nominal fire strictly after ``after_ms[i]`` and its due instant
    (``schedules[i].fire_instant(nominal, seeds[i])``, or the nominal one when ``seeds`` is None).
    Returns two ``bytes`` of native-endian int64 (read them with
    ``array.array("q").frombytes(...)``), holding :data:`NO_FIRE` where there is no fire.
    ``after_ms`` and ``seeds`` may be lists or buffers of 8-byte integers. Raises ``ValueError``
    when the lengths differ.
    """

@final
class TimingWheel:
    """A hierarchical timing wheel with exact deadlines.

    ``pop_due(now)`` returns exactly the timers whose deadline is ``<= now`` (never one early,
    never one late), whatever ``tick_ms`` is: the tick only sets the slot granularity. Timers
    carry a 64-bit unsigned ``key`` chosen by the caller. Thread-safe; batch calls release the
    GIL.
    """

    def __init__(self, start_ms: int, tick_ms: int = 1) -> None:
        """A wheel whose clock starts at ``start_ms``; ``tick_ms`` must be >= 1."""

    def insert(self, deadline_ms: int, key: int) -> int:
        """Adds a timer and returns its handle. A deadline at or before the wheel clock is due
        at the next :meth:`pop_due`. ``key`` must be in ``0..2**64``."""

    def insert_many(self, deadlines_ms: Iterable[int] | Buffer, keys: Iterable[int] | Buffer) -> list[int]:
        """Adds many timers; returns their handles in order. Accepts lists, tuples or buffers
        (``array.array("q")`` deadlines, ``array.array("Q")`` keys, or native-endian bytes).
        Raises ``ValueError`` when the lengths differ."""

    def cancel(self, handle: int) -> bool:
        """Cancels a pending timer. False (never an error) for a handle that already fired, was
        cancelled, or was never issued."""

    def cancel_many(self, handles: Iterable[int] | Buffer) -> int:
        """Cancels many timers; returns how many were pending."""

    def pop_due(self, now_ms: int, limit: int | None = None) -> tuple[list[int], list[int]]:
        """Removes and returns ``(keys, deadlines)`` of the timers with deadline ``<= now_ms``,
        in deadline order, at most ``limit`` of them (the earliest; among equal deadlines at the
        cut, any), and advances the clock to ``now_ms`` (to the last deadline returned when the
        limit cuts the batch short, so the rest stay due). A ``now_ms`` behind the clock only
        returns timers inserted behind it."""

    def next_deadline(self) -> int | None:
        """The earliest pending deadline, or None when the wheel is empty."""

    def __len__(self) -> int:
        """Number of pending timers."""

    def memory_bytes(self) -> int:
        """Approximate bytes held by the wheel (slab capacity, slot lists, buffers)."""
