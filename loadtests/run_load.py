"""One command for the Locust load test of the schedsvc API on a local stack.

Starts, on loopback ports of its own: SecantusDB (MongoDB wire protocol), nats-server with JetStream, a
private redis-server, ``--api-replicas`` ``schedsvc serve`` processes with the ``api`` role behind a small
round-robin TCP load balancer (asyncio, in this process), one ``timing,execution`` replica, and a webhook
receiver for the jobs that fire. Then it creates ``--tenants`` tenants with one API key per Locust user,
seeds jobs, runs Locust headless and prints a pass/fail summary. Everything it started is stopped at the
end, also on failure or Ctrl-C; Locust's CSV and HTML reports stay under ``loadtests/reports/``.

Targets (pass/fail): no failed request, p99 latency at most ``--p99-ms`` (500 ms), and the achieved rate
at least 95% of the offered rate.

Usage::

    .venv/bin/python loadtests/run_load.py                       # 6,000 req/min (100 req/s) for 120 s
    .venv/bin/python loadtests/run_load.py --rate 100 --duration 300
    .venv/bin/python loadtests/run_load.py --step                # raise the rate until a target breaks
    .venv/bin/python loadtests/run_load.py --baseline            # the same steps against a bare hello app
    .venv/bin/python loadtests/run_load.py --smoke               # < 60 s, for the test suite
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from schedsvc import embedded
from schedsvc.config import Settings
from schedsvc.testing import WebhookReceiver

BIN = Path(sys.executable).parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
REPORTS = Path(__file__).resolve().parent / "reports"
READY_TIMEOUT_SECONDS = 90.0

HELLO_APP = """
from litestar import Litestar, get

@get("/hello", sync_to_thread=False)
def hello() -> dict[str, str]:
    return {"hello": "world"}

app = Litestar([hello])
"""


# -- processes ------------------------------------------------------------------------------------


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) of every live process in a process group, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ...
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def cpu_snapshot(groups: dict[str, int]) -> dict[str, float]:
    snap = {name: group_cpu_seconds(pgid) for name, pgid in groups.items()}
    t = os.times()
    snap["run_load.py (balancer, receiver)"] = t.user + t.system
    return snap


class BackgroundLoop:
    """An asyncio loop in a daemon thread for the load balancer and the webhook receiver."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="load-io", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


# -- load balancer and receiver -------------------------------------------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def start_balancer(backends: list[int]) -> tuple[asyncio.Server, int]:
    """Round-robin TCP proxy: each client connection goes to the next backend port."""
    turn = itertools.cycle(backends)

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", next(turn))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    return server, server.sockets[0].getsockname()[1]


# -- the stack ------------------------------------------------------------------------------------


@dataclass
class Stack:
    """What a load run talks to: the balancer's URL, the API replicas' URLs and the credentials file."""

    url: str
    api_urls: list[str]
    keys_file: Path | None
    receiver_url: str
    receiver: WebhookReceiver | None
    work: Path
    groups: dict[str, int] = field(default_factory=dict)
    """Process group of each component, for CPU accounting."""


def service_settings(mongo_uri: str, nats_url: str, redis_url: str, prefix: str, roles: str) -> Settings:
    return Settings(
        mongodb_uri=mongo_uri,
        database=prefix,
        nats_url=nats_url,
        redis_url=redis_url,
        prefix=prefix,
        roles=frozenset(roles.split(",")),
        log_level=os.environ.get("SCHEDSVC_LOG_LEVEL", "WARNING"),
        partitions=64,
        target_allow_networks=(ipaddress.ip_network("127.0.0.0/8"),),
    )


async def create_credentials(mongo_uri: str, database: str, tenants: int, users: int) -> list[dict[str, str]]:
    """``tenants`` tenants and one API key per user (round-robin over tenants), as the CLI creates them."""
    from schedsvc.config import Settings
    from schedsvc.store import MongoTenantStore, connect
    from schedsvc.store import database as db_of

    settings = Settings(mongodb_uri=mongo_uri, database=database)
    client = connect(settings)
    try:
        store = MongoTenantStore(db_of(client, settings))
        names = [f"tenant-{i:04d}" for i in range(tenants)]
        sem = asyncio.Semaphore(16)

        async def tenant(name: str) -> dict[str, str]:
            async with sem:
                key, _secret = await store.create_tenant(name)
                return {"tenant": name, "key": key.key}

        async def extra_key(name: str) -> dict[str, str]:
            async with sem:
                return {"tenant": name, "key": (await store.create_key(name)).key}

        creds = list(await asyncio.gather(*(tenant(n) for n in names)))
        creds += await asyncio.gather(*(extra_key(names[i % tenants]) for i in range(tenants, users)))
        return creds
    finally:
        await client.close()


async def seed_jobs(url: str, creds: list[dict[str, str]], tenants: int, per_tenant: int, target: str) -> int:
    """Every tenant starts with ``per_tenant`` jobs (through the API), one in ten firing every minute."""
    firsts = {c["tenant"]: c["key"] for c in creds[:tenants]}
    sem = asyncio.Semaphore(12)
    teams = ("billing", "search", "growth", "infra", "data")
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(tenant: str, key: str, i: int) -> None:
            schedule: dict[str, Any] = (
                {"kind": "interval", "seconds": 60}
                if i % 10 == 0
                else {"kind": "cron", "expression": f"{i % 60} * * * *", "timezone": "UTC"}
            )
            body = {
                "name": f"seed-{i:03d}",
                "schedule": schedule,
                "target": {"kind": "http", "url": target},
                "tags": [f"team-{teams[i % len(teams)]}"],
            }
            async with sem:
                r = await client.post("/jobs", json=body, headers={"Authorization": f"Bearer {key}"})
            if r.status_code != 201:
                raise RuntimeError(
                    f"seeding failed: {r.status_code} {r.text[:300]} "
                    f"(X-Request-ID {r.headers.get('x-request-id')}, tenant {tenant})"
                )

        await asyncio.gather(*(one(t, k, i) for t, k in firsts.items() for i in range(per_tenant)))
    return len(firsts) * per_tenant


@contextlib.contextmanager
def service_stack(args: argparse.Namespace, work: Path, io: BackgroundLoop) -> Iterator[Stack]:
    """SecantusDB, NATS, Redis, API replicas behind the balancer, one timing+execution replica."""
    procs: list[embedded.ServerProcess] = []
    try:
        mongo = embedded.secantus(work / "mongodb")
        nats = embedded.nats(work / "nats")
        redis = embedded.redis(work / "redis")
        t0 = time.monotonic()
        for server in (mongo, nats, redis):
            server.start()
            procs.append(server)
        mongo_uri = f"mongodb://127.0.0.1:{mongo.port}/?directConnection=true"
        nats_url = f"nats://127.0.0.1:{nats.port}"
        redis_url = f"redis://127.0.0.1:{redis.port}/0"
        prefix = f"load{os.getpid()}"
        receiver = io.run(WebhookReceiver(keep_bodies=False).start())
        api = service_settings(mongo_uri, nats_url, redis_url, prefix, "api")
        migrate = subprocess.run(
            [str(BIN / "schedsvc"), "migrate"], env={**os.environ, **api.to_env()}, capture_output=True, text=True
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"schedsvc migrate failed: {migrate.stderr[-2000:]}")
        replicas = [
            embedded.service(replace(api, port=embedded.free_port()), work / f"api-{i}.log", name=f"api-{i}")
            for i in range(args.api_replicas)
        ]
        worker_settings = service_settings(mongo_uri, nats_url, redis_url, prefix, "timing,execution")
        worker = embedded.service(
            replace(worker_settings, port=embedded.free_port()), work / "worker.log", name="timing+execution"
        )
        for p in [*replicas, worker]:
            p.start(wait=False)
            procs.append(p)
        for p in [*replicas, worker]:
            p.wait_ready(READY_TIMEOUT_SECONDS)
        balancer, lb_port = io.run(start_balancer([p.port for p in replicas]))
        print(
            f"stack ready in {time.monotonic() - t0:.1f}s: {len(replicas)} API replicas behind "
            f"127.0.0.1:{lb_port}, 1 timing+execution replica, {mongo.name}; logs in {work}",
            flush=True,
        )
        keys_file = work / "keys.json"
        creds = io.run(create_credentials(mongo_uri, prefix, args.tenants, args.users), timeout=300)
        keys_file.write_text(json.dumps(creds))
        receiver_url = receiver.url("/hook")
        seeded = io.run(
            seed_jobs(f"http://127.0.0.1:{lb_port}", creds, args.tenants, args.seed_jobs, receiver_url), timeout=600
        )
        print(f"{args.tenants} tenants, {len(creds)} API keys, {seeded} seeded jobs", flush=True)
        try:
            groups = {p.name: p.proc.pid for p in [*replicas, worker] if p.proc}
            groups.update(
                {"secantusdb": mongo.proc.pid, "nats": nats.proc.pid, "redis": redis.proc.pid}
                if mongo.proc and nats.proc and redis.proc
                else {}
            )
            yield Stack(
                f"http://127.0.0.1:{lb_port}",
                [p.url for p in replicas],
                keys_file,
                receiver_url,
                receiver,
                work,
                groups,
            )
        finally:
            for p in [*replicas, worker]:
                if not p.running:
                    print(f"warning: {p.name} exited during the run ({p.proc and p.proc.returncode}); see {p.log}")
            balancer.close()
            io.run(receiver.close())
    finally:
        for p in reversed(procs):
            p.stop()


def granian_argv(target: str, port: int, factory: bool = False) -> list[str]:
    """One granian worker on loopback without logs: how every benchmark starts the bare app and its kin;
    the service gets the same (``schedsvc serve``: ASGI, one worker, no access log)."""
    argv = [str(BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", "1", "--no-log", *(["--factory"] if factory else []), target]
    return argv


@contextlib.contextmanager
def hello_stack(args: argparse.Namespace, work: Path, io: BackgroundLoop) -> Iterator[Stack]:
    """The baseline: the same number of bare Litestar/granian replicas behind the same balancer."""
    (work / "hello_app.py").write_text(HELLO_APP)
    procs: list[embedded.ServerProcess] = []
    try:
        for i in range(args.api_replicas):
            port = embedded.free_port()
            argv = granian_argv("hello_app:app", port)
            env = {**os.environ, "PYTHONPATH": str(work)}
            p = embedded.ServerProcess(argv, port, work / f"hello-{i}.log", f"hello-{i}", env, ready_path="/hello")
            p.start(wait=False)
            procs.append(p)
        for p in procs:
            p.wait_ready(READY_TIMEOUT_SECONDS)
        balancer, lb_port = io.run(start_balancer([p.port for p in procs]))
        print(f"baseline ready: {len(procs)} hello replicas behind 127.0.0.1:{lb_port}", flush=True)
        try:
            yield Stack(
                f"http://127.0.0.1:{lb_port}",
                [p.url for p in procs],
                None,
                "",
                None,
                work,
                {p.name: p.proc.pid for p in procs if p.proc},
            )
        finally:
            balancer.close()
    finally:
        for p in reversed(procs):
            p.stop()


# -- Locust ---------------------------------------------------------------------------------------


@dataclass
class Result:
    """One Locust run, from its CSV (aggregated over every request type)."""

    label: str
    offered_rps: float
    requests: int
    failures: int
    achieved_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    by_name: dict[str, dict[str, float]]
    failure_samples: list[str]
    report: str
    cpu_share: dict[str, float] = field(default_factory=dict)
    """Per component: CPU seconds used during the run divided by its wall time (1.0 = one core)."""
    load_average: float = 0.0
    """The machine's 1-minute load average at the end (other users' work included)."""

    def verdict(self, p99_target: float) -> list[str]:
        """Broken targets; empty when the run passed."""
        broken = []
        if self.requests == 0:
            broken.append("no requests were made")
        if self.failures:
            broken.append(f"{self.failures} failed requests")
        if self.p99_ms > p99_target:
            broken.append(f"p99 {self.p99_ms:.0f} ms > {p99_target:.0f} ms")
        if self.achieved_rps < 0.95 * self.offered_rps:
            broken.append(f"achieved {self.achieved_rps:.1f} req/s < 95% of offered {self.offered_rps:.0f}")
        return broken


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def run_locust(
    stack: Stack, user_class: str, rate: float, users: int, seconds: int, spawn_rate: float, out: Path, label: str
) -> Result:
    """Locust headless at ``rate`` req/s offered by ``users`` users; stats reset once all users run."""
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / label
    ramp = users / spawn_rate
    argv = [
        str(BIN / "locust"),
        "-f",
        str(LOCUSTFILE),
        user_class,
        "--headless",
        "-u",
        str(users),
        "-r",
        str(spawn_rate),
        "--run-time",
        f"{round(ramp + seconds)}s",
        "-H",
        stack.url,
        "--reset-stats",
        "--only-summary",
        "--stop-timeout",
        "5",
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--loglevel",
        "WARNING",
    ]
    env = {
        **os.environ,
        "SCHEDSVC_LOAD_USER_RPS": f"{rate / users:.6f}",
        "SCHEDSVC_LOAD_TARGET_URL": stack.receiver_url or "http://127.0.0.1:9/hook",
    }
    if stack.keys_file is not None:
        env["SCHEDSVC_LOAD_KEYS"] = str(stack.keys_file)
    print(f"[{label}] locust: {users} users, {rate:.0f} req/s offered, {seconds}s after a {ramp:.0f}s ramp", flush=True)
    before, started = cpu_snapshot(stack.groups), time.monotonic()
    with (out / f"{label}.locust.log").open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            locust_cpu = 0.0
            deadline = time.monotonic() + ramp + seconds + 120
            while proc.poll() is None and time.monotonic() < deadline:
                locust_cpu = group_cpu_seconds(proc.pid) or locust_cpu  # read before the group exits
                time.sleep(1)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    wall = time.monotonic() - started
    after = cpu_snapshot(stack.groups)
    cpu_share = {name: round((after[name] - before.get(name, 0.0)) / wall, 2) for name in after}
    cpu_share["locust"] = round(locust_cpu / wall, 2)
    with Path(f"{prefix}_stats.csv").open() as f:
        rows = list(csv.DictReader(f))
    agg = next(r for r in rows if r["Name"] == "Aggregated")
    by_name = {
        r["Name"]: {
            "requests": _num(r["Request Count"]),
            "failures": _num(r["Failure Count"]),
            "p50_ms": _num(r["50%"]),
            "p99_ms": _num(r["99%"]),
        }
        for r in rows
        if r["Name"] != "Aggregated"
    }
    failures_csv = Path(f"{prefix}_failures.csv")
    samples = []
    if failures_csv.exists():
        with failures_csv.open() as f:
            samples = [
                f"{r['Method']} {r['Name']}: {r['Error'][:200]} (x{r['Occurrences']})" for r in csv.DictReader(f)
            ][:10]
    return Result(
        label=label,
        offered_rps=rate,
        requests=int(_num(agg["Request Count"])),
        # Over the measured period (stats reset once every user runs); Locust's own Requests/s divides
        # by the time between the first and last request, which overstates short sparse runs.
        failures=int(_num(agg["Failure Count"])),
        achieved_rps=round(_num(agg["Request Count"]) / seconds, 1),
        p50_ms=_num(agg["50%"]),
        p95_ms=_num(agg["95%"]),
        p99_ms=_num(agg["99%"]),
        max_ms=_num(agg["Max Response Time"]),
        by_name=by_name,
        failure_samples=samples,
        report=f"{prefix}.html",
        cpu_share=cpu_share,
        load_average=os.getloadavg()[0],
    )


def print_result(r: Result, p99_target: float) -> None:
    broken = r.verdict(p99_target)
    print(f"[{r.label}] {'PASS' if not broken else 'FAIL: ' + '; '.join(broken)}")
    print(
        f"  offered {r.offered_rps:.0f} req/s ({r.offered_rps * 60:.0f}/min), achieved {r.achieved_rps:.1f} req/s, "
        f"{r.requests} requests, {r.failures} failures"
    )
    print(f"  latency p50 {r.p50_ms:.0f} ms, p95 {r.p95_ms:.0f} ms, p99 {r.p99_ms:.0f} ms, max {r.max_ms:.0f} ms")
    for name, s in sorted(r.by_name.items()):
        print(
            f"    {name:32s} {int(s['requests']):7d} req {int(s['failures']):4d} fail "
            f"p50 {s['p50_ms']:5.0f} ms p99 {s['p99_ms']:6.0f} ms"
        )
    for sample in r.failure_samples:
        print(f"  failure: {sample}")
    shares = ", ".join(f"{name} {share:.2f}" for name, share in sorted(r.cpu_share.items(), key=lambda kv: -kv[1]))
    print(
        f"  CPU (cores) during the run: {shares}; machine load average {r.load_average:.1f} on {os.cpu_count()} cores"
    )
    print(f"  report: {r.report}", flush=True)


def api_counters(stack: Stack) -> dict[str, float]:
    """Counters of every API replica, summed: HTTP requests, response-cache lookups and, when the replicas run
    with ``loadtests/counting`` on PYTHONPATH and SCHEDSVC_COUNT_COMMANDS=1, MongoDB commands and Redis round
    trips."""
    totals: dict[str, float] = {}
    for url in stack.api_urls:
        for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
            if line.startswith(
                (
                    "schedsvc_http_requests_total{",
                    "schedsvc_cache_requests_total{",
                    "bench_mongodb_commands_total{",
                    "bench_redis_round_trips_total ",
                )
            ):
                name, value = line.rsplit(" ", 1)
                key = "http_requests" if name.startswith("schedsvc_http_requests_total") else name
                totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def print_api_counters(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What the API replicas did during a run, per request they served."""
    d = {k: v - before.get(k, 0.0) for k, v in after.items()}
    requests = d.get("http_requests", 0.0) or 1.0
    hits = d.get('schedsvc_cache_requests_total{result="hit"}', 0.0)
    lookups = hits + d.get('schedsvc_cache_requests_total{result="miss"}', 0.0)
    print(f"  API replicas served {requests:.0f} requests (ramp included)")
    if lookups:
        print(f"  response cache: {hits:.0f} hits in {lookups:.0f} lookups ({100 * hits / lookups:.1f}%)")
    mongo = {k.split("{", 1)[1].rstrip("}"): v for k, v in d.items() if k.startswith("bench_mongodb") and v}
    if mongo:
        top = sorted(mongo.items(), key=lambda kv: -kv[1])[:6]
        print(
            f"  API MongoDB commands per request: {sum(mongo.values()) / requests:.3f}; "
            + ", ".join(f"{k} {v / requests:.3f}" for k, v in top)
        )
        print(f"  API Redis round trips per request: {d.get('bench_redis_round_trips_total', 0.0) / requests:.3f}")
    return d


def run_steps(
    stack: Stack, user_class: str, args: argparse.Namespace, out: Path, tag: str, rates: str
) -> dict[str, Any]:
    """Raise the offered rate step by step until a target breaks; the knee is the last passing step."""
    results = []
    knee: Result | None = None
    for rate in [float(x) for x in rates.split(",")]:
        r = run_locust(
            stack, user_class, rate, args.users, args.step_duration, args.spawn_rate, out, f"{tag}-{int(rate)}rps"
        )
        print_result(r, args.p99_ms)
        results.append(r)
        if r.verdict(args.p99_ms):
            break
        knee = r
    if knee:
        print(
            f"[{tag}] knee: {knee.offered_rps:.0f} req/s offered ({knee.achieved_rps:.1f} achieved, "
            f"p99 {knee.p99_ms:.0f} ms)"
        )
    else:
        print(f"[{tag}] no step met the targets")
    return {"knee_rps": knee.offered_rps if knee else 0.0, "steps": [r.__dict__ for r in results]}


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=100.0, help="offered requests per second (100 = 6,000/min)")
    p.add_argument("--duration", type=int, default=120, help="seconds measured after all users started")
    p.add_argument("--users", type=int, default=1000, help="Locust users = client services, one API key each")
    p.add_argument("--tenants", type=int, default=100)
    p.add_argument("--seed-jobs", type=int, default=10, help="jobs per tenant created before the load")
    p.add_argument("--spawn-rate", type=float, default=100.0)
    p.add_argument("--api-replicas", type=int, default=2)
    p.add_argument("--p99-ms", type=float, default=500.0, help="target: p99 latency at most this")
    p.add_argument("--step", action="store_true", help="raise the rate in steps to find the knee")
    p.add_argument("--baseline", action="store_true", help="step a bare Litestar/granian hello app the same way")
    p.add_argument("--rates", default="25,50,75,100,150,200,300", help="step mode: offered req/s per step")
    p.add_argument("--baseline-rates", default="100,200,400,600,800,1200", help="baseline mode: offered req/s per step")
    p.add_argument("--step-duration", type=int, default=40)
    p.add_argument("--smoke", action="store_true", help="a short run (< 60 s) checking that the harness works")
    p.add_argument("--json-out", type=Path, help="write the results as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, data) afterwards")
    args = p.parse_args(argv)
    if args.smoke:
        args.rate, args.duration, args.users, args.tenants, args.seed_jobs = 20.0, 15, 40, 4, 3
        args.spawn_rate = 40.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    mode = "smoke" if args.smoke else "step" if args.step else "baseline" if args.baseline else "load"
    out = REPORTS / f"{stamp}-{mode}"
    work = Path(tempfile.mkdtemp(prefix="schedsvc-load-"))
    io = BackgroundLoop()
    summary: dict[str, Any] = {"mode": mode, "started": stamp, "p99_target_ms": args.p99_ms, "reports": str(out)}
    ok = True

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        if args.step or not args.baseline:
            with service_stack(args, work, io) as stack:
                if args.step:
                    summary["service"] = run_steps(stack, "ClientService", args, out, "service", args.rates)
                    ok = summary["service"]["knee_rps"] > 0
                else:
                    counted = api_counters(stack)
                    r = run_locust(
                        stack, "ClientService", args.rate, args.users, args.duration, args.spawn_rate, out, mode
                    )
                    print_result(r, args.p99_ms)
                    summary["result"] = r.__dict__
                    summary["api_counters"] = print_api_counters(counted, api_counters(stack))
                    summary["receiver_calls"] = len(stack.receiver.calls) if stack.receiver else 0
                    ok = not r.verdict(args.p99_ms)
        if args.baseline:
            with hello_stack(args, work, io) as stack:
                summary["baseline"] = run_steps(stack, "HelloUser", args, out, "baseline", args.baseline_rates)
        if args.step and args.baseline and summary["baseline"]["knee_rps"]:
            ratio = summary["service"]["knee_rps"] / summary["baseline"]["knee_rps"]
            summary["ratio"] = ratio
            print(f"service knee / bare Litestar knee = {ratio:.4f}")
    except KeyboardInterrupt:
        print("interrupted; stopping everything", file=sys.stderr)
        ok = False
    except Exception as exc:
        print(f"load run failed: {exc}", file=sys.stderr)
        summary["error"] = f"{type(exc).__name__}: {exc}"
        ok = False
    finally:
        io.close()
        if args.keep or "error" in summary:
            print(f"logs and data kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
        if args.json_out:
            args.json_out.write_text(json.dumps(summary, indent=2, default=str))
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
