"""Timing benchmark: schedsvc's timing module against APScheduler 4, on one SecantusDB and one NATS.

    python loadtests/bench_scheduler.py [--burst 100000] [--aps-python PATH] [--seconds 30]

Starts its own SecantusDB and nats-server on loopback ports (``tests/support/servers.py``), then measures
in one run:

1. *raw*: the rate at which the database applies the conditional bulk updates timing issues per fire
   (``UpdateOne({_id, nextRun: old, status: "active"}, {$set: {nextRun: new}})``, bulks of 1000, two
   at a time) — the limit of this design;
2. *sustained*: interval jobs offered at the raw rate for ``--seconds``: fires published per second,
   database writes per fire (counted by a pymongo command listener: every written document, leases and
   heartbeats included);
3. *half rate*: lateness p50/p99 (due instant to the JetStream timestamp of the stored message) at half
   the sustained rate;
4. *burst*: ``--burst`` one-off jobs due in the same millisecond: time until all are published, until
   all are advanced, the longest event-loop stall and whether lease renewal kept up;
5. *APScheduler 4.0.0a6* with its MongoDB data store on the same database server, the same number of
   no-op interval jobs, in a separate interpreter (``--aps-python``, a venv with
   ``pip install --pre "apscheduler==4.0.0a6" pymongo``): runs per second, writes per run, lateness.

Prints a JSON summary and a Markdown table. Traffic goes to 127.0.0.1 only; every phase is bounded in
time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------
# The APScheduler side: runs in its own interpreter (APScheduler's venv), so it imports nothing of ours.

APS_WORKER = r"""
import asyncio, json, sys, time
from pymongo import MongoClient, monitoring
from apscheduler import AsyncScheduler, current_job
from apscheduler.datastores.mongodb import MongoDBDataStore
from apscheduler.triggers.interval import IntervalTrigger

WRITES = {"insert": "documents", "update": "updates", "delete": "deletes"}

class Counter_(monitoring.CommandListener):
    def __init__(self):
        self.commands, self.written = {}, 0
    def started(self, event):
        name = event.command_name
        self.commands[name] = self.commands.get(name, 0) + 1
        if name in WRITES:
            self.written += len(event.command.get(WRITES[name], ()))
        elif name == "findAndModify":
            self.written += 1
    def succeeded(self, event): pass
    def failed(self, event): pass

lateness = []

async def noop():
    lateness.append(time.time() - current_job.get().scheduled_fire_time.timestamp())

async def main(uri, database, jobs, seconds):
    counter = Counter_()
    client = MongoClient(uri, event_listeners=[counter], tz_aware=True)
    store = MongoDBDataStore(client, database=database, start_from_scratch=True)
    async with AsyncScheduler(store, max_concurrent_jobs=1000) as scheduler:
        for i in range(jobs):
            await scheduler.add_schedule(noop, IntervalTrigger(seconds=1), id=f"s{i}")
        await scheduler.start_in_background()
        await asyncio.sleep(3)  # warm-up
        runs0, written0, t0 = len(lateness), counter.written, time.monotonic()
        await asyncio.sleep(seconds)
        runs, written, elapsed = len(lateness) - runs0, counter.written - written0, time.monotonic() - t0
        window = sorted(lateness[runs0:runs0 + runs]) or [float("nan")]
        await scheduler.stop()
    client.close()
    print(json.dumps({
        "jobs": jobs, "offered_per_s": jobs, "runs_per_s": runs / elapsed,
        "writes_per_run": written / runs if runs else None,
        "lateness_p50_ms": 1000 * window[len(window) // 2],
        "lateness_p99_ms": 1000 * window[min(len(window) - 1, int(len(window) * 0.99))],
    }))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
"""


def run_apscheduler(python: str, uri: str, jobs: int, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [python, "-c", APS_WORKER, uri, "aps_bench", str(jobs), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 240,
        check=False,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------------
# The schedsvc side.

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import msgspec  # noqa: E402
from bson import ObjectId  # noqa: E402
from pymongo import UpdateOne, monitoring  # noqa: E402
from tests.support import servers  # noqa: E402

from schedsvc import names  # noqa: E402
from schedsvc.bus import NatsRunBus  # noqa: E402
from schedsvc.config import Settings  # noqa: E402
from schedsvc.domain.models import NatsTarget, RetryPolicy, RunMessage, Schedule  # noqa: E402
from schedsvc.observability.metrics import FIRES_PUBLISHED, TIMING_DB_OPERATIONS  # noqa: E402
from schedsvc.observability.runtime import tune_gc  # noqa: E402
from schedsvc.store import (  # noqa: E402
    connect,
    database,
    job_codec,
)
from schedsvc.store.migrate import apply_migrations  # noqa: E402
from schedsvc.testing import delete_run_streams, job_document  # noqa: E402
from schedsvc.timing import from_ms  # noqa: E402
from schedsvc.timing.service import TimingService  # noqa: E402
from schedsvc.wiring import Adapters, timing_service  # noqa: E402

WRITE_FIELDS = {"insert": "documents", "update": "updates", "delete": "deletes"}


class CommandCounter(monitoring.CommandListener):
    """Counts commands and written documents on one client."""

    def __init__(self) -> None:
        self.commands: Counter[str] = Counter()
        self.written = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands[event.command_name] += 1
        field = WRITE_FIELDS.get(event.command_name)
        if field is not None:
            self.written += len(event.command.get(field, ()))
        elif event.command_name == "findAndModify":
            self.written += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def timing_writes() -> float:
    """Documents the timing module wrote for fires (advances and missed records), by its own metric."""
    return sum(TIMING_DB_OPERATIONS.labels(kind=k)._value.get() for k in ("update", "insert"))


def fires_published() -> float:
    return sum(FIRES_PUBLISHED.labels(trigger=t)._value.get() for t in ("scheduled", "catchup"))


def job_doc(schedule: dict[str, Any], next_run_ms: int, partitions: int) -> dict[str, Any]:
    """A job document as the API stores it (built by the job codec), due at ``next_run_ms``."""
    document = job_document(
        "bench",
        partitions,
        next_run=from_ms(next_run_ms),
        schedule=msgspec.convert(schedule, Schedule, strict=False),  # type: ignore[arg-type,unused-ignore]
        target=NatsTarget(subject="tenant.bench.noop"),
        retry=RetryPolicy(max_attempts=1, min_backoff_seconds=1.0, max_backoff_seconds=1.0, max_event_age_seconds=60.0),
    )
    return job_codec.encode(document)


async def insert(db: Any, docs: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for k in range(0, len(docs), 5000):
        await db[names.JOBS].insert_many(docs[k : k + 5000], ordered=False)
    return len(docs) / (time.perf_counter() - started)


async def raw_update_rate(db: Any, n: int) -> float:
    """Conditional bulk updates shaped like timing's advances, on a collection like ``jobs``."""
    coll = db["bench_raw"]
    await coll.create_index([("partition", 1), ("status", 1), ("nextRun", 1)])
    t0 = from_ms(1_800_000_000_000)
    await coll.insert_many(
        [{"_id": str(ObjectId()), "partition": i % 64, "status": "active", "nextRun": t0} for i in range(n)]
    )
    ids = [d["_id"] async for d in coll.find({}, {"_id": 1})]
    sem = asyncio.Semaphore(2)
    rates = []
    for step in (1, 2):
        old, new = from_ms(1_800_000_000_000 + (step - 1) * 1000), from_ms(1_800_000_000_000 + step * 1000)

        async def bulk(chunk: list[str], old: datetime = old, new: datetime = new) -> None:
            async with sem:
                ops = [
                    UpdateOne({"_id": i, "nextRun": old, "status": "active"}, {"$set": {"nextRun": new}}) for i in chunk
                ]
                await coll.bulk_write(ops, ordered=False)

        started = time.perf_counter()
        await asyncio.gather(*(bulk(ids[k : k + 1000]) for k in range(0, len(ids), 1000)))
        rates.append(len(ids) / (time.perf_counter() - started))
    await coll.drop()
    return max(rates)


async def stream_lateness(settings: Settings, since_ms: int, until_ms: int) -> list[int]:
    """Lateness (ms) of stored run messages due in [since, until): JetStream timestamp minus due."""
    import msgspec
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    decode = msgspec.msgpack.Decoder(RunMessage).decode
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    bus_names = names.Names(settings.prefix)
    sub = await js.pull_subscribe(
        f"{bus_names.run_subject_root}.>", stream=bus_names.run_stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
    )
    out: list[int] = []
    with contextlib.suppress(Exception):
        while True:
            msgs = await sub.fetch(1000, timeout=2)
            for m in msgs:
                message = decode(m.data)
                if since_ms <= message.due_ms < until_ms:
                    out.append(int(m.metadata.timestamp.timestamp() * 1000) - message.due_ms)
    await sub.unsubscribe()
    await nc.close()
    return sorted(out)


class Phase:
    """One service over a fresh jobs collection and a fresh NATS prefix."""

    def __init__(self, base: Settings, name: str, counter: CommandCounter, **overrides: Any) -> None:
        from dataclasses import replace

        self.settings = replace(base, prefix=f"bench_{name}_{os.getpid()}", **overrides)
        self.counter = counter

    async def __aenter__(self) -> Phase:
        self.client = connect(self.settings, event_listeners=[self.counter])
        self.db = database(self.client, self.settings)
        await self.db[names.JOBS].delete_many({})
        await self.db[names.RUNS].delete_many({})
        self.bus = await NatsRunBus.connect(self.settings)
        await self.bus.ensure_streams()
        self.service = timing_service(await Adapters.over(self.settings, self.db, self.bus))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.service.stop()
        await delete_run_streams(self.settings)
        await self.bus.close()
        await self.db[names.JOBS].delete_many({})
        await self.client.close()


async def wait_loaded(service: TimingService, n: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if service.wheel_size >= n:
            break
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def interval_phase(
    base: Settings, name: str, rate: int, seconds: float, db_rates: tuple[float, float]
) -> dict[str, Any]:
    """``rate`` fires/s offered by interval jobs (period 10 s, phases spread over the period).

    The first fires come once the jobs are surely inserted and loaded (``db_rates``: the database's
    measured insert and read rates), so the measurement starts from a steady state.
    """
    counter = CommandCounter()
    period = 10
    async with Phase(base, name, counter, horizon_seconds=60.0) as ph:
        n = rate * period
        start = now_ms() + int(1300 * (n / db_rates[0] + n / db_rates[1])) + 3000
        docs = []
        for i in range(rate * period):
            anchor = start + (i * 10_007) % (period * 1000)
            docs.append(
                job_doc({"kind": "interval", "seconds": period, "anchor": from_ms(anchor)}, anchor, base.partitions)
            )
        await insert(ph.db, docs)
        jobs = len(docs)
        del docs  # the documents are the service's to load: keep this process's heap (and GC) small
        f_all, w_all, t_all = fires_published(), counter.written, timing_writes()
        await ph.service.start()
        await wait_loaded(ph.service, jobs, max(0.0, (start - now_ms()) / 1000))
        await asyncio.sleep(max(0.0, (start - now_ms()) / 1000) + 2)  # warm-up
        f0, t0, m0 = fires_published(), time.monotonic(), now_ms()
        await asyncio.sleep(seconds)
        fires, elapsed, m1 = fires_published() - f0, time.monotonic() - t0, now_ms()
        # Writes per fire over the whole phase, once stop() has drained every pending advance: every
        # document written (advances, leases, heartbeats) divided by every fire published.
        await ph.service.stop()
        fires_all, written_all, advances = fires_published() - f_all, counter.written - w_all, timing_writes() - t_all
        lateness = await stream_lateness(ph.settings, m0, m1 - 1000)
    return {
        "jobs": jobs,
        "offered_per_s": rate,
        "fires_per_s": fires / elapsed,
        "writes_per_fire": written_all / fires_all if fires_all else None,
        "fires_total": fires_all,
        "documents_written_total": written_all,
        "advance_and_missed_writes_total": advances,
        "lateness_p50_ms": statistics.median(lateness) if lateness else None,
        "lateness_p99_ms": lateness[int(len(lateness) * 0.99)] if lateness else None,
        "lateness_samples": len(lateness),
    }


async def burst_phase(base: Settings, n: int, read_rate: float, insert_rate: float) -> dict[str, Any]:
    counter = CommandCounter()
    async with Phase(base, "burst", counter, horizon_seconds=900.0) as ph:
        # Due once loading is surely over: the database's measured insert and read rates decide.
        due = now_ms() + int((n / insert_rate + n / read_rate) * 1000 * 2.5) + 20_000
        await insert(ph.db, [job_doc({"kind": "once", "at": from_ms(due)}, due, base.partitions) for _ in range(n)])
        await ph.service.start()
        load_s = await wait_loaded(ph.service, n, max(1.0, (due - now_ms()) / 1000 - 1))
        loaded = ph.service.wheel_size
        await asyncio.sleep(max(0.0, (due - now_ms()) / 1000))
        f0, w0, cpu0 = fires_published(), counter.written, time.process_time()
        publish_cpu_s = None
        stall = 0.0
        lost_lease = False
        published_s = advanced_s = None
        started = time.monotonic()
        while time.monotonic() - started < 600:
            tick = time.monotonic()
            await asyncio.sleep(0.01)
            stall = max(stall, time.monotonic() - tick - 0.01)
            lost_lease |= not ph.service.ready or len(ph.service.owned_partitions) < base.partitions
            if published_s is None and fires_published() - f0 >= n:
                published_s = (now_ms() - due) / 1000
                publish_cpu_s = time.process_time() - cpu0
            if published_s is not None and counter.written - w0 >= n:
                advanced_s = (now_ms() - due) / 1000
                break
        fires, written = fires_published() - f0, counter.written - w0
    return {
        "jobs": n,
        "loaded_in_wheel_before_due": loaded,
        "load_seconds": load_s,
        "published_all_after_s": published_s,
        "advanced_all_after_s": advanced_s,
        "publish_rate_per_s": n / published_s if published_s else None,
        # This process's CPU (the timing module, plus the benchmark's light polling) until all were
        # published: a cost per fire that does not depend on how busy the machine is.
        "cpu_us_per_fire_until_published": 1e6 * publish_cpu_s / n if publish_cpu_s else None,
        "writes_per_fire": written / fires if fires else None,
        "max_event_loop_stall_ms": 1000 * stall,
        "lease_lost_during_burst": lost_lease,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tune_gc()  # as the service's entry points do (python -m schedsvc.timing, the app factory)
    tmp = Path(tempfile.mkdtemp(prefix="bench_scheduler_"))
    mongo = servers.secantus(tmp / "mongo")
    if args.secantus_bin:  # e.g. secantusd-rs from the secantus-mdb crate: same flags as secantusd-py
        mongo.argv[0] = args.secantus_bin
    nats_server = servers.nats(tmp / "nats")
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}",
        "command": "python " + " ".join(sys.argv),
        "database_server": Path(mongo.argv[0]).name,
        "loadavg_start": os.getloadavg(),
    }
    with servers.running(mongo), servers.running(nats_server):
        uri = f"mongodb://127.0.0.1:{mongo.port}/?directConnection=true"
        base = Settings(
            mongodb_uri=uri,
            database="bench",
            nats_url=f"nats://127.0.0.1:{nats_server.port}",
            partitions=64,
            lease_ttl_seconds=15.0,
            heartbeat_seconds=3.0,
        )
        client = connect(base)
        db = database(client, base)
        await apply_migrations(db, base)
        results["raw_conditional_updates_per_s"] = raw = await raw_update_rate(db, args.raw)
        probe = [job_doc({"kind": "once", "at": from_ms(0)}, 0, 64) for _ in range(5000)]
        insert_rate = await insert(db, probe)
        read_started = time.perf_counter()
        read = len([d async for d in db[names.JOBS].find({}, {"schedule": 1, "nextRun": 1})])
        read_rate = read / (time.perf_counter() - read_started)
        await db[names.JOBS].delete_many({})
        await client.close()
        results["db_insert_per_s"], results["db_read_per_s"] = insert_rate, read_rate
        print(json.dumps(results), flush=True)

        rates = (insert_rate, read_rate)
        # Offered a little below the raw rate: a rate it keeps up with, not a backlog it never clears.
        offered = int(raw * args.load)
        results["sustained"] = sustained = await interval_phase(base, "sustained", offered, args.seconds, rates)
        print(json.dumps(sustained), flush=True)
        half = max(1, int(min(sustained["fires_per_s"], raw) / 2))
        results["half_rate"] = await interval_phase(base, "half", half, args.seconds, rates)
        print(json.dumps(results["half_rate"]), flush=True)
        if args.burst:
            results["burst"] = await burst_phase(base, args.burst, read_rate, insert_rate)
            print(json.dumps(results["burst"]), flush=True)
        if args.aps_python:
            results["apscheduler"] = await asyncio.to_thread(
                run_apscheduler, args.aps_python, uri, args.aps_jobs, args.seconds
            )
            print(json.dumps(results["apscheduler"]), flush=True)
    results["loadavg_end"] = os.getloadavg()
    return results


def markdown(r: dict[str, Any]) -> str:
    def f(v: Any, nd: int = 0) -> str:
        return "n/a" if v is None else f"{v:,.{nd}f}"

    s, h, a = r["sustained"], r["half_rate"], r.get("apscheduler", {})
    lines = [
        "| measure | schedsvc | APScheduler 4.0.0a6 |",
        "|---|---|---|",
        f"| fires/s sustained (offered) | {f(s['fires_per_s'])} ({s['offered_per_s']}) | "
        f"{f(a.get('runs_per_s'), 1)} ({a.get('offered_per_s', 'n/a')}) |",
        f"| MongoDB writes per fire | {f(s['writes_per_fire'], 3)} | {f(a.get('writes_per_run'), 2)} |",
        f"| lateness p50 / p99 (ms) at {h['offered_per_s']} fires/s (schedsvc) | "
        f"{f(h['lateness_p50_ms'])} / {f(h['lateness_p99_ms'])} | "
        f"{f(a.get('lateness_p50_ms'))} / {f(a.get('lateness_p99_ms'))} (at {a.get('offered_per_s', 'n/a')}/s) |",
        f"| raw conditional bulk updates/s (same database) | {f(r['raw_conditional_updates_per_s'])} | |",
    ]
    if "burst" in r:
        b = r["burst"]
        lines.append(
            f"| {b['jobs']:,} jobs due in the same ms: all published / all advanced after (s) | "
            f"{f(b['published_all_after_s'], 1)} / {f(b['advanced_all_after_s'], 1)} | |"
        )
        lines.append(f"| burst: CPU µs per fire until all published | {f(b['cpu_us_per_fire_until_published'])} | |")
        lines.append(
            f"| burst: longest event-loop stall (ms), lease kept | {f(b['max_event_loop_stall_ms'])}, "
            f"{'yes' if not b['lease_lost_during_burst'] else 'NO'} | |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=100_000, help="jobs due in the same second (0: skip)")
    parser.add_argument("--raw", type=int, default=20_000, help="documents for the raw update rate")
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window per phase")
    parser.add_argument("--load", type=float, default=0.8, help="offered rate of the sustained phase / raw rate")
    parser.add_argument("--secantus-bin", default=None, help="SecantusDB server binary (default: secantusd-py)")
    parser.add_argument("--aps-python", default=None, help="python of a venv with apscheduler==4.0.0a6")
    parser.add_argument("--aps-jobs", type=int, default=200, help="APScheduler interval (1 s) schedules")
    args = parser.parse_args()
    res = asyncio.run(main(args))
    print(json.dumps(res, indent=2))
    print(markdown(res))
