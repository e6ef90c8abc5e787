"""The container image starts as Kubernetes runs it: migrate, then serve (read-only root, uid 10001), becomes
ready, accepts a job, and serves /metrics on its metrics port only.

Needs a working podman or docker and the Containerfile's base images already on this machine: the test never
pulls (tests talk to loopback only), so it is skipped, with the reason, when either is missing. Everything
else about the image is checked without an engine (tests/unit/test_ops_manifests.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from tests.support import servers

from schedsvc.config import Settings
from schedsvc.testing import delete_run_streams, drop_database

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"

pytestmark = pytest.mark.slow


def container_engine() -> str | None:
    """podman, or docker when podman is absent, as `make image` chooses; None when neither works."""
    for name in ("podman", "docker"):
        path = shutil.which(name)
        if path and subprocess.run([path, "info"], capture_output=True, timeout=60, check=False).returncode == 0:
            return path
    return None


def base_images() -> list[str]:
    """The images the Containerfile's FROM lines name, with its ARG defaults filled in."""
    text = CONTAINERFILE.read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    images = []
    for ref in re.findall(r"^FROM (\S+)", text, re.MULTILINE):
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref)
        if "/" in resolved or ":" in resolved:  # not a stage name
            images.append(resolved)
    return sorted(set(images))


def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def http(url: str, body: dict[str, object] | None = None, key: str | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def engine() -> str:
    found = container_engine()
    if found is None:
        pytest.skip("no usable podman or docker on this machine (`make image` says the same)")
    missing = [image for image in base_images() if run(found, "image", "inspect", image).returncode != 0]
    if missing:
        pytest.skip(f"base images not present locally and never pulled by tests: {', '.join(missing)}")
    # Some sandboxes let an engine build but not start containers; a base image that cannot start either
    # says so about this machine, not about our image (which must then start like its base).
    runtime_base = [image for image in base_images() if "python" in image]
    probe = run(found, "run", "--rm", "--network=host", *runtime_base, "true")
    if probe.returncode != 0:
        pytest.skip(f"{found} cannot start containers here: {probe.stderr.strip()[:300]}")
    return found


@pytest.fixture(scope="module")
def image(engine: str) -> str:
    tag = f"localhost/schedsvc:test-{uuid.uuid4().hex[:8]}"
    pull = ["--pull=never"] if Path(engine).name == "podman" else []
    built = run(engine, "build", *pull, "-f", str(CONTAINERFILE), "-t", tag, str(ROOT), timeout=3600)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    yield tag
    run(engine, "rmi", "-f", tag)


async def test_image_migrates_serves_and_accepts_a_job(engine: str, image: str, settings: Settings) -> None:
    api_port, metrics_port = servers.free_port(), servers.free_port()
    name = f"schedsvc-test-{uuid.uuid4().hex[:8]}"
    env = {
        "SCHEDSVC_MONGODB_URI": settings.mongodb_uri,
        "SCHEDSVC_DATABASE": settings.database,
        "SCHEDSVC_NATS_URL": settings.nats_url,
        "SCHEDSVC_PREFIX": settings.prefix,
        "SCHEDSVC_PARTITIONS": str(settings.partitions),
        # Host networking reaches the test servers on loopback; bind loopback only.
        "SCHEDSVC_HOST": "127.0.0.1",
        "SCHEDSVC_PORT": str(api_port),
        "SCHEDSVC_METRICS_PORT": str(metrics_port),
    }
    # As the Deployments run it: non-root, read-only root file system, a writable /tmp.
    options = ["--network=host", "--read-only", "--tmpfs", "/tmp", "--user", "10001:10001"]
    options += [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    try:
        migrated = run(engine, "run", "--rm", *options, image, "migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        created = run(engine, "run", "--rm", *options, image, "tenants", "create", "imagecheck")
        assert created.returncode == 0, created.stdout + created.stderr
        key = re.search(r"sk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", created.stdout)
        assert key is not None, created.stdout

        started = run(engine, "run", "-d", "--name", name, *options, image)
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError, ValueError):
                status, body = http(f"http://127.0.0.1:{api_port}/health/ready")
                if status == 200 and json.loads(body)["ready"]:
                    break
            assert time.monotonic() < deadline, run(engine, "logs", name).stdout[-4000:]
            await asyncio.sleep(1)

        job = {
            "name": "image-check",
            "schedule": {"kind": "cron", "expression": "*/5 * * * *"},
            "target": {"kind": "nats", "subject": "tenant.imagecheck.reports"},
        }
        status, body = http(f"http://127.0.0.1:{api_port}/jobs", job, key.group(0))
        assert status == 201, body
        assert http(f"http://127.0.0.1:{api_port}/metrics")[0] == 404
        status, metrics = http(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert "schedsvc_http_requests_total" in metrics
    finally:
        run(engine, "stop", "-t", "45", name, timeout=90)
        run(engine, "rm", "-f", name)
        await drop_database(settings)
        await delete_run_streams(settings)
