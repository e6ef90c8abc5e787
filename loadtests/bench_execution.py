"""Execution throughput: run message → worker → local HTTP target → run recorded.

Measures, on this machine:

1. the bare HTTP cost: the shared client calling the target directly, one call at a time;
2. per-run overhead of the execution module: runs one at a time (``max_concurrent_runs=1``) through
   JetStream, the run store and the target, minus (1);
3. runs per second with ``--concurrency`` concurrent runs in one worker process.

Usage::

    python loadtests/bench_execution.py [--runs 2000] [--concurrency 64] [--serial-runs 200]
        [--target-latency-ms 0] [--mongodb-uri URI] [--nats-url nats://127.0.0.1:4222]

Without ``--mongodb-uri`` it starts its own SecantusDB (MongoDB wire protocol) on a free loopback port,
as the tests do. The HTTP target runs in a separate process on 127.0.0.1 so it does not share the
worker's event loop. Everything it creates (database, streams) is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import ipaddress
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from bson import ObjectId

from schedsvc import embedded, names
from schedsvc.bus import NatsRunBus
from schedsvc.config import Settings
from schedsvc.domain.models import HttpTarget, RetryPolicy, RunMessage
from schedsvc.execution.targets import CallContext, TargetCaller
from schedsvc.store import connect, database
from schedsvc.testing import delete_run_streams
from schedsvc.wiring import Adapters, execution_service


async def bare_http(settings: Settings, url: str, calls: int) -> float:
    """Mean seconds per call of the shared client, one call at a time."""
    caller = TargetCaller(settings, bus=None)  # type: ignore[arg-type]  # HTTP only: the bus is unused
    target = HttpTarget(url=url, body={"n": 1})
    ctx = CallContext("bench:1", "bench", "bench", datetime.now(UTC), 1, signing_keys=(secrets.token_bytes(32),))
    try:
        for _ in range(20):
            await caller.call(target, ctx)
        started = time.perf_counter()
        for _ in range(calls):
            outcome = await caller.call(target, ctx)
            assert outcome.succeeded, outcome
        return (time.perf_counter() - started) / calls
    finally:
        await caller.aclose()


async def through_workers(settings: Settings, db: Any, url: str, runs: int) -> tuple[float, float, list[float]]:
    """Seconds from publishing ``runs`` fires until all are recorded, this process's CPU seconds over that
    time (the worker's cost, independent of how busy the machine is), and each attempt's latency."""
    bus = await NatsRunBus.connect(settings)
    await bus.ensure_streams()
    service = execution_service(await Adapters.over(settings, db, bus))
    try:
        tenant = "bench"
        await db[names.TENANTS].update_one(
            {"_id": tenant},
            {
                "$setOnInsert": {
                    "signingSecrets": [
                        {
                            "id": "s1",
                            "secret": base64.b64encode(secrets.token_bytes(32)).decode(),
                            "createdAt": datetime.now(UTC),
                        }
                    ]
                }
            },
            upsert=True,
        )
        target = msgspec.to_builtins(HttpTarget(url=url, body={"n": 1}))
        retry = msgspec.to_builtins(RetryPolicy(max_attempts=1))
        job_ids = [str(ObjectId()) for _ in range(runs)]
        await db[names.JOBS].insert_many(
            [
                {
                    "_id": j,
                    "tenant": tenant,
                    "name": j,
                    "target": target,
                    "retry": retry,
                    "overlap": "allow",
                    "status": "active",
                    "lastRun": None,
                    "version": 1,
                }
                for j in job_ids
            ]
        )
        await service.start()
        now = int(time.time() * 1000)
        started = time.perf_counter()
        cpu_started = time.process_time()
        await bus.publish_runs([RunMessage(j, tenant, now, now, "scheduled", 1) for j in job_ids], [0] * runs)
        while True:
            done = await db[names.RUNS].count_documents({"status": {"$in": ["succeeded", "failed"]}})
            if done >= runs:
                break
            await asyncio.sleep(0.2)  # the count scans the collection: poll gently
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        failed = await db[names.RUNS].count_documents({"status": "failed"})
        if failed:
            raise RuntimeError(f"{failed} runs failed")
        latencies = [
            (d["finishedAt"] - d["startedAt"]).total_seconds()
            async for d in db[names.RUNS].find({}, {"startedAt": 1, "finishedAt": 1})
        ]
        await db[names.RUNS].delete_many({})
        await db[names.JOBS].delete_many({})
        return elapsed, cpu, latencies
    finally:
        await service.stop()
        await delete_run_streams(settings)
        await bus.close()


async def measure(args: argparse.Namespace, uri: str, url: str) -> dict[str, Any]:
    token = f"bench{uuid.uuid4().hex[:8]}"
    base = Settings(
        mongodb_uri=uri,
        database=token,
        nats_url=args.nats_url,
        prefix=token,
        target_allow_networks=(ipaddress.ip_network("127.0.0.1/32"),),
        log_level="WARNING",
    )
    client = connect(base)
    db = database(client, base)
    try:
        per_call = await bare_http(base, url, args.serial_runs)
        serial = dataclasses.replace(base, max_concurrent_runs=1, prefix=f"{token}s")
        serial_elapsed, serial_cpu, serial_lat = await through_workers(serial, db, url, args.serial_runs)
        wide = dataclasses.replace(base, max_concurrent_runs=args.concurrency, prefix=f"{token}w")
        wide_elapsed, wide_cpu, wide_lat = await through_workers(wide, db, url, args.runs)
    finally:
        await client.drop_database(token)
        await client.close()
    per_run = serial_elapsed / args.serial_runs
    return {
        "bare_http_ms_per_call": round(per_call * 1000, 3),
        "serial_ms_per_run": round(per_run * 1000, 3),
        "execution_overhead_ms_per_run": round((per_run - per_call) * 1000, 3),
        "target_latency_ms": args.target_latency_ms,
        "concurrency": args.concurrency,
        "runs": args.runs,
        "runs_per_second": round(args.runs / wide_elapsed, 1),
        "worker_cpu_ms_per_run": round(wide_cpu / args.runs * 1000, 3),
        "serial_worker_cpu_ms_per_run": round(serial_cpu / args.serial_runs * 1000, 3),
        "attempt_latency_ms_p50": round(statistics.median(wide_lat) * 1000, 2),
        "attempt_latency_ms_p99": round(statistics.quantiles(wide_lat, n=100)[98] * 1000, 2),
        "serial_attempt_latency_ms_p50": round(statistics.median(serial_lat) * 1000, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--serial-runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--target-latency-ms", type=float, default=0.0, help="the target answers after this long")
    parser.add_argument("--mongodb-uri")
    parser.add_argument("--nats-url", default=os.environ.get("SCHEDSVC_TEST_NATS_URL", "nats://127.0.0.1:4222"))
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        uri = args.mongodb_uri
        if uri is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            mongo = stack.enter_context(embedded.running(embedded.secantus(tmp / "data")))
            uri = f"mongodb://127.0.0.1:{mongo.port}/?directConnection=true"
        delay = str(args.target_latency_ms / 1000)
        # The receiver runs in a process of its own so that its CPU is not charged to the workers measured.
        target = subprocess.Popen([sys.executable, "-m", "schedsvc.testing", "--delay", delay], stdout=subprocess.PIPE)
        stack.callback(target.wait, 10)
        stack.callback(target.terminate)
        assert target.stdout is not None
        port = int(target.stdout.readline())
        target.stdout.close()
        result = asyncio.run(measure(args, uri, f"http://127.0.0.1:{port}/hook"))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
