"""Server time of the console's pages with 10,000 jobs in one tenant, beside the API's GET /jobs.

    .venv/bin/python loadtests/bench_console.py [--jobs 10000] [--requests 200]

Starts its own SecantusDB, NATS and Redis on loopback and the service (API role, sessions in Redis), seeds
one tenant with ``--jobs`` jobs (through the job codec, in bulk: seeding is not what is measured) and two
runs per job (one in twenty failed), signs in once, then requests each page ``--requests`` times, one at a
time, over loopback: the latency is server time plus a loopback round trip. Prints p50/p95/p99 per page
and the ratio to the API's own page of jobs. Nothing here is pass/fail; results go to docs/console.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from schedsvc import embedded, names
from schedsvc.config import Settings
from schedsvc.domain.models import CronSchedule, HttpTarget, JobStatus
from schedsvc.store import connect, database, job_codec
from schedsvc.testing import job_document

KEY = "sk_00000000000000ab_" + "b" * 43
TENANT = "dev"


async def seed(settings: Settings, jobs: int) -> list[str]:
    """``jobs`` jobs of the dev tenant (every 10th paused, five tags) and two runs each; returns the job ids."""
    client = connect(settings)
    db = database(client, settings)
    now = datetime.now(UTC)
    ids: list[str] = []
    try:
        for start in range(0, jobs, 1000):
            docs, runs = [], []
            for i in range(start, min(jobs, start + 1000)):
                document = job_document(
                    TENANT,
                    settings.partitions,
                    next_run=now + timedelta(hours=1),
                    status=JobStatus.PAUSED if i % 10 == 0 else JobStatus.ACTIVE,
                    now=now,
                    name=f"bench-{i:05d}",
                    tags=[f"t{i % 5}"],
                    schedule=CronSchedule(expression=f"{i % 60} 3 * * *", timezone="Europe/Berlin"),
                    target=HttpTarget(url="https://hooks.example.com/x"),
                )
                job_id = document.id
                ids.append(job_id)
                docs.append(job_codec.encode(document))
                for day in (1, 2):
                    scheduled = now - timedelta(days=day, seconds=i)
                    failed = (i + day) % 20 == 0
                    runs.append(
                        {
                            "_id": f"{job_id}:{int(scheduled.timestamp() * 1000)}",
                            "jobId": job_id,
                            "tenant": TENANT,
                            "scheduledAt": scheduled,
                            "trigger": "scheduled",
                            "status": "failed" if failed else "succeeded",
                            "attempts": 3 if failed else 1,
                            "startedAt": scheduled + timedelta(milliseconds=40 + i % 500),
                            "finishedAt": scheduled + timedelta(milliseconds=300 + i % 500),
                            "httpStatus": 503 if failed else 200,
                            "error": "HTTP 503" if failed else None,
                            "expireAt": now + timedelta(days=30),
                        }
                    )
            await db[names.JOBS].insert_many(docs, ordered=False)
            await db[names.RUNS].insert_many(runs, ordered=False)
    finally:
        await client.close()
    return ids


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


async def measure(base: str, pages: dict[str, str], requests: int, cookies: dict[str, str]) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base, cookies=cookies, headers=headers, timeout=30) as client:
        for label, path in pages.items():
            latencies = []
            for _ in range(5):  # warm-up
                (await client.get(path.replace("{n}", "warm"))).raise_for_status()
            for n in range(requests):
                started = time.perf_counter()
                response = await client.get(path.replace("{n}", str(n)))
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or (path.startswith("/console") and "<main" not in response.text):
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
            results[label] = latencies
    return results


async def sign_in_and_find_pages(base: str, job_id: str) -> tuple[dict[str, str], dict[str, str]]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        signed_in = await client.post("/console/sign-in", data={"api_key": KEY})
        if signed_in.status_code != 303:
            raise RuntimeError(f"sign-in: {signed_in.status_code} {signed_in.text[:300]}")
        cookies = {"schedsvc_console": client.cookies["schedsvc_console"]}
        # A deep page: follow the "Next page" link 40 times (1,000 jobs in).
        path = "/console/jobs"
        for _ in range(40):
            page = await client.get(path)
            link = re.search(r'rel="next" href="([^"]+)"', page.text)
            if link is None:
                raise RuntimeError("no next page")
            path = link.group(1).replace("&amp;", "&")
    cursor = quote(parse_qs(urlsplit(path).query)["cursor"][0])
    pages = {
        "console: jobs, first page": "/console/jobs",
        "console: jobs, page 41": path,
        "console: jobs, status=paused": "/console/jobs?status=paused",
        "console: jobs, tag=t3": "/console/jobs?tag=t3",
        "console: jobs, name prefix": "/console/jobs?name=bench-097",
        "console: one job (fires, runs, chart)": f"/console/jobs/{job_id}",
        "console: failures": "/console/failures",
        "api: GET /jobs?limit=25 (Redis cache hit)": "/jobs?limit=25",
        # An unknown query parameter changes the cache key, not the query: the store call every time.
        "api: GET /jobs?limit=25 (uncached)": "/jobs?limit=25&bench={n}",
        "api: GET /jobs?limit=25&cursor= (page 41, uncached)": f"/jobs?limit=25&cursor={cursor}&bench={{n}}",
    }
    return pages, cookies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="schedsvc-bench-console-"))
    with embedded.backends(root) as servers:
        settings = servers.api_settings(KEY, port=embedded.free_port())
        with embedded.running(embedded.service(settings, root / "api.log")) as api:
            seeded = time.perf_counter()
            ids = asyncio.run(seed(settings, args.jobs))
            print(f"# seeded {len(ids)} jobs and {2 * len(ids)} runs in {time.perf_counter() - seeded:.0f} s")
            pages, cookies = asyncio.run(sign_in_and_find_pages(api.url, ids[len(ids) // 2]))
            load_before = os.getloadavg()
            results = asyncio.run(measure(api.url, pages, args.requests, cookies))
            load_after = os.getloadavg()
    print(f"# {args.jobs} jobs in one tenant, {args.requests} sequential requests per page after 5 warm-up")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"# load average (1/5/15 min) before {load_before}, after {load_after}")
    api_p50 = statistics.median(results["api: GET /jobs?limit=25 (uncached)"])
    print(f"{'page':52} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'p50 vs api uncached':>20}")
    for label, latencies in results.items():
        p50 = statistics.median(latencies)
        print(
            f"{label:52} {p50 * 1000:8.1f} {pct(latencies, 95):8.1f} {pct(latencies, 99):8.1f} {p50 / api_p50:19.2f}x"
        )


if __name__ == "__main__":
    main()
