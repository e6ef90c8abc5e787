"""Profile one API replica with py-spy while ``run_load.py`` drives the Locust mix, and summarize where its CPU goes.

    .venv/bin/pip install py-spy                      # not a project dependency: a profiler, needs ptrace
    .venv/bin/python loadtests/profile_api.py [--rate 100] [--duration 60] [--src DIR] [--out DIR]

Starts ``loadtests/run_load.py --rate R --duration D`` (its stack: SecantusDB, NATS, Redis, two API replicas
behind a balancer, one timing+execution replica), waits until Locust runs, then records the first API
replica (granian leader and worker) with ``py-spy record --subprocesses`` for most of the measured period.
Prints the share of CPU samples by what the stack is doing (a sample counts for the first of: MongoDB
driver, Redis client, the service's own code at the leaf, framework/middleware/event loop) and the top
functions by own time. ``--src`` runs the service from another source tree (before/after comparisons).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
OUTSIDE_PYTHON = "no Python frame (granian's Rust runtime: I/O, idle)"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


def categorize(frames: list[str]) -> str:
    """What a sample is doing: the first matching layer anywhere on its stack, else by its leaf frame."""
    files = ";".join(frames)
    leaf = frames[-1] if frames else ""
    if leaf.startswith("process ") or "_spawn_asgi_lifespan_worker" in leaf:
        return OUTSIDE_PYTHON
    if "(pymongo/" in files or "(bson/" in files:
        return "MongoDB driver (pymongo, bson)"
    if "(redis/" in files:
        return "Redis client (redis-py)"
    if "(nats/" in files:
        return "NATS client"
    if "(schedsvc/" in leaf:
        return "service code (schedsvc, at the leaf)"
    if "(msgspec/" in leaf:
        return "serialization (msgspec)"
    return "framework, middleware, event loop (litestar, granian, asyncio, prometheus, stdlib)"


def summarize(raw: Path) -> str:
    categories: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        total += count
        categories[categorize(frames)] += count
        match = _FRAME.match(frames[-1]) if frames else None
        leaf = (
            frames[-1]
            if match is None
            else f"{match['func']} ({Path(match['file']).parent.name}/{Path(match['file']).name})"
        )
        if categorize(frames) != OUTSIDE_PYTHON:
            own[leaf] += count
    outside = categories.pop(OUTSIDE_PYTHON, 0)
    python = (total - outside) or 1
    lines = [
        f"{total} samples of the API replica's worker; {outside} without a Python frame (granian's Rust runtime)"
        f" are left out; shares of the {total - outside} with Python on the stack:",
        "",
        "| share | where |",
        "|---:|---|",
    ]
    lines += [f"| {100 * n / python:.1f} % | {name} |" for name, n in categories.most_common()]
    lines += ["", "| own time | function |", "|---:|---|"]
    lines += [f"| {100 * n / python:.1f} % | `{name}` |" for name, n in own.most_common(15)]
    return "\n".join(lines)


def api_leader(parent: int) -> int | None:
    """The first ``api``-only ``schedsvc serve`` process started by ``parent``."""
    for child in sorted(
        int(p) for p in subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    ):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            environ = Path(f"/proc/{child}/environ").read_bytes()
        except OSError:
            continue
        if b"serve" in cmdline and b"SCHEDSVC_ROLES=api\x00" in environ:
            return child
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=int, default=60, help="measured seconds of the load run")
    p.add_argument("--src", type=Path, help="source tree of the schedsvc package the stack runs")
    p.add_argument("--out", type=Path, default=HERE / "reports")
    p.add_argument("--summarize", type=Path, help="only summarize an earlier py-spy raw file")
    args = p.parse_args()
    if args.summarize:
        print(summarize(args.summarize))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"profile-{time.strftime('%Y%m%dT%H%M%S')}.txt"
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join([str(args.src.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    load = subprocess.Popen(
        [sys.executable, "-u", str(HERE / "run_load.py"), "--rate", str(args.rate), "--duration", str(args.duration)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert load.stdout is not None
    try:
        for line in load.stdout:
            print(line, end="", flush=True)
            if "locust:" in line:
                break
        time.sleep(15)  # the ramp: every user running
        leader = api_leader(load.pid)
        if leader is None:
            raise SystemExit("no API replica found among run_load.py's children")
        seconds = max(10, args.duration - 10)
        print(f"py-spy: recording API replica {leader} (and its workers) for {seconds}s", flush=True)
        subprocess.run(
            [
                str(BIN / "py-spy"),
                "record",
                "--pid",
                str(leader),
                "--subprocesses",
                "--duration",
                str(seconds),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(raw),
                "--nonblocking",
            ],
            check=True,
            capture_output=True,
        )
        for line in load.stdout:
            print(line, end="", flush=True)
    finally:
        load.wait()
    print(f"\n## profile ({raw})\n\n{summarize(raw)}")


if __name__ == "__main__":
    main()
