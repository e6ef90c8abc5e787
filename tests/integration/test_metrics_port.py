"""``SCHEDSVC_METRICS_PORT``: ``schedsvc serve`` serves every granian worker's metrics on their own port,
and the API port (what the load balancer and the ingress network policy expose) serves none."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support import servers

from schedsvc.config import Settings
from schedsvc.domain.errors import ConfigurationError
from schedsvc.store import MongoTenantStore
from schedsvc.testing import delete_run_streams

REQUESTS = 6


async def wait_ready(
    client: httpx.AsyncClient, url: str, proc: asyncio.subprocess.Process, timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.returncode is None, f"schedsvc serve exited with {proc.returncode}"
        with contextlib.suppress(httpx.TransportError):
            if (await client.get(url)).json().get("ready"):
                return
        await asyncio.sleep(0.5)
    raise AssertionError("schedsvc serve never became ready")


async def test_metrics_are_served_on_their_own_port_only(settings: Settings, mongo_db: Any, tmp_path: Path) -> None:
    key, _secret = await MongoTenantStore(mongo_db).create_tenant("metrics")
    api_port, metrics_port = servers.free_port(), servers.free_port()
    serving = dataclasses.replace(
        settings,
        roles=frozenset({"api"}),
        port=api_port,
        metrics_port=metrics_port,
        workers=2,  # the metrics server must aggregate both granian workers
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDSVC_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(serving.to_env())
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "schedsvc.cli", "serve", env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await wait_ready(client, f"http://127.0.0.1:{api_port}/health/ready", proc)
            for _ in range(REQUESTS):
                listed = await client.get(
                    f"http://127.0.0.1:{api_port}/jobs", headers={"Authorization": f"Bearer {key.key}"}
                )
                assert listed.status_code == 200, listed.text

            assert (await client.get(f"http://127.0.0.1:{api_port}/metrics")).status_code == 404

            scraped = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert scraped.status_code == 200
            assert scraped.headers["content-type"].startswith("text/plain")
            counted = re.search(
                r'^schedsvc_http_requests_total\{(?=[^}]*method="GET")(?=[^}]*path="/jobs")'
                r'(?=[^}]*status_code="200")[^}]*\} (\S+)$',
                scraped.text,
                re.MULTILINE,
            )
            assert counted is not None, scraped.text
            assert float(counted.group(1)) == REQUESTS, "requests served by either worker are all counted"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await delete_run_streams(settings)
    assert proc.returncode == 0, log.read_text(encoding="utf-8")


def test_the_metrics_port_is_not_the_api_port() -> None:
    assert Settings.from_env(environ={"SCHEDSVC_PORT": "8000", "SCHEDSVC_METRICS_PORT": "9090"}).metrics_port == 9090
    assert Settings.from_env(environ={}).metrics_port == 0, "in-process apps and tests serve /metrics themselves"
    for bad in ("8000", "70000", "-1"):
        with pytest.raises(ConfigurationError, match="SCHEDSVC_METRICS_PORT"):
            Settings.from_env(environ={"SCHEDSVC_PORT": "8000", "SCHEDSVC_METRICS_PORT": bad})
