"""Schemathesis against the running service's OpenAPI document, over a real HTTP socket.

Bounded in examples; it must find no 5xx and no response that breaks the documented schema.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import CHECKS, load_all_checks
from tests.support import servers

DEV_KEY = "sk_00000000000000cc_" + "c" * 43
AUTH = {"Authorization": f"Bearer {DEV_KEY}"}


@pytest.fixture(scope="module")
def service_url(
    mongo_uri: str, nats_url: str, run_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = servers.free_port()
    env = {
        **os.environ,
        "SCHEDSVC_MONGODB_URI": mongo_uri,
        "SCHEDSVC_DATABASE": f"schedsvc_{run_token}_fuzz",
        "SCHEDSVC_NATS_URL": nats_url,
        "SCHEDSVC_PREFIX": f"schedsvc_{run_token}_fuzz",
        "SCHEDSVC_ROLES": "api",
        "SCHEDSVC_PORT": str(port),
        "SCHEDSVC_DEV_MODE": "true",
        "SCHEDSVC_DEV_API_KEY": DEV_KEY,
        "SCHEDSVC_RATE_LIMIT_PER_MINUTE": "100000",
        # Schemathesis sends invalid keys to every operation; the per-address lockout (429) is tested elsewhere.
        "SCHEDSVC_FAILED_AUTH_PER_MINUTE": "100000",
        "SCHEDSVC_LOG_LEVEL": "WARNING",
    }
    log: Path = tmp_path_factory.mktemp("fuzz") / "service.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "schedsvc.cli", "serve"], env=env, stdout=out, stderr=out)
    try:
        servers.wait_for_port(port, 60, proc)  # type: ignore[arg-type]
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)
        if "Traceback" in log.read_text():
            print(log.read_text()[-5000:])


def test_no_server_errors_and_responses_match_the_schema(service_url: str) -> None:
    # schemathesis' pytest loader does not support pytest 9 yet, so each operation's strategy is driven
    # by Hypothesis directly; the checks are schemathesis' own.
    schema = schemathesis.openapi.from_url(f"{service_url}/schema/openapi.json", wait_for_schema=30)
    load_all_checks()
    # Every check schemathesis has, negative-data rejection included, but one: a cursor is an opaque
    # token, so one that fits its documented pattern may still be forged, and is rightly refused (400).
    checks = [c for c in CHECKS.get_all() if c.__name__ != "positive_data_acceptance"]
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(
            max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=service_url, headers=AUTH, checks=checks, timeout=30)

        try:
            check()
        except Exception as exc:
            failures.append(f"{operation.verbose_name}: {exc}")
    assert operations >= 10
    assert not failures, "\n\n".join(failures)
