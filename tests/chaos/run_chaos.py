"""Fault run: three replicas, many one-second jobs, SIGKILLed replicas and restarted NATS and MongoDB.

One command::

    .venv/bin/python tests/chaos/run_chaos.py            # 30 jobs, a 300 s window of faults (~8 min)
    .venv/bin/python tests/chaos/run_chaos.py --calm     # the same without faults: the control run
    .venv/bin/python tests/chaos/run_chaos.py --short    # 40 jobs, a 50 s window (< ~2 min), for pytest
    .venv/bin/python tests/chaos/run_chaos.py --rolling  # a rolling restart: SIGTERM, start, one by one
    .venv/bin/python tests/chaos/run_chaos.py --rolling --replicas 1  # one replica stopped and started thrice

What it does, on loopback ports of its own: starts SecantusDB (MongoDB wire protocol, data directory kept
across its restarts), nats-server with JetStream (file storage kept across restarts), a private
redis-server, three ``schedsvc serve`` replicas with every role (``api,timing,execution``; lease TTL 6 s,
heartbeat 1.5 s, ack wait 10 s) and a webhook receiver in this process that answers 200 and counts calls
per ``Idempotency-Key``. Through the API it creates ``--jobs`` interval jobs firing every second inside a
fixed window (``startAt``/``endAt``, catch-up policy ``all``, up to 20 attempts), so the set of fires
that must run is known exactly: job ``i`` fires at ``anchor_i + k*1000`` ms for ``k = 1..window``. During
the window it applies the fault schedule (see ``FAULTS_SHORT`` / ``FAULTS_FULL``), then waits for every
fire to finish and checks:

run history (MongoDB ``runs``; the verdict)
    every expected ``jobId:scheduledMs`` has exactly one run document, with status ``succeeded``
    (``_id`` is the run id, so one document per fire is structural; what can go wrong is a missing,
    failed or missed fire, or a fire that should not exist: ``extra``);
stream (``NatsRunBus.stream_message_ids()``; the verdict)
    every expected run id was published exactly once to the run stream, and nothing else was;
receiver (calls per ``Idempotency-Key``)
    every expected fire reached the target at least once (``never called``: a run recorded as succeeded
    without a call would be a lie), and never more often than the run's recorded ``attempts``
    (``calls > attempts``: two workers called the target for the same attempt; the calls are counted
    before the run history is read, as every call is preceded by its claim). A key called twice is
    at-least-once delivery working as designed only when its run shows a second attempt, which happens
    when the worker holding the first one was killed mid-call, could not record the outcome (MongoDB
    down) or recorded it later than the ack deadline (a slow database; see ``docs/reliability.md``):
    the target got the call, the service could not know. Those are counted and reported as
    ``repeated calls`` (the ``Idempotency-Key`` lets a receiver drop them), not failures.

Lateness is reported from the receiver (first call minus the scheduled instant) and from the run
history (``startedAt`` of the final attempt minus ``scheduledAt``), overall and for the 20 s after each
fault. Exit status 0 when every check passed. Everything started here is stopped at the end, also on
failure, SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from schedsvc import embedded
from schedsvc.config import Settings
from schedsvc.testing import WebhookReceiver

BIN = Path(sys.executable).parent
REPLICAS = 3
LEASE_TTL_SECONDS = 6.0
HEARTBEAT_SECONDS = 1.5
ACK_WAIT_SECONDS = 10.0
FAULT_LATENESS_WINDOW_MS = 20_000
STALL_SECONDS = 60.0
"""The drain gives up when no further run became final for this long."""
FINAL = ("succeeded", "failed", "skipped", "missed")

# (seconds after the window opens, action, argument). Replica numbers are 0..2.
FAULTS_SHORT: list[tuple[float, str, Any]] = [
    (6, "kill", [0]),
    (13, "start", [0]),
    (18, "restart_nats", None),
    (27, "restart_mongo", None),
    (36, "kill", [1]),
    (42, "start", [1]),
]
# A rolling restart, as a deployment does it: each replica in turn gets SIGTERM (a graceful stop: leases
# released, runs in flight finished or handed back), and is started again once it has exited.
FAULTS_ROLLING: list[tuple[float, str, Any]] = [
    (8, "term_restart", [0]),
    (22, "term_restart", [1]),
    (36, "term_restart", [2]),
]
FAULTS_FULL: list[tuple[float, str, Any]] = [
    (15, "kill", [0]),
    (35, "start", [0]),
    (50, "kill", [1, 2]),  # one replica carries everything
    (70, "start", [1, 2]),
    (85, "restart_nats", None),
    (110, "restart_mongo", None),
    (135, "kill", [2]),  # back before its leases expire
    (138, "start", [2]),
    (160, "kill", [0, 1, 2]),  # total outage: 15 s without any replica
    (175, "start", [0, 1, 2]),
    (200, "kill_mongo", None),  # SIGKILL the database server, then start it on the same data
    (225, "kill", [0]),
    (225, "restart_nats", None),
    (240, "start", [0]),
    (260, "restart_mongo", None),
]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def log(msg: str) -> None:
    print(f"{datetime.now(UTC).strftime('%H:%M:%S.%f')[:-3]} {msg}", flush=True)


def percentiles(values: Iterable[float]) -> dict[str, float] | None:
    data = sorted(values)
    if not data:
        return None

    def at(q: float) -> float:
        return data[min(len(data) - 1, int(q * len(data)))]

    return {
        "n": len(data),
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "max": data[-1],
        "mean": round(statistics.fmean(data), 1),
    }


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Cluster:
    mongo: embedded.ServerProcess
    nats: embedded.ServerProcess
    replicas: list[embedded.ServerProcess]
    work: Path

    @property
    def mongo_uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo.port}/?directConnection=true"


async def create_tenant(uri: str, database: str) -> str:
    from schedsvc.config import Settings
    from schedsvc.store import MongoTenantStore, connect
    from schedsvc.store import database as db_of

    settings = Settings(mongodb_uri=uri, database=database)
    client = connect(settings)
    try:
        key, _secret = await MongoTenantStore(db_of(client, settings)).create_tenant("chaos")
        return key.key
    finally:
        await client.close()


def job_body(i: int, anchor_ms: int, window: int, receiver_port: int) -> dict[str, Any]:
    """Fires at anchor + k*1000 for k = 1..window: startAt and endAt sit half a second off the grid."""
    return {
        "name": f"chaos-{i:04d}",
        "schedule": {
            "kind": "interval",
            "seconds": 1,
            "anchor": iso(anchor_ms),
            "startAt": iso(anchor_ms + 500),
            "endAt": iso(anchor_ms + window * 1000 + 500),
        },
        "target": {"kind": "http", "url": f"http://127.0.0.1:{receiver_port}/hook/{i}", "timeoutSeconds": 5},
        "retry": {"maxAttempts": 20, "minBackoffSeconds": 0.5, "maxBackoffSeconds": 5, "maxEventAgeSeconds": 3600},
        "catchup": {"policy": "all", "windowSeconds": 3600},
        "overlap": "allow",
        "tags": ["chaos"],
    }


async def apply_fault(cluster: Cluster, action: str, arg: Any) -> None:
    """Blocking process work runs in a thread, so the receiver keeps answering meanwhile."""
    match action:
        case "kill":
            for n in arg:
                await asyncio.to_thread(cluster.replicas[n].stop, signal.SIGKILL)
            log(f"SIGKILLed replica(s) {arg}")
        case "term_restart":
            for n in arg:
                started = time.monotonic()
                await asyncio.to_thread(cluster.replicas[n].stop, signal.SIGTERM, 60.0)
                stopped = time.monotonic() - started
                cluster.replicas[n].start(wait=False)
                await asyncio.to_thread(cluster.replicas[n].wait_ready)
                log(f"replica {n} stopped gracefully in {stopped:.1f}s, started again and ready")
        case "start":
            for n in arg:
                cluster.replicas[n].start(wait=False)
            for n in arg:
                await asyncio.to_thread(cluster.replicas[n].wait_ready)
            log(f"replica(s) {arg} back and ready")
        case "restart_nats":
            await asyncio.to_thread(cluster.nats.restart)
            log("NATS restarted (SIGTERM, same JetStream store)")
        case "restart_mongo":
            await asyncio.to_thread(cluster.mongo.restart)
            log("SecantusDB restarted (SIGTERM, same data directory)")
        case "kill_mongo":
            await asyncio.to_thread(cluster.mongo.stop, signal.SIGKILL)
            await asyncio.to_thread(cluster.mongo.start)
            log("SecantusDB SIGKILLed and started again on the same data directory")
        case _:
            raise ValueError(action)


async def stream_ids(cluster: Cluster, prefix: str) -> Counter[str]:
    from schedsvc.bus import NatsRunBus
    from schedsvc.config import Settings

    bus = await NatsRunBus.connect(Settings(nats_url=f"nats://127.0.0.1:{cluster.nats.port}", prefix=prefix))
    try:
        return Counter([i async for i in bus.stream_message_ids()])
    finally:
        await bus.close()


async def run(args: argparse.Namespace, cluster: Cluster, prefix: str, receiver: WebhookReceiver) -> dict[str, Any]:
    from pymongo import AsyncMongoClient

    faults = [] if args.calm else _faults(args)
    window = args.window
    for r in cluster.replicas:
        r.start(wait=False)
    for r in cluster.replicas:
        await asyncio.to_thread(r.wait_ready)
    key = await create_tenant(cluster.mongo_uri, prefix)
    api = f"http://127.0.0.1:{cluster.replicas[0].port}"
    headers = {"Authorization": f"Bearer {key}"}

    # Anchors in the near future, spread over the second, so no fire precedes its job's creation.
    base = (now_ms() // 1000 + 8 + args.jobs // 20) * 1000
    anchors = [base + (i * 37) % 1000 for i in range(args.jobs)]
    sem = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as client:

        async def create(i: int) -> str:
            async with sem:
                r = await client.post("/jobs", json=job_body(i, anchors[i], window, receiver.port))
            if r.status_code != 201:
                raise RuntimeError(f"creating job {i}: {r.status_code} {r.text[:300]}")
            return str(r.json()["id"])

        job_ids = list(await asyncio.gather(*(create(i) for i in range(args.jobs))))
        if now_ms() > base:
            raise RuntimeError("creating the jobs took longer than planned; rerun with fewer --jobs")
        # Cross-check the expected fires with the service's own schedule preview for one job.
        body = job_body(0, anchors[0], window, receiver.port)
        r = await client.post(
            "/schedules/preview",
            json={"schedule": body["schedule"], "after": iso(anchors[0] - 1), "count": min(window, 100)},
        )
        r.raise_for_status()
        previewed = [int(datetime.fromisoformat(f).timestamp() * 1000) for f in r.json()["fires"]]
    expected_of = {jid: [anchors[i] + k * 1000 for k in range(1, window + 1)] for i, jid in enumerate(job_ids)}
    if previewed != expected_of[job_ids[0]][: len(previewed)]:
        raise RuntimeError(
            f"the preview disagrees with the expected fires: {previewed[:3]} vs {expected_of[job_ids[0]][:3]}"
        )
    expected = {f"{jid}:{ms}": ms for jid, fires in expected_of.items() for ms in fires}
    log(f"{len(job_ids)} jobs created; window {iso(base)} + {window}s, {len(expected)} fires expected")

    # -- faults --------------------------------------------------------------------------------
    fault_log: list[dict[str, Any]] = []
    for offset, action, arg in faults:
        await asyncio.sleep(max(0.0, (base + offset * 1000 - now_ms()) / 1000))
        at = now_ms()
        await apply_fault(cluster, action, arg)
        fault_log.append(
            {
                "at_s": round((at - base) / 1000, 1),
                "action": action,
                "arg": arg,
                "took_s": round((now_ms() - at) / 1000, 1),
                "at_ms": at,
            }
        )
    for r in cluster.replicas:  # every replica up for the drain, whatever the schedule left
        if not r.running:
            r.start(wait=False)
            await asyncio.to_thread(r.wait_ready)
    end = base + (window + 1) * 1000
    await asyncio.sleep(max(0.0, (end - now_ms()) / 1000))
    log("window closed; waiting for every fire to finish")

    # -- drain ---------------------------------------------------------------------------------
    client_m: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(cluster.mongo_uri, tz_aware=True)
    try:
        runs = client_m[prefix]["runs"]
        # Wait while the backlog shrinks: a slow machine drains late, a stuck service stops progressing.
        hard_deadline = time.monotonic() + args.drain_timeout
        stall_deadline = time.monotonic() + STALL_SECONDS
        final = 0
        while time.monotonic() < min(hard_deadline, stall_deadline):
            with contextlib.suppress(Exception):
                now_final = await runs.count_documents({"jobId": {"$in": job_ids}, "status": {"$in": list(FINAL)}})
                if now_final > final:
                    final, stall_deadline = now_final, time.monotonic() + STALL_SECONDS
                if final >= len(expected):
                    break
            await asyncio.sleep(2)
        drained_s = round((now_ms() - end) / 1000, 1)
        log(f"{final}/{len(expected)} runs final {drained_s}s after the window; settling 5s for stray calls")
        await asyncio.sleep(5)
        # Calls counted before the run history is read: each must have claimed its attempt before it
        # was made, so the history read afterwards shows at least as many attempts.
        calls = receiver.calls_per_key()
        call_times_ms: dict[str, list[int]] = {}
        for call in list(receiver.calls):
            call_times_ms.setdefault(call.idempotency_key, []).append(call.received_ms)
        docs = {
            d["_id"]: d
            async for d in runs.find(
                {"jobId": {"$in": job_ids}},
                {
                    "status": 1,
                    "attempts": 1,
                    "scheduledAt": 1,
                    "startedAt": 1,
                    "finishedAt": 1,
                    "trigger": 1,
                    "error": 1,
                },
            )
        }
    finally:
        await client_m.close()
    in_stream = await stream_ids(cluster, prefix)

    # -- verdict -------------------------------------------------------------------------------
    missing = sorted(set(expected) - set(docs))
    not_succeeded = {k: docs[k].get("status") for k in expected if k in docs and docs[k].get("status") != "succeeded"}
    extra_runs = sorted(set(docs) - set(expected))
    stream_missing = sorted(set(expected) - set(in_stream))
    stream_dups = {k: n for k, n in in_stream.items() if n > 1}
    stream_extra = sorted(set(in_stream) - set(expected))
    never_called = sorted(k for k in expected if calls[k] == 0)
    repeated = {k: calls[k] for k in expected if calls[k] > 1}
    over_attempts = {
        k: {"calls": calls[k], "attempts": (docs.get(k) or {}).get("attempts")}
        for k in expected
        if calls[k] > int((docs.get(k) or {}).get("attempts") or 0)
    }
    calls_outside = sum(n for k, n in calls.items() if k not in expected)
    attempts_hist = Counter(int(d.get("attempts") or 0) for k, d in docs.items() if k in expected)
    triggers = Counter(str(d.get("trigger")) for k, d in docs.items() if k in expected)

    first_late = {k: min(call_times_ms[k]) - ms for k, ms in expected.items() if k in call_times_ms}
    start_late = {
        k: int(docs[k]["startedAt"].timestamp() * 1000) - ms
        for k, ms in expected.items()
        if k in docs and docs[k].get("startedAt")
    }
    per_fault = []
    for f in fault_log:
        lo, hi = f["at_ms"], f["at_ms"] + FAULT_LATENESS_WINDOW_MS
        per_fault.append(
            {
                "at_s": f["at_s"],
                "action": f["action"],
                "arg": f["arg"],
                "first_call_lateness_ms": percentiles(v for k, v in first_late.items() if lo <= expected[k] < hi),
            }
        )
    fault_times = [(f["at_ms"], f["at_ms"] + FAULT_LATENESS_WINDOW_MS) for f in fault_log]
    calm = [v for k, v in first_late.items() if not any(lo <= expected[k] < hi for lo, hi in fault_times)]

    def diagnose(keys: Iterable[str]) -> dict[str, Any]:
        """What the receiver and the run history know about a few suspicious fires."""
        out = {}
        for k in list(keys)[:8]:
            doc = docs.get(k) or {}
            out[k] = {
                "scheduled": iso(expected.get(k) or int(k.rsplit(":", 1)[1])),
                "calls": [iso(t) for t in call_times_ms.get(k, [])],
                "run": {
                    f: (iso(int(v.timestamp() * 1000)) if isinstance(v, datetime) else v)
                    for f, v in doc.items()
                    if f != "_id"
                }
                or None,
            }
        return out

    checks = {
        "runs_missing": len(missing),
        "runs_not_succeeded": len(not_succeeded),
        "runs_extra": len(extra_runs),
        "stream_missing": len(stream_missing),
        "stream_duplicates": len(stream_dups),
        "stream_extra": len(stream_extra),
        "receiver_never_called": len(never_called),
        "receiver_calls_over_attempts": len(over_attempts),
    }
    passed = all(v == 0 for v in checks.values())
    return {
        "passed": passed,
        "mode": ("rolling" if args.rolling else "short" if args.short else "full")
        + (" calm" if args.calm else "")
        + (f", {args.replicas} replica(s)" if args.rolling else ""),
        "jobs": len(job_ids),
        "window_s": window,
        "window_start": iso(base),
        "expected_fires": len(expected),
        "checks": checks,
        "examples": {
            "runs_missing": missing[:5],
            "runs_not_succeeded": dict(list(not_succeeded.items())[:5]),
            "runs_extra": extra_runs[:5],
            "stream_missing": stream_missing[:5],
            "stream_duplicates": dict(list(stream_dups.items())[:5]),
            "stream_extra": stream_extra[:5],
            "receiver_never_called": never_called[:5],
            "receiver_calls_over_attempts": dict(list(over_attempts.items())[:5]),
            "repeated_calls": {
                k: {"calls": n, "attempts": docs.get(k, {}).get("attempts")} for k, n in list(repeated.items())[:5]
            },
        },
        "repeated_calls": {"keys": len(repeated), "extra_calls": sum(n - 1 for n in repeated.values())},
        "diagnosis": {
            "receiver_calls_over_attempts": diagnose(over_attempts),
            "runs_not_succeeded": diagnose(not_succeeded),
            "runs_missing_but_called": diagnose(k for k in missing if calls[k]),
            "repeated_calls": diagnose(repeated),
        },
        "calls_outside_window": calls_outside,
        "receiver_calls_total": sum(calls.values()),
        "attempts_histogram": dict(sorted(attempts_hist.items())),
        "triggers": dict(triggers),
        "drain_seconds_after_window": drained_s,
        "lateness_first_call_ms": percentiles(first_late.values()),
        "lateness_first_call_calm_ms": percentiles(calm),
        "lateness_started_at_ms": percentiles(start_late.values()),
        "faults": per_fault,
    }


def print_report(report: dict[str, Any]) -> None:
    print()
    print(
        f"chaos ({report['mode']}): {report['jobs']} jobs x {report['window_s']} s window = "
        f"{report['expected_fires']} fires expected"
    )
    for name, value in report["checks"].items():
        print(f"  {name:32s} {value:6d}  {'ok' if value == 0 else 'FAIL e.g. ' + str(report['examples'][name])}")
    rc = report["repeated_calls"]
    print(
        f"  repeated webhook calls (run shows a later attempt): {rc['keys']} keys, {rc['extra_calls']} extra calls; "
        f"attempts histogram {report['attempts_histogram']}; triggers {report['triggers']}"
    )
    print(f"  drained {report['drain_seconds_after_window']} s after the window closed")

    def fmt(p: dict[str, float] | None) -> str:
        if not p:
            return "-"
        return (
            f"p50 {p['p50']:.0f} ms, p90 {p['p90']:.0f} ms, p99 {p['p99']:.0f} ms, max {p['max']:.0f} ms (n={p['n']})"
        )

    print(f"  lateness, first call at the receiver: {fmt(report['lateness_first_call_ms'])}")
    print(f"  lateness, away from faults:           {fmt(report['lateness_first_call_calm_ms'])}")
    print(f"  lateness, startedAt of final attempt: {fmt(report['lateness_started_at_ms'])}")
    for f in report["faults"]:
        arg = f["arg"] or ""
        print(f"    +{f['at_s']:5.1f}s {f['action']:14s} {arg!s:10s} next 20 s: {fmt(f['first_call_lateness_ms'])}")
    print("RESULT:", "PASS" if report["passed"] else "FAIL", flush=True)


def _faults(args: argparse.Namespace) -> list[tuple[float, str, Any]]:
    if args.rolling:
        return [(t, action, [n % args.replicas for n in arg]) for t, action, arg in FAULTS_ROLLING]
    return FAULTS_SHORT if args.short else FAULTS_FULL


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--short", action="store_true", help="40 jobs, 50 s window, 6 faults: under ~2 minutes")
    p.add_argument("--jobs", type=int, help="jobs firing every second (default 30; 40 with --short)")
    p.add_argument("--window", type=int, help="seconds of fires checked (default 300; 50 with --short)")
    p.add_argument(
        "--rolling",
        action="store_true",
        help="a rolling restart (SIGTERM, start) of the three replicas in a 50 s window",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=REPLICAS,
        help="replicas to run (default 3; only with --rolling, which then restarts them in turn)",
    )
    p.add_argument("--calm", action="store_true", help="no faults: the control run (capacity and lateness)")
    p.add_argument(
        "--drain-timeout",
        type=float,
        help="longest wait for the backlog after the window (default 900 s, 240 s with --short; "
        "the wait also ends after 60 s without progress)",
    )
    p.add_argument("--json-out", type=Path, help="write the report as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, data) even on success")
    args = p.parse_args(argv)
    brief = args.short or args.rolling
    args.jobs = args.jobs or (40 if brief else 30)
    args.window = args.window or (50 if brief else 300)
    args.drain_timeout = args.drain_timeout or (240.0 if brief else 900.0)
    if args.replicas != REPLICAS and not args.rolling:
        p.error("--replicas applies to --rolling only (the other fault schedules name three replicas)")
    if args.replicas < 1:
        p.error("--replicas must be at least 1")
    last_fault = max(t for t, _, _ in _faults(args))
    if args.window < last_fault + 5 and not args.calm:
        p.error(f"--window must be at least {last_fault + 5} s to contain the fault schedule")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="schedsvc-chaos-"))
    prefix = f"chaos{os.getpid()}"

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # The run SIGKILLs the database: it must keep what it acknowledged, as production's journaled MongoDB does
    # (w: majority). Without this, a write acknowledged just before the kill can vanish with it.
    mongo = embedded.secantus(work / "mongodb", durable_commits=True)
    nats = embedded.nats(work / "nats")
    redis = embedded.redis(work / "redis")
    replicas: list[embedded.ServerProcess] = []
    report: dict[str, Any] = {"passed": False, "error": "did not finish"}
    receiver = WebhookReceiver(keep_bodies=False)
    try:
        mongo.start()
        nats.start()
        redis.start()
        settings = Settings(
            mongodb_uri=f"mongodb://127.0.0.1:{mongo.port}/?directConnection=true",
            database=prefix,
            nats_url=f"nats://127.0.0.1:{nats.port}",
            redis_url=f"redis://127.0.0.1:{redis.port}/0",
            prefix=prefix,
            partitions=32,
            lease_ttl_seconds=LEASE_TTL_SECONDS,
            heartbeat_seconds=HEARTBEAT_SECONDS,
            run_ack_wait_seconds=ACK_WAIT_SECONDS,
            horizon_seconds=10,
            target_allow_networks=(ipaddress.ip_network("127.0.0.0/8"),),
            rate_limit_per_minute=100_000,
            log_level=os.environ.get("SCHEDSVC_LOG_LEVEL", "INFO"),
        )
        migrate = subprocess.run(
            [str(BIN / "schedsvc"), "migrate"], env={**os.environ, **settings.to_env()}, capture_output=True, text=True
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"schedsvc migrate failed: {migrate.stderr[-2000:]}")
        for n in range(args.replicas):
            replica = replace(settings, port=embedded.free_port())
            replicas.append(embedded.service(replica, work / f"replica-{n}.log", name=f"replica {n}"))
        cluster = Cluster(mongo, nats, replicas, work)
        log(
            f"{mongo.name} :{mongo.port}, NATS :{nats.port}, Redis :{redis.port}, replicas "
            f"{[r.port for r in replicas]}; logs in {work}"
        )
        limit = 900 if args.short or args.rolling else 2400

        async def everything() -> dict[str, Any]:
            await receiver.start()
            try:
                return await asyncio.wait_for(run(args, cluster, prefix, receiver), limit)
            finally:
                await receiver.close()

        report = asyncio.run(everything())
        print_report(report)
    except KeyboardInterrupt:
        report = {"passed": False, "error": "interrupted"}
        print("interrupted; stopping everything", file=sys.stderr)
    except Exception as exc:
        report = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
        print(f"chaos run failed: {exc!r}; logs in {work}", file=sys.stderr)
    finally:
        for r in replicas:  # all at once: each may take its drain grace period
            r.send(signal.SIGTERM if r.running else signal.SIGKILL)
        for r in replicas:
            r.reap(40)
        nats.stop()
        mongo.stop()
        redis.stop()
        report["work_dir"] = str(work)
        if args.json_out:
            args.json_out.write_text(json.dumps(report, indent=2, default=str))
        if report.get("passed") and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs and data kept in {work}", file=sys.stderr)
    return 0 if report.get("passed") else 1


if __name__ == "__main__":
    raise SystemExit(main())
