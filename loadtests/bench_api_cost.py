"""What one API request costs, per endpoint: API CPU time, MongoDB commands and Redis round trips.

    .venv/bin/python loadtests/bench_api_cost.py [--requests 300] [--concurrency 4] [--src DIR] [--json-out F]

Starts its own SecantusDB (Rust server unless SCHEDSVC_EMBEDDED_MONGODB=python), NATS and Redis on
loopback, one API process (granian, one worker, ``api`` role, Redis cache on) and, for comparison, a bare
Litestar "hello" app under granian. Each scenario sends ``--requests`` requests (after a short warm-up)
and reads, before and after, the API process group's CPU time from /proc and two counters the API exposes
on /metrics when started with ``loadtests/counting`` on its PYTHONPATH: MongoDB commands (pymongo command
monitoring) and Redis round trips. ``--src`` runs the API from another source tree (e.g. a worktree of an
older commit, for before/after numbers). Nothing here is pass/fail; results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from run_load import HELLO_APP, READY_TIMEOUT_SECONDS, granian_argv, group_cpu_seconds  # this script's folder

from schedsvc import embedded
from schedsvc.config import Settings

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

KEY = "sk_00000000000000cc_" + "c" * 43
AUTH = {"Authorization": f"Bearer {KEY}"}
SEED_JOBS = 20


@dataclass
class Cost:
    scenario: str
    requests: int
    cpu_ms_per_request: float
    mongodb_commands_per_request: float
    redis_round_trips_per_request: float
    cache_hits: int
    cache_misses: int
    mean_latency_ms: float
    mongodb_by_command: dict[str, float]


def counters(metrics: str) -> dict[str, float]:
    """The benchmark counters and the cache counters from a /metrics page."""
    values: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith(
            ("bench_mongodb_commands_total", "bench_redis_round_trips_total", "schedsvc_cache_requests_total")
        ):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def job_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": {"kind": "cron", "expression": "0 3 * * *", "timezone": "Europe/Berlin"},
        "target": {"kind": "http", "url": "https://hooks.example.com/x", "method": "POST"},
        "tags": ["team-a"],
    }


class Bench:
    def __init__(self, client: httpx.AsyncClient, api: embedded.ServerProcess | None, concurrency: int) -> None:
        self.client = client
        self.api = api
        self.concurrency = concurrency
        self.jobs: list[str] = []

    async def call(self, method: str, path: str, expect: int, **kwargs: Any) -> httpx.Response:
        r = await self.client.request(method, path, **kwargs)
        if r.status_code != expect:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r

    async def snapshot(self) -> dict[str, float]:
        assert self.api is not None and self.api.proc is not None
        cpu = group_cpu_seconds(self.api.proc.pid)
        metrics = (await self.client.get("/metrics")).text
        return {"cpu": cpu, **counters(metrics)}

    async def measure(self, scenario: str, n: int, request: Callable[[int], Awaitable[None]], warmup: int = 20) -> Cost:
        for i in range(warmup):
            await request(-1 - i)
        before = await self.snapshot() if self.api else {"cpu": 0.0}
        if self.api is None:
            raise RuntimeError("no API process")
        numbers = iter(range(n))
        latencies: list[float] = []

        async def worker() -> None:
            for i in numbers:
                started = time.perf_counter()
                await request(i)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        after = await self.snapshot()
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        mongo = {k: v for k, v in delta.items() if k.startswith("bench_mongodb") and v}
        by_command: dict[str, float] = {}
        for name, value in mongo.items():
            labels = dict(re.findall(r'(\w+)="([^"]*)"', name))
            by_command[f"{labels['command']} {labels['collection']}"] = round(value / n, 3)
        # The /metrics scrape itself is one request without Mongo or Redis work; its CPU is negligible here.
        return Cost(
            scenario,
            n,
            round(delta["cpu"] / n * 1000, 3),
            round(sum(mongo.values()) / n, 3),
            round(delta.get("bench_redis_round_trips_total", 0.0) / n, 3),
            int(delta.get('schedsvc_cache_requests_total{result="hit"}', 0)),
            int(delta.get('schedsvc_cache_requests_total{result="miss"}', 0)),
            round(sum(latencies) / len(latencies) * 1000, 2),
            by_command,
        )


async def scenarios(base: str, api: embedded.ServerProcess, n: int, concurrency: int) -> list[Cost]:
    async with httpx.AsyncClient(
        base_url=base, headers=AUTH, timeout=30, limits=httpx.Limits(max_connections=concurrency + 2)
    ) as client:
        b = Bench(client, api, concurrency)
        for i in range(SEED_JOBS):
            b.jobs.append((await b.call("POST", "/jobs", 201, json=job_body(f"seed-{i:03d}"))).json()["id"])
        seeded = b.jobs
        lists = ["/jobs?limit=20", "/jobs?limit=5&tag=team-a", "/jobs?limit=10&status=active", "/jobs?name=seed-"]
        created: list[str] = []
        paused: dict[str, bool] = {}

        async def get_job(i: int) -> None:
            await b.call("GET", f"/jobs/{seeded[i % len(seeded)]}", 200)

        async def list_jobs(i: int) -> None:
            await b.call("GET", lists[i % len(lists)], 200)

        async def runs(i: int) -> None:
            await b.call("GET", f"/jobs/{seeded[i % len(seeded)]}/runs?limit=10", 200)

        async def preview(i: int) -> None:
            body = {"schedule": {"kind": "cron", "expression": "*/15 * * * *", "timezone": "UTC"}, "count": 10}
            await b.call("POST", "/schedules/preview", 200, json=body)

        async def create(i: int) -> None:
            r = await b.call(
                "POST",
                "/jobs",
                201,
                json=job_body(f"bench-{uuid.uuid4().hex[:8]}"),
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            created.append(r.json()["id"])

        async def patch(i: int) -> None:
            await b.call(
                "PATCH", f"/jobs/{seeded[i % len(seeded)]}", 200, json={"metadata": {"rev": uuid.uuid4().hex[:8]}}
            )

        async def pause_resume(i: int) -> None:
            job = seeded[i % len(seeded)]
            action = "resume" if paused.get(job) else "pause"
            paused[job] = not paused.get(job)
            await b.call("POST", f"/jobs/{job}/{action}", 200)

        async def remove(i: int) -> None:
            await b.call("DELETE", f"/jobs/{created.pop()}", 204)

        async def write_one_read_another(i: int) -> None:
            """A tenant's traffic: a write to one job, then a read of another of its jobs."""
            await b.call("PATCH", f"/jobs/{seeded[0]}", 200, json={"metadata": {"rev": uuid.uuid4().hex[:8]}})
            await b.call("GET", f"/jobs/{seeded[1 + i % (len(seeded) - 1)]}", 200)

        results = [
            await b.measure("GET /jobs/{id}", n, get_job),
            await b.measure("GET /jobs", n, list_jobs),
            await b.measure("GET /jobs/{id}/runs", n, runs),
            await b.measure("POST /schedules/preview", n, preview),
            await b.measure("POST /jobs", n, create, warmup=0),
            await b.measure("PATCH /jobs/{id}", n, patch),
            await b.measure("POST /jobs/{id}/pause|resume", n, pause_resume),
            await b.measure("DELETE /jobs/{id}", min(n, len(created)), remove, warmup=0),
            await b.measure("PATCH job A + GET job B (pair)", n // 2, write_one_read_another),
        ]
        return results


async def bare(base: str, proc: embedded.ServerProcess, n: int, concurrency: int) -> Cost:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for _ in range(20):
            await client.get("/hello")
        assert proc.proc is not None
        cpu0 = group_cpu_seconds(proc.proc.pid)
        numbers = iter(range(n))
        latencies: list[float] = []

        async def worker() -> None:
            for _ in numbers:
                started = time.perf_counter()
                (await client.get("/hello")).raise_for_status()
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu = group_cpu_seconds(proc.proc.pid) - cpu0
    return Cost(
        "bare Litestar GET /hello",
        n,
        round(cpu / n * 1000, 3),
        0.0,
        0.0,
        0,
        0,
        round(sum(latencies) / len(latencies) * 1000, 2),
        {},
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=300, help="measured requests per scenario")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--src", type=Path, default=REPO / "src", help="source tree of the schedsvc package to run")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="schedsvc-bench-cost-"))
    mongo, nats, redis = embedded.secantus(work / "mongo"), embedded.nats(work / "nats"), embedded.redis(work / "redis")
    load0 = os.getloadavg()[0]
    with embedded.running(mongo), embedded.running(nats), embedded.running(redis):
        settings = Settings(
            mongodb_uri=f"mongodb://127.0.0.1:{mongo.port}/?directConnection=true",
            database="benchcost",
            nats_url=f"nats://127.0.0.1:{nats.port}",
            redis_url=f"redis://127.0.0.1:{redis.port}/0",
            prefix="benchcost",
            roles=frozenset({"api"}),
            dev_mode=True,
            dev_api_key=KEY,
            rate_limit_per_minute=100_000_000,
            partitions=16,
            log_level="WARNING",
            port=embedded.free_port(),
        )
        api = embedded.service(settings, work / "api.log", name="api")
        # The counting sitecustomize first, then the source tree under test (ahead of the installed package).
        counting = {
            "PYTHONPATH": os.pathsep.join([str(HERE / "counting"), str(args.src.resolve())]),
            "SCHEDSVC_COUNT_COMMANDS": "1",
        }
        api = replace(api, env={**(api.env or {}), **counting})
        hello_port = embedded.free_port()
        (work / "hello_app.py").write_text(HELLO_APP)
        hello = embedded.ServerProcess(
            granian_argv("hello_app:app", hello_port),
            hello_port,
            work / "hello.log",
            "hello",
            {**os.environ, "PYTHONPATH": str(work)},
            ready_path="/hello",
        )
        try:
            api.start(wait=False)
            hello.start(wait=False)
            api.wait_ready(READY_TIMEOUT_SECONDS)
            hello.wait_ready(READY_TIMEOUT_SECONDS)
            results = asyncio.run(scenarios(api.url, api, args.requests, args.concurrency))
            results.append(asyncio.run(bare(hello.url, hello, args.requests, args.concurrency)))
        finally:
            api.stop()
            hello.stop()
    load1 = os.getloadavg()[0]
    bare_cpu = results[-1].cpu_ms_per_request or float("nan")
    print(
        f"# API cost per request: {args.requests} requests per scenario, {args.concurrency} concurrent, "
        f"source {args.src}; load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} cores; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(
        f"{'scenario':34} {'CPU ms':>7} {'x bare':>7} {'Mongo':>6} {'Redis':>6} {'hits':>5} {'miss':>5} "
        f"{'ms':>6}  MongoDB commands per request"
    )
    for c in results:
        detail = ", ".join(f"{k} {v}" for k, v in sorted(c.mongodb_by_command.items()))
        print(
            f"{c.scenario:34} {c.cpu_ms_per_request:7.2f} {c.cpu_ms_per_request / bare_cpu:7.1f} "
            f"{c.mongodb_commands_per_request:6.2f} {c.redis_round_trips_per_request:6.2f} {c.cache_hits:5d} "
            f"{c.cache_misses:5d} {c.mean_latency_ms:6.1f}  {detail}"
        )
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"load_average": [load0, load1], "results": [asdict(c) for c in results]}, indent=2)
        )


if __name__ == "__main__":
    main()
