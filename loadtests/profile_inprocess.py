"""The API's own CPU per request under the Locust mix, and where it goes (cProfile), without a profiler to install.

    .venv/bin/python loadtests/profile_inprocess.py [--requests 3000] [--concurrency 8] [--src DIR] [--top 30]
    .venv/bin/python loadtests/profile_inprocess.py --compare BEFORE_SRC [--rounds 2] [--requests 2000]

Starts its own SecantusDB (Rust server unless ``SCHEDSVC_EMBEDDED_MONGODB=python``) and Redis on loopback
(NATS: the machine's on 4222 when it runs, else a private one), builds the API app (``api`` role, Redis
cache on) in this process and drives it directly through ASGI — no HTTP server, no client library, so the
process's CPU is the app's, its drivers' and the event loop's — with the request mix of
``loadtests/locustfile.py`` (same weights, ten tenants, each tenant's own jobs). It runs the mix twice:
unprofiled, for the CPU time per request (``time.process_time``), then under cProfile (its clock also the
process's CPU time), for the top functions by own time and the share by package. ``--src`` runs another
source tree (before/after); ``--compare BEFORE_SRC`` runs BEFORE_SRC and ``--src`` alternately,
``--rounds`` times each (one process per run, each with its own servers, unprofiled), side by side.

What it leaves out: granian (HTTP parsing, the Rust side of sending), which is the same before and after.
Nothing here is pass/fail; results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import io
import os
import pstats
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=3000, help="requests per phase (unprofiled, profiled)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--src", type=Path, default=REPO / "src", help="source tree of the schedsvc package to run")
    p.add_argument("--top", type=int, default=30, help="functions to list by own time")
    p.add_argument("--callers", default="", help="also print the callers of functions matching this regex")
    p.add_argument("--no-profile", action="store_true", help="only the unprofiled phase and the counts")
    p.add_argument("--compare", type=Path, help="source tree to run alternately with --src (before/after)")
    p.add_argument("--rounds", type=int, default=2, help="runs of each tree with --compare")
    p.add_argument("--per-endpoint", type=int, default=300, help="requests per endpoint after the mix (0: none)")
    return p.parse_args()


ARGS = _args()
sys.path[:0] = [str(ARGS.src.resolve()), str(REPO)]

import msgspec  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402
from pymongo import monitoring  # noqa: E402
from redis.asyncio import connection as redis_connection  # noqa: E402
from tests.support import servers  # noqa: E402
from workload import TASK_WEIGHTS, TEAMS, list_filters  # noqa: E402  (this script's folder)

from schedsvc.api import create_app  # noqa: E402
from schedsvc.config import Settings  # noqa: E402

DEV_KEY = "sk_00000000000000dd_" + "d" * 43
SCHEDULES: list[dict[str, Any]] = [
    {"kind": "cron", "expression": "*/15 * * * *", "timezone": "Europe/Berlin"},
    {"kind": "cron", "expression": "0 9 * * 1-5", "timezone": "America/New_York"},
    {"kind": "interval", "seconds": 600},
    {"kind": "calendar", "every": 1, "unit": "weeks", "time": "07:30", "timezone": "UTC"},
]


class Counts(monitoring.CommandListener):
    """MongoDB commands (command monitoring) and Redis round trips (one ``send_packed_command`` each)."""

    def __init__(self) -> None:
        self.mongodb: Counter[str] = Counter()
        self.redis = 0
        monitoring.register(self)
        send = redis_connection.AbstractConnection.send_packed_command
        counts = self

        async def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            counts.redis += 1
            await send(conn, command, check_health)

        redis_connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        self.mongodb[f"{event.command_name} {target if isinstance(target, str) else '-'}"] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def snapshot(self) -> tuple[Counter[str], int, float, float]:
        hits = REGISTRY.get_sample_value("schedsvc_cache_requests_total", {"result": "hit"}) or 0.0
        misses = REGISTRY.get_sample_value("schedsvc_cache_requests_total", {"result": "miss"}) or 0.0
        return Counter(self.mongodb), self.redis, hits, misses


COUNTS = Counts()


class Asgi:
    """Calls the app the way an ASGI server would: one scope, the whole body at once."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.statuses: Counter[int] = Counter()

    async def call(
        self,
        method: str,
        path: str,
        key: str | None,
        body: Any = None,
        query: str = "",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        raw = msgspec.json.encode(body) if body is not None else b""
        head = [(b"host", b"127.0.0.1:8000"), (b"content-length", str(len(raw)).encode())]
        if body is not None:
            head.append((b"content-type", b"application/json"))
        if key:
            head.append((b"authorization", f"Bearer {key}".encode()))
        head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": head,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        status = 0
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        self.statuses[status] += 1
        data = b"".join(chunks)
        return status, (msgspec.json.decode(data) if data and status < 300 else None)


@dataclasses.dataclass
class Client:
    """One client service of a tenant: the locustfile's tasks with its weights."""

    key: str
    name: str
    rng: random.Random
    known: list[str] = dataclasses.field(default_factory=list)
    mine: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    async def step(self, api: Asgi) -> None:
        task = self.rng.choices(list(TASK_WEIGHTS), list(TASK_WEIGHTS.values()))[0]
        await getattr(self, f"_{task}")(api)

    async def _list(self, api: Asgi) -> None:
        _status, page = await api.call("GET", "/jobs", self.key, query="&".join(list_filters(self.rng)))
        if page:
            self.known = list(dict.fromkeys([*self.known, *(j["id"] for j in page["items"])]))[-200:]

    def _some(self) -> str | None:
        pool = self.known or list(self.mine)
        return self.rng.choice(pool) if pool else None

    async def _get(self, api: Asgi) -> None:
        job_id = self._some()
        if job_id is None:
            return await self._list(api)
        status, _ = await api.call("GET", f"/jobs/{job_id}", self.key)
        if status == 404 and job_id in self.known:
            self.known.remove(job_id)

    async def _runs(self, api: Asgi) -> None:
        job_id = self._some()
        if job_id is None:
            return await self._list(api)
        await api.call("GET", f"/jobs/{job_id}/runs", self.key, query=f"limit={self.rng.choice([10, 20])}")

    async def _preview(self, api: Asgi) -> None:
        body = {"schedule": self.rng.choice(SCHEDULES), "count": self.rng.choice([5, 10, 20])}
        await api.call("POST", "/schedules/preview", self.key, body)

    async def _create(self, api: Asgi) -> None:
        team = self.rng.choice(TEAMS)
        body = {
            "name": f"{self.name}-{uuid.uuid4().hex[:12]}",
            "schedule": self.rng.choice(SCHEDULES),
            "target": {"kind": "http", "url": "https://hooks.example.com/x", "method": "POST", "body": {"s": 1}},
            "tags": [f"team-{team}", self.name],
            "metadata": {"owner": self.name},
        }
        _status, job = await api.call("POST", "/jobs", self.key, body, headers={"Idempotency-Key": uuid.uuid4().hex})
        if job:
            self.mine[job["id"]] = {"version": job["version"], "paused": job["status"] == "paused"}

    async def _patch(self, api: Asgi) -> None:
        if not self.mine:
            return await self._create(api)
        job_id = self.rng.choice(list(self.mine))
        state = self.mine[job_id]
        body: dict[str, Any] = {"metadata": {"owner": self.name, "rev": uuid.uuid4().hex[:8]}}
        if self.rng.random() < 0.3:
            body["schedule"] = self.rng.choice(SCHEDULES)
        _status, job = await api.call(
            "PATCH", f"/jobs/{job_id}", self.key, body, headers={"If-Match": f'"{state["version"]}"'}
        )
        if job:
            state["version"] = job["version"]

    async def _pause(self, api: Asgi) -> None:
        if not self.mine:
            return await self._create(api)
        job_id = self.rng.choice(list(self.mine))
        state = self.mine[job_id]
        action = "resume" if state["paused"] else "pause"
        _status, job = await api.call(
            "POST", f"/jobs/{job_id}/{action}", self.key, headers={"If-Match": f'"{state["version"]}"'}
        )
        if job:
            state["version"], state["paused"] = job["version"], job["status"] == "paused"

    async def _delete(self, api: Asgi) -> None:
        if len(self.mine) < 3:
            return await self._create(api)
        job_id = next(iter(self.mine))
        state = self.mine.pop(job_id)
        await api.call("DELETE", f"/jobs/{job_id}", self.key, headers={"If-Match": f'"{state["version"]}"'})


async def drive(api: Asgi, clients: list[Client], n: int, concurrency: int, task: str | None = None) -> float:
    """Run ``n`` steps (the mix, or only ``task``) from ``concurrency`` loops; returns the CPU seconds taken."""
    remaining = n
    lock = asyncio.Lock()

    async def worker(offset: int) -> None:
        nonlocal remaining
        i = offset
        while True:
            async with lock:
                if remaining <= 0:
                    return
                remaining -= 1
            client = clients[i % len(clients)]
            await (client.step(api) if task is None else getattr(client, f"_{task}")(api))
            i += concurrency

    start = time.process_time()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return time.process_time() - start


def package_of(filename: str) -> str:
    for marker, name in (
        ("/schedsvc/", "schedsvc"),
        ("/litestar/", "litestar"),
        ("/pymongo/", "pymongo"),
        ("/bson/", "bson"),
        ("/redis/", "redis"),
        ("/msgspec/", "msgspec"),
        ("/prometheus_client/", "prometheus_client"),
        ("/asyncio/", "asyncio"),
        ("/nats/", "nats"),
        ("profile_inprocess.py", "this driver"),
    ):
        if marker in filename:
            return name
    return "other (stdlib, builtins)"


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="schedsvc-prof-"))
    mongo = servers.secantus(tmp / "mongo")
    redis = servers.redis(tmp / "redis")
    nats_url = "nats://127.0.0.1:4222"
    nats = None if servers.port_open(4222) else servers.nats(tmp / "nats")
    with servers.running(mongo), servers.running(redis):
        if nats is not None:
            nats.start()
            nats_url = f"nats://127.0.0.1:{nats.port}"
        try:
            await run(mongo.port, redis.port, nats_url)
        finally:
            if nats is not None:
                nats.stop()


async def run(mongo_port: int, redis_port: int, nats_url: str) -> None:
    token = uuid.uuid4().hex[:8]
    settings = Settings(
        mongodb_uri=f"mongodb://127.0.0.1:{mongo_port}/?directConnection=true",
        database=f"prof_{token}",
        nats_url=nats_url,
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        prefix=f"prof_{token}",
        roles=frozenset({"api"}),
        dev_mode=True,
        dev_api_key=DEV_KEY,
        rate_limit_per_minute=1_000_000,
        log_level="WARNING",
    )
    app = create_app(settings)
    api = Asgi(app)
    async with app.lifespan():
        keys = [DEV_KEY]
        for t in range(9):
            created, _ = await app.state.tenants.create_tenant(f"tenant{t}")
            keys.append(created.key)
        clients = [Client(keys[i % len(keys)], f"svc{i}", random.Random(i)) for i in range(40)]
        for client in clients:  # each service starts with a few jobs of its own
            for _ in range(3):
                await client._create(api)
        await drive(api, clients, 500, ARGS.concurrency)  # warm-up: keys validated, caches filled
        api.statuses.clear()
        mongodb, redis_trips, hits, misses = COUNTS.snapshot()
        cpu = await drive(api, clients, ARGS.requests, ARGS.concurrency)
        mongodb_after, redis_after, hits_after, misses_after = COUNTS.snapshot()
        n = ARGS.requests
        print(f"# src={ARGS.src} requests={n} concurrency={ARGS.concurrency} load={os.getloadavg()[0]:.1f}")
        print(f"cpu_ms_per_request {1000 * cpu / n:.3f}")
        print(f"statuses {dict(sorted(api.statuses.items()))}")
        commands = mongodb_after - mongodb
        print(f"mongodb_commands_per_request {commands.total() / n:.3f} ({dict(commands.most_common())})")
        print(f"redis_round_trips_per_request {(redis_after - redis_trips) / n:.3f}")
        lookups = (hits_after - hits) + (misses_after - misses)
        print(f"cache_hits {hits_after - hits:.0f} of {lookups:.0f} lookups")
        for task in ("get", "list", "runs", "preview", "create", "patch", "pause", "delete"):
            if ARGS.per_endpoint:
                await per_endpoint(api, clients, task, ARGS.per_endpoint)
        if ARGS.no_profile:
            return
        # CPU time, not wall time: on a shared machine a preempted process would charge its waits to whatever
        # function was running.
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        profiled_cpu = await drive(api, clients, ARGS.requests, ARGS.concurrency)
        profiler.disable()
        print(f"cpu_ms_per_request_profiled {1000 * profiled_cpu / ARGS.requests:.3f}")
    report(profiler)


async def per_endpoint(api: Asgi, clients: list[Client], task: str, n: int) -> None:
    """One endpoint alone (a request's task may fall back to another: a delete creates below three jobs)."""
    api.statuses.clear()
    mongodb, redis_trips, hits, _ = COUNTS.snapshot()
    cpu = await drive(api, clients, n, ARGS.concurrency, task)
    mongodb_after, redis_after, hits_after, _ = COUNTS.snapshot()
    served = api.statuses.total()
    print(
        f"endpoint_{task} cpu_ms={1000 * cpu / served:.3f} mongodb={(mongodb_after - mongodb).total() / served:.2f} "
        f"redis={(redis_after - redis_trips) / served:.2f} hits={hits_after - hits:.0f}/{served} "
        f"statuses={dict(sorted(api.statuses.items()))}"
    )


def report(profiler: cProfile.Profile) -> None:
    stats = pstats.Stats(profiler)
    by_package: Counter[str] = Counter()
    total = 0.0
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_package[package_of(filename)] += tottime
        total += tottime
    print("\n# own time by package (share of profiled time)")
    for name, seconds in by_package.most_common():
        print(f"{100 * seconds / total:5.1f} %  {name}")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(ARGS.top)
    print("\n# top functions by own time")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[-12000:])
    if ARGS.callers:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_callers(ARGS.callers)
        print("\n# callers")
        print(out.getvalue())
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(ARGS.top)
    print("\n# top functions by cumulative time")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[-12000:])


def compare(before: Path, after: Path) -> None:
    """Run both trees alternately in fresh processes and print their numbers side by side."""
    rows: list[tuple[str, int, dict[str, str]]] = []
    for round_ in range(1, ARGS.rounds + 1):
        for label, src in (("before", before), ("after", after)):
            command = [sys.executable, __file__, "--no-profile", "--src", str(src)]
            command += ["--requests", str(ARGS.requests), "--concurrency", str(ARGS.concurrency)]
            command += ["--per-endpoint", str(ARGS.per_endpoint)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            values = dict(line.split(" ", 1) for line in out.splitlines() if line and not line.startswith("#"))
            values["load"] = out.split("load=", 1)[1].split()[0]
            rows.append((label, round_, values))
            print(f"{label} {round_}: {values['cpu_ms_per_request']} ms CPU/request", flush=True)
    print(f"\n# {ARGS.requests} requests per run, {ARGS.concurrency} concurrent; before={before} after={after}")
    print(f"{'run':10} {'CPU ms/req':>10} {'Mongo/req':>10} {'Redis/req':>10} {'cache hits':>18} {'load':>5}")
    for label, round_, v in rows:
        mongodb = v["mongodb_commands_per_request"].split()[0]
        print(
            f"{label + ' ' + str(round_):10} {v['cpu_ms_per_request']:>10} {mongodb:>10} "
            f"{v['redis_round_trips_per_request']:>10} {v['cache_hits']:>18} {v['load']:>5}"
        )
    print("\n# per endpoint (CPU ms, MongoDB commands, Redis round trips per request; cache hits)")
    for label, round_, v in rows:
        for name, value in v.items():
            if name.startswith("endpoint_"):
                print(f"{label + ' ' + str(round_):10} {name[9:]:8} {value.split(' statuses=')[0]}")


if __name__ == "__main__":
    if ARGS.compare:
        compare(ARGS.compare.resolve(), ARGS.src.resolve())
    else:
        asyncio.run(main())
