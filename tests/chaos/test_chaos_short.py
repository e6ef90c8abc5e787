"""The short fault run (``tests/chaos/run_chaos.py --short``) as a test: every fire exactly once.

Three replicas with every role share one SecantusDB, NATS and Redis; 40 jobs fire every second for 50 s
while replicas are SIGKILLed and restarted and NATS and the database server are restarted. The script
runs in its own process (it owns and cleans up every server it starts); this test asserts on its JSON
report: no fire missing, failed or extra in the run history, each fire in the run stream exactly once,
every fire delivered to the receiver and never more often than the run's recorded attempts. Lateness is
reported, not asserted: on a shared two-core machine it measures the neighbours as much as the service.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.scripts import run_script

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent / "run_chaos.py"
TIMEOUT_SECONDS = 600


def test_every_fire_runs_exactly_once_through_kills_and_restarts(tmp_path: Path) -> None:
    report_file = tmp_path / "chaos.json"
    output = run_script(SCRIPT, "--short", "--json-out", str(report_file), timeout=TIMEOUT_SECONDS)
    print(output[-3000:])
    assert report_file.exists(), output[-4000:]
    report = json.loads(report_file.read_text())
    assert "error" not in report, f"{report['error']}\n{output[-4000:]}"

    assert report["expected_fires"] == report["jobs"] * report["window_s"] > 0
    # The run history and the stream hold every fire of the window exactly once, all succeeded.
    assert report["checks"] == {
        "runs_missing": 0,
        "runs_not_succeeded": 0,
        "runs_extra": 0,
        "stream_missing": 0,
        "stream_duplicates": 0,
        "stream_extra": 0,
        "receiver_never_called": 0,
        "receiver_calls_over_attempts": 0,
    }, json.dumps(report["examples"], indent=1)
    assert report["passed"]
    # The faults really happened while fires were due.
    actions = [f["action"] for f in report["faults"]]
    assert {"kill", "start", "restart_nats", "restart_mongo"} <= set(actions)
