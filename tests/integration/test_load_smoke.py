"""The load harness's smoke mode (``loadtests/run_load.py --smoke``) as a test, so the harness cannot rot.

It starts its own stack (SecantusDB, NATS, Redis, two API replicas behind the local balancer, one
timing+execution replica), runs Locust headless for 15 s with 40 client services over 4 tenants and
reports as JSON (locust runs in its own process: importing it here would monkey-patch the test process
with gevent). Asserted: every request of the mix was made and none failed (no 5xx, no unexpected
4xx). Latency is reported, not asserted: on a shared two-core machine it measures the neighbours.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.scripts import run_script

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "loadtests" / "run_load.py"
TIMEOUT_SECONDS = 240
MIX = {
    "GET /jobs",
    "GET /jobs/{id}",
    "GET /jobs/{id}/runs",
    "POST /jobs",
    "PATCH /jobs/{id}",
    "POST /schedules/preview",
}


def test_smoke_load_runs_the_whole_mix_without_a_failure(tmp_path: Path) -> None:
    summary_file = tmp_path / "smoke.json"
    output = run_script(SCRIPT, "--smoke", "--json-out", str(summary_file), timeout=TIMEOUT_SECONDS)
    print(output[-3000:])
    summary = json.loads(summary_file.read_text())
    result = summary.get("result")
    assert result is not None, output[-4000:]
    assert result["requests"] > 100, output[-4000:]
    assert result["failures"] == 0, "\n".join(result["failure_samples"])
    made = {name for name, stats in result["by_name"].items() if stats["requests"] > 0}
    assert made >= MIX, f"never made: {MIX - made}"
    assert made & {"POST /jobs/{id}/pause", "POST /jobs/{id}/resume"}
