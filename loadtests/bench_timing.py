"""Benchmark of the timing core (``schedsvc._timing``) against croniter and cronsim.

Run from the repository root after building the extension (``make`` or ``maturin develop
--release``)::

    python loadtests/bench_timing.py            # full run, about a minute
    python loadtests/bench_timing.py --quick    # smaller sizes, a smoke test

Prints, side by side: a single next-fire call through Python (``Schedule.next_after``) vs
croniter and cronsim, the batch ``next_fires`` cost per fire, and the timing wheel's
``insert_many``/``pop_due`` rates and bytes per timer with 1,000,000 resident timers. The
numbers go into the "Timing core" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import array
import os
import platform
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter
from cronsim import CronSim

from schedsvc._timing import Schedule, TimingWheel, next_fires

CASES = [
    ("*/5 * * * *", "UTC"),
    ("0 9 * * MON-FRI", "Europe/Berlin"),
    ("30 2 * * *", "America/New_York"),
    ("0 0 L * *", "Australia/Lord_Howe"),
    ("15 10 1-7 * FRI", "Asia/Tokyo"),
]
BASE_MS = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
YEAR_MS = 365 * 86_400_000


class Clock:
    """Wall and process-CPU seconds of a block (CPU time is robust to a busy shared machine)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def per_call(fn: Callable[[int], object], args: list[int]) -> float:
    """Seconds per call of ``fn`` over ``args`` (best of three runs)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for a in args:
            fn(a)
        best = min(best, (time.perf_counter() - start) / len(args))
    return best


def bench_single(n: int) -> list[tuple[str, float, float, float]]:
    """Per expression: seconds per next-fire call for ours, croniter and cronsim.

    Each call starts from a different instant, so croniter and cronsim build their iterator per
    call (that is what "next fire after t" costs them); ours reuses the compiled Schedule.
    """
    rng = random.Random(1)
    instants = [BASE_MS + rng.randrange(YEAR_MS) for _ in range(n)]
    rows = []
    for expr, zone in CASES:
        schedule = Schedule.cron(expr, zone)
        tz = ZoneInfo(zone)
        starts = {ms: datetime.fromtimestamp(ms / 1000, tz) for ms in instants}
        rows.append(
            (
                f"{expr} ({zone})",
                per_call(schedule.next_after, instants),
                per_call(lambda ms, e=expr, s=starts: croniter(e, s[ms]).get_next(datetime), instants),
                per_call(lambda ms, e=expr, s=starts: next(CronSim(e, s[ms])), instants),
            )
        )
    return rows


def bench_batch(n: int) -> tuple[float, float]:
    """Wall and CPU seconds per fire of ``next_fires`` over ``n`` schedules (best of three)."""
    rng = random.Random(2)
    schedules = [Schedule.cron(*CASES[i % len(CASES)]) for i in range(n)]
    after = array.array("q", (BASE_MS + rng.randrange(YEAR_MS) for _ in range(n)))
    seeds = array.array("Q", (rng.getrandbits(64) for _ in range(n)))
    wall = cpu = float("inf")
    for _ in range(3):
        with Clock() as c:
            nominal, due = next_fires(schedules, after, seeds)
        wall, cpu = min(wall, c.wall), min(cpu, c.cpu)
    assert len(array.array("q", nominal)) == n == len(array.array("q", due))
    return wall / n, cpu / n


def bench_wheel(resident: int) -> dict[str, tuple[float, float]]:
    """Rates (per wall second, per CPU second) of the wheel operations, and bytes per timer."""
    rng = random.Random(3)
    now = BASE_MS
    horizon = 3_600_000  # deadlines spread over one hour at 1 ms resolution
    deadlines = array.array("q", (now + 1 + rng.randrange(horizon) for _ in range(resident)))
    keys = array.array("Q", range(resident))
    wheel = TimingWheel(now, 1)

    with Clock() as fill:
        wheel.insert_many(deadlines, keys)
    bytes_per_timer = wheel.memory_bytes() / len(wheel)

    # Inserts and cancels on top of the resident million (Python lists, the common call shape).
    extra = resident // 5
    extra_deadlines = [now + 1 + rng.randrange(horizon) for _ in range(extra)]
    extra_keys = list(range(resident, resident + extra))
    with Clock() as insert_lists:
        handles = wheel.insert_many(extra_deadlines, extra_keys)
    with Clock() as cancel:
        cancelled = wheel.cancel_many(handles)
    assert cancelled == extra and len(wheel) == resident

    # Drain the resident million in 100 ms steps, as a scheduling loop would.
    popped = 0
    t = now
    with Clock() as pop:
        while len(wheel):
            t += 100
            keys_out, _ = wheel.pop_due(t)
            popped += len(keys_out)
    assert popped == resident

    def rate(n: int, c: Clock) -> tuple[float, float]:
        return n / c.wall, n / max(c.cpu, 1e-9)

    return {
        "insert_many (array 'q'/'Q', into empty)": rate(resident, fill),
        f"insert_many (lists, +{extra} on top)": rate(extra, insert_lists),
        "cancel_many (list)": rate(extra, cancel),
        "pop_due (100 ms steps)": rate(popped, pop),
        "bytes_per_timer": (bytes_per_timer, bytes_per_timer),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = parser.parse_args()
    single_n, batch_n, resident = (200, 10_000, 100_000) if args.quick else (1_000, 100_000, 1_000_000)

    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  nproc: {os.cpu_count()}  cpu: {cpu_model()}")
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"python {platform.python_version()}")

    rows = bench_single(single_n)
    print(f"\nsingle next fire, us per call ({single_n} random instants in 2026 per expression)")
    print(f"  {'expression':42} {'ours':>8} {'croniter':>10} {'cronsim':>9} {'x croniter':>11} {'x cronsim':>10}")
    for name, o, c1, c2 in rows:
        print(f"  {name:42} {o * 1e6:8.3f} {c1 * 1e6:10.1f} {c2 * 1e6:9.1f} {c1 / o:11.0f} {c2 / o:10.0f}")
    ours = sum(r[1] for r in rows) / len(rows)
    ci = sum(r[2] for r in rows) / len(rows)
    cs = sum(r[3] for r in rows) / len(rows)
    print(f"  {'mean':42} {ours * 1e6:8.3f} {ci * 1e6:10.1f} {cs * 1e6:9.1f} {ci / ours:11.0f} {cs / ours:10.0f}")

    batch, batch_cpu = bench_batch(batch_n)
    print(f"\nbatch next_fires ({batch_n} schedules of the expressions above, with jitter seeds, per fire)")
    print(f"  next_fires           {batch * 1e6:9.3f} us wall, {batch_cpu * 1e6:.3f} us CPU")
    print(f"  vs croniter (mean)   {ci / batch:9.0f}x faster per fire (wall)")
    print(f"  vs cronsim (mean)    {cs / batch:9.0f}x faster per fire (wall)")

    wheel = bench_wheel(resident)
    memory, _ = wheel.pop("bytes_per_timer")
    print(f"\ntiming wheel ({resident} resident timers, deadlines over one hour, 1 ms tick)")
    print(f"  {'operation':42} {'per wall s':>12} {'per CPU s':>12}")
    for name, (wall, cpu) in wheel.items():
        print(f"  {name:42} {wall / 1e6:10.2f} M {cpu / 1e6:10.2f} M")
    print(f"  memory_bytes() / len                       {memory:10.1f} B/timer")
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
