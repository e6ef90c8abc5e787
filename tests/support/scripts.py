"""The harness scripts (the load run, the fault run) run from a test, in processes of their own."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

STOP_SECONDS = 90.0
"""How long a script has, after SIGTERM, to stop the servers it started before it is killed."""


def run_script(script: Path, *args: str, timeout: float) -> str:
    """Run ``script`` with this Python and return what it printed (stdout and stderr together).

    On timeout the test fails with the output's tail; the script gets SIGTERM first, so that it stops
    the servers it started, and SIGKILL only if it has not exited :data:`STOP_SECONDS` later.
    """
    proc = subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(f"{script.name} did not finish in {timeout:.0f}s:\n{output[-4000:]}")
    return output
