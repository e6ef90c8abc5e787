"""The floor under a request that touches the database: how far below a bare endpoint's knee any API can
sit on this stack, whatever its own code does.

    .venv/bin/python loadtests/bench_floor.py [--requests 2000] [--rounds 2] [--concurrency 4]
        [--cpu-budget CORES] [--src DIR] [--json-out F]

Starts its own SecantusDB (Rust server unless SCHEDSVC_EMBEDDED_MONGODB=python), NATS and Redis on
loopback, then side by side, each under granian with one worker and the flags ``run_load.py`` gives the bare
app: the bare ``GET /hello`` (``run_load.HELLO_APP``); the same plus one Redis round trip; plus one pymongo
``find_one`` by ``_id``; plus both; plus both and a bearer check (``loadtests/floor_apps.py``); and the
service itself (``api`` role, Redis cache on) for its cheapest authenticated request (``GET /jobs/{id}``, a
cache hit) and an uncached read (``GET /jobs/{id}/runs``). Each round measures every scenario once, in
alternating order, after a warm-up: ``--requests`` requests from ``--concurrency`` clients, the CPU time
(user + system, from /proc) of the app's process group and of the database, NATS and Redis servers, and
client-side latency.

The implied knee is ``--cpu-budget`` cores (default: every core of the machine) divided by CPU per request,
once for the app process alone and once with the servers' CPU added (on one machine they share the cores).
Its ratio to the bare app's is independent of the budget. Nothing here is pass/fail; results go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from bench_api_cost import AUTH, KEY, counters, job_body  # this script's folder
from floor_apps import seed
from run_load import HELLO_APP, READY_TIMEOUT_SECONDS, granian_argv, group_cpu_seconds

from schedsvc import embedded

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVICE_JOBS = 20
FLOOR_DATABASE = "floor"
SERVICE_DATABASE = "floorsvc"


@dataclass(frozen=True)
class Scenario:
    name: str
    app: str
    """Which started app serves it (a key of :func:`apps`' result)."""
    path: Callable[[int], str]
    """The path of the i-th request."""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Sample:
    """One scenario measured once."""

    scenario: str
    round: int
    requests: int
    app_cpu_ms: float
    """CPU time of the app's process group (granian's main process and its worker) per request."""
    servers_cpu_ms: float
    """CPU time of the database, NATS and Redis servers per request."""
    client_cpu_ms: float
    """CPU time of this process (the load-generating clients) per request."""
    rate_rps: float
    """Requests per second the clients achieved (closed loop: each sends its next request on a reply)."""
    mean_ms: float
    p99_ms: float
    cache_hits: int = 0
    cache_misses: int = 0


@dataclass
class Row:
    """A scenario over every round, with its implied knees."""

    scenario: str
    app_cpu_ms: list[float]
    app_cpu_ms_mean: float
    servers_cpu_ms_mean: float
    rate_rps: float
    mean_ms: float
    p99_ms: float
    knee_app_rps: float
    ratio_app: float
    knee_with_servers_rps: float
    ratio_with_servers: float


def apps(backends: embedded.Backends, work: Path, src: Path) -> dict[str, embedded.ServerProcess]:
    """Every app this benchmark measures, not yet started."""
    (work / "hello_app.py").write_text(HELLO_APP)
    pythonpath = os.pathsep.join([str(work), str(HERE), str(src.resolve())])
    floor_env = {
        "FLOOR_MONGODB_URI": backends.settings().mongodb_uri,
        "FLOOR_DATABASE": FLOOR_DATABASE,
        "FLOOR_REDIS_URL": str(backends.settings().redis_url),
        "FLOOR_PREFIX": f"floor{os.getpid()}:",
        "FLOOR_KEY": KEY,
    }
    started: dict[str, embedded.ServerProcess] = {}
    for name, target, extra in [
        ("hello", "hello_app:app", {}),
        ("redis", "floor_apps:create_app", {"FLOOR_APP": "redis"}),
        ("mongo", "floor_apps:create_app", {"FLOOR_APP": "mongo"}),
        ("both", "floor_apps:create_app", {"FLOOR_APP": "both"}),
        ("full", "floor_apps:create_app", {"FLOOR_APP": "full"}),
    ]:
        port = embedded.free_port()
        env = {**os.environ, **floor_env, **extra, "PYTHONPATH": pythonpath}
        argv = granian_argv(target, port, factory=target.endswith("create_app"))
        # "full" answers only an authenticated request; an open port is ready enough for it.
        ready = None if name == "full" else "/hello"
        started[name] = embedded.ServerProcess(argv, port, work / f"{name}.log", name, env, ready_path=ready)
    settings = backends.api_settings(
        KEY, database=SERVICE_DATABASE, prefix=f"floorsvc{os.getpid()}", partitions=16, port=embedded.free_port()
    )
    service = embedded.service(settings, work / "service.log", name="service")
    service.env = {**(service.env or {}), "PYTHONPATH": str(src.resolve())}
    started["service"] = service
    return started


@contextlib.contextmanager
def running_all(servers: dict[str, embedded.ServerProcess]) -> Iterator[None]:
    """Start every server at once, wait for all, and stop every one of them afterwards, whatever happens."""
    try:
        for server in servers.values():
            server.start(wait=False)
        for server in servers.values():
            server.wait_ready(READY_TIMEOUT_SECONDS)
        yield
    finally:
        for server in servers.values():
            server.stop()


def pgid(server: embedded.ServerProcess) -> int:
    if server.proc is None:
        raise RuntimeError(f"{server.name} is not running")
    return server.proc.pid


class Connection:
    """One keep-alive HTTP/1.1 connection that sends GETs and reads replies with a Content-Length.

    httpx spends ~2 ms of CPU per request here, more than the apps measured; on two shared cores the
    client must stay small, or it measures itself.
    """

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"127.0.0.1:{port}", **headers}.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\n{self.head}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        if "content-length" not in fields:
            raise RuntimeError(f"GET {path}: a reply without Content-Length ({status_line})")
        body = await self.reader.readexactly(int(fields["content-length"]))
        return int(status_line.split()[1]), body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


async def service_cache_counters(app: embedded.ServerProcess) -> dict[str, float]:
    if app.name != "service":
        return {}
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
        return counters((await client.get("/metrics")).text)


async def measure(
    scenario: Scenario,
    app: embedded.ServerProcess,
    servers: list[int],
    n: int,
    concurrency: int,
    warmup: int,
    round_: int,
) -> Sample:
    connections = [Connection(app.port, scenario.headers) for _ in range(concurrency)]
    latencies: list[float] = []

    async def run(numbers: Iterator[int], measured: bool) -> None:
        async def worker(connection: Connection) -> None:
            for i in numbers:
                started = time.perf_counter()
                status, body = await connection.get(scenario.path(i))
                if status != 200:
                    raise RuntimeError(f"{scenario.name}: {status} {body[:300]!r}")
                if measured:
                    latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker(c) for c in connections))

    try:
        await run(iter(range(warmup)), measured=False)
        cache0 = await service_cache_counters(app)
        app_cpu0, servers_cpu0, own0 = group_cpu_seconds(pgid(app)), sum(map(group_cpu_seconds, servers)), os.times()
        wall0 = time.monotonic()
        await run(iter(range(n)), measured=True)
        wall = time.monotonic() - wall0
        app_cpu1, servers_cpu1, own1 = group_cpu_seconds(pgid(app)), sum(map(group_cpu_seconds, servers)), os.times()
        cache1 = await service_cache_counters(app)
    finally:
        for c in connections:
            await c.close()
    hit, miss = 'schedsvc_cache_requests_total{result="hit"}', 'schedsvc_cache_requests_total{result="miss"}'
    client_cpu = (own1.user + own1.system) - (own0.user + own0.system)
    return Sample(
        scenario.name,
        round_,
        n,
        round((app_cpu1 - app_cpu0) / n * 1000, 3),
        round((servers_cpu1 - servers_cpu0) / n * 1000, 3),
        round(client_cpu / n * 1000, 3),
        round(n / wall, 1),
        round(statistics.fmean(latencies) * 1000, 2),
        round(statistics.quantiles(latencies, n=100)[98] * 1000, 2),
        int(cache1.get(hit, 0) - cache0.get(hit, 0)),
        int(cache1.get(miss, 0) - cache0.get(miss, 0)),
    )


async def seed_service(url: str) -> list[str]:
    """Jobs of the service's dev tenant for the ``/jobs/{id}`` scenarios."""
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
        ids = []
        for i in range(SERVICE_JOBS):
            r = await client.post("/jobs", json=job_body(f"floor-{i:03d}"))
            if r.status_code != 201:
                raise RuntimeError(f"seeding the service: {r.status_code} {r.text[:300]}")
            ids.append(r.json()["id"])
        return ids


def scenarios(jobs: list[str]) -> list[Scenario]:
    return [
        Scenario("bare GET /hello", "hello", lambda i: "/hello"),
        Scenario("hello + 1 Redis EVALSHA", "redis", lambda i: "/hello"),
        Scenario("hello + 1 find_one", "mongo", lambda i: "/hello"),
        Scenario("hello + Redis + find_one", "both", lambda i: "/hello"),
        Scenario("hello + bearer + Redis + find_one", "full", lambda i: "/hello", AUTH),
        Scenario("service GET /jobs/{id} (cached)", "service", lambda i: f"/jobs/{jobs[i % len(jobs)]}", AUTH),
        Scenario(
            "service GET /jobs/{id}/runs", "service", lambda i: f"/jobs/{jobs[i % len(jobs)]}/runs?limit=10", AUTH
        ),
    ]


def summarize(samples: list[Sample], names: list[str], budget: float) -> list[Row]:
    """Means over the rounds; knees and ratios from the mean CPU per request."""
    by_name = {name: [s for s in samples if s.scenario == name] for name in names}

    def mean(name: str, attr: str) -> float:
        return statistics.fmean(getattr(s, attr) for s in by_name[name])

    bare = names[0]
    bare_app, bare_all = mean(bare, "app_cpu_ms"), mean(bare, "app_cpu_ms") + mean(bare, "servers_cpu_ms")
    rows = []
    for name in names:
        app, servers = mean(name, "app_cpu_ms"), mean(name, "servers_cpu_ms")
        rows.append(
            Row(
                name,
                [s.app_cpu_ms for s in by_name[name]],
                round(app, 3),
                round(servers, 3),
                round(mean(name, "rate_rps")),
                round(mean(name, "mean_ms"), 2),
                round(mean(name, "p99_ms"), 2),
                round(budget * 1000 / app),
                round(bare_app / app, 3),
                round(budget * 1000 / (app + servers)),
                round(bare_all / (app + servers), 3),
            )
        )
    return rows


def print_table(rows: list[Row], header: str) -> None:
    print(header)
    print(
        f"{'scenario':36} {'app CPU ms/req (rounds)':>26} {'mean':>6} {'servers':>7} {'req/s':>6} {'lat ms':>7} "
        f"{'p99 ms':>7} {'knee':>6} {'ratio':>6} {'knee+srv':>8} {'ratio':>6}"
    )
    for r in rows:
        rounds = ", ".join(f"{c:.2f}" for c in r.app_cpu_ms)
        print(
            f"{r.scenario:36} {rounds:>26} {r.app_cpu_ms_mean:6.3f} {r.servers_cpu_ms_mean:7.3f} {r.rate_rps:6.0f} "
            f"{r.mean_ms:7.2f} "
            f"{r.p99_ms:7.2f} {r.knee_app_rps:6d} {r.ratio_app:6.3f} {r.knee_with_servers_rps:8d} "
            f"{r.ratio_with_servers:6.3f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="measured requests per scenario and round")
    p.add_argument("--rounds", type=int, default=2, help="every scenario once per round, order alternating")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent clients (one connection each)")
    p.add_argument("--warmup", type=int, default=100, help="unmeasured requests before each measurement")
    p.add_argument("--cpu-budget", type=float, default=float(os.cpu_count() or 1), help="cores for the knee")
    p.add_argument("--src", type=Path, default=REPO / "src", help="source tree of the schedsvc package to run")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # so that every server is stopped on the way out

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="schedsvc-bench-floor-"))
    load0 = os.getloadavg()
    samples: list[Sample] = []
    with embedded.backends(work) as backends:
        servers = apps(backends, work, args.src)
        asyncio.run(seed(backends.settings().mongodb_uri, FLOOR_DATABASE))
        with running_all(servers):
            jobs = asyncio.run(seed_service(servers["service"].url))
            plan = scenarios(jobs)
            server_groups = [pgid(backends.mongo), pgid(backends.nats), pgid(backends.redis)]
            for round_ in range(args.rounds):
                for sc in plan if round_ % 2 == 0 else reversed(plan):
                    sample = asyncio.run(
                        measure(
                            sc, servers[sc.app], server_groups, args.requests, args.concurrency, args.warmup, round_
                        )
                    )
                    print(f"round {round_ + 1}: {sample}", flush=True)
                    samples.append(sample)
    load1 = os.getloadavg()
    rows = summarize(samples, [sc.name for sc in plan], args.cpu_budget)
    print_table(
        rows,
        f"# floor: {args.requests} requests x {args.rounds} rounds per scenario, {args.concurrency} concurrent, "
        f"knee = {args.cpu_budget:g} cores / CPU per request; load average (1, 5, 15 min) "
        f"{' '.join(f'{x:.2f}' for x in load0)} -> {' '.join(f'{x:.2f}' for x in load1)} on {os.cpu_count()} "
        f"cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {backends.mongo.name}",
    )
    shutil.rmtree(work, ignore_errors=True)  # kept when the run fails: the servers' logs are there
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "load_average": [load0, load1],
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "samples": [asdict(s) for s in samples],
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
