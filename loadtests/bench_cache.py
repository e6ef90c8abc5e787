"""GET /jobs throughput with and without the Redis response cache, side by side in one run.

    .venv/bin/python loadtests/bench_cache.py [--seconds 10] [--concurrency 16] [--jobs 200]

Starts its own SecantusDB, NATS and Redis on loopback, then the API (granian, one worker) twice on the
same database: once with SCHEDSVC_REDIS_URL, once without. Prints requests/s and latency percentiles
for both and their ratio. Nothing here is pass/fail; results go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx

from schedsvc import embedded

KEY = "sk_00000000000000ee_" + "e" * 43


async def load(base: str, seconds: float, concurrency: int, pages: list[str]) -> tuple[int, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:

        async def user(i: int) -> None:
            n = i
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                r = await client.get(pages[n % len(pages)])
                latencies.append(time.perf_counter() - started)
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
                n += 1

        await asyncio.gather(*(user(i) for i in range(concurrency)))
    return len(latencies), latencies


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def seed(base: str, jobs: int) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        for i in range(jobs):
            r = await client.post(
                "/jobs",
                json={
                    "name": f"bench-{i:05d}",
                    "tags": [f"t{i % 5}"],
                    "schedule": {"kind": "cron", "expression": "0 3 * * *", "timezone": "Europe/Berlin"},
                    "target": {"kind": "http", "url": "https://hooks.example.com/x"},
                },
            )
            r.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="schedsvc-bench-cache-"))
    pages = [
        "/jobs?limit=50",
        "/jobs?limit=50&tag=t1",
        "/jobs?limit=100&status=active",
        "/jobs?limit=20&name=bench-001",
    ]
    results = {}
    with embedded.backends(root) as servers:
        base = servers.api_settings(KEY)
        for label, redis_url in (("without cache", None), ("with Redis cache", base.redis_url)):
            settings = replace(base, redis_url=redis_url, port=embedded.free_port())
            with embedded.running(embedded.service(settings, root / f"api-{settings.port}.log")) as api:
                if not results:
                    asyncio.run(seed(api.url, args.jobs))
                asyncio.run(load(api.url, 2, args.concurrency, pages))  # warm-up (and fill the cache)
                count, latencies = asyncio.run(load(api.url, args.seconds, args.concurrency, pages))
                results[label] = (count / args.seconds, latencies)
    print(f"# GET /jobs, {args.jobs} jobs, {args.concurrency} concurrent clients, {args.seconds:.0f} s each")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"{'':18} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for label, (rate, lat) in results.items():
        print(f"{label:18} {rate:8.0f} {statistics.median(lat) * 1000:8.1f} {pct(lat, 99):8.1f}")
    ratio = results["with Redis cache"][0] / results["without cache"][0]
    print(f"cache speed-up: {ratio:.2f}x")


if __name__ == "__main__":
    main()
