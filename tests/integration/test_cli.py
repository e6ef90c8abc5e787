"""The command line as a user runs it: separate processes against real servers."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tests.support import servers

from schedsvc.config import Settings
from schedsvc.store import MongoTenantStore, connect, database


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCHEDSVC_MONGODB_URI": settings.mongodb_uri, "SCHEDSVC_DATABASE": settings.database}
    return subprocess.run(
        [sys.executable, "-m", "schedsvc.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_migrate_then_tenant_lifecycle(settings: Settings) -> None:
    migrated = cli(settings, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert re.search(r"\[1(, \d+)*\]", migrated.stdout), migrated.stdout  # every migration, from the first
    again = cli(settings, "migrate")
    assert "nothing new" in again.stdout

    created = cli(settings, "tenants", "create", "acme")
    assert created.returncode == 0, created.stderr
    key = re.search(r"(sk_[0-9a-f]{16}_[A-Za-z0-9_-]{43})", created.stdout)
    assert key is not None, created.stdout
    assert "whsec_" in created.stdout
    assert cli(settings, "tenants", "create", "acme").returncode == 1

    client = connect(settings)
    try:
        db = database(client, settings)
        stored = await db["api_keys"].find_one({"tenant": "acme"})
        assert stored is not None
        assert key.group(1) not in json.dumps(stored, default=str), "the key must be stored only as a hash"
        store = MongoTenantStore(db)
        assert await store.authenticate(key.group(1)) == "acme"

        revoked = cli(settings, "tenants", "revoke", key.group(1))
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr
        with pytest.raises(PermissionError):
            await MongoTenantStore(db).authenticate(key.group(1))

        second = re.search(r"sk_\S+", cli(settings, "tenants", "create-key", "acme").stdout)
        assert second is not None
        assert cli(settings, "tenants", "revoke", "--tenant", "acme").returncode == 0
        with pytest.raises(PermissionError):
            await MongoTenantStore(db).authenticate(second.group(0))
        assert "acme" in cli(settings, "tenants", "list").stdout
    finally:
        await client.drop_database(settings.database)
        await client.close()


def dev_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDSVC_")}
    return env | extra


def start_dev(port: int, data: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``schedsvc dev`` on ``port`` and ``data``, once its service answers ready."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "schedsvc.cli", "dev", "--port", str(port), "--data-dir", str(data)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    servers.wait_for_port(port, 90, proc)  # type: ignore[arg-type]
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5) as r:
                if json.load(r)["ready"]:
                    return proc
        except OSError:
            pass
        assert time.monotonic() < deadline, "schedsvc dev never became ready"
        time.sleep(0.5)


def leftovers_of(data: Path) -> str:
    return subprocess.run(["pgrep", "-af", str(data)], capture_output=True, text=True).stdout.strip()


def test_dev_runs_the_whole_service_and_stops_its_embedded_servers(tmp_path: Path) -> None:
    port = servers.free_port()
    data = tmp_path / "data"
    env = dev_env(SCHEDSVC_DATA_DIR=str(data))
    proc = start_dev(port, data, env)
    try:
        key = (data / "dev-api-key").read_text().strip()
        body = json.dumps(
            {
                "name": "dev-check",
                "schedule": {"kind": "cron", "expression": "*/5 * * * *"},
                "target": {"kind": "nats", "subject": "tenant.dev.reports"},
            }
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/jobs",
            data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 201
            assert json.load(r)["status"] == "active"
        # Other commands find the running dev service's database without being told where it is.
        created = subprocess.run(
            [sys.executable, "-m", "schedsvc.cli", "tenants", "create", "acme"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        assert "api key (shown once): sk_" in created.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    assert "SecantusDB (rust server)" in output, output
    assert f"export SCHEDSVC_URL=http://127.0.0.1:{port} SCHEDSVC_API_KEY={key}" in output
    assert leftovers_of(data) == "", "embedded servers still running"
    assert not (data / "dev.json").exists(), "a stopped dev service leaves no state for other commands to find"


def test_a_dev_run_killed_outright_leaves_the_port_free_and_its_servers_to_the_next_run(tmp_path: Path) -> None:
    port = servers.free_port()
    data = tmp_path / "data"
    env = dev_env(SCHEDSVC_DATA_DIR=str(data))
    killed = start_dev(port, data, env)
    killed.kill()  # SIGKILL: nothing of it runs its shutdown
    killed.communicate(timeout=10)
    deadline = time.monotonic() + 20
    while servers.port_open(port):  # its granian worker sees its parent gone and stops
        assert time.monotonic() < deadline, "the killed dev run's worker still holds the port"
        time.sleep(0.2)
    assert "secantus" in leftovers_of(data) and "nats" in leftovers_of(data)  # what the next run must stop

    again = start_dev(port, data, env)
    try:
        other_port = str(servers.free_port())
        second = subprocess.run(  # two on one data directory: refused
            [sys.executable, "-m", "schedsvc.cli", "dev", "--port", other_port, "--data-dir", str(data)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0 and "already runs from" in second.stderr, second.stderr
    finally:
        again.send_signal(signal.SIGTERM)
        output = again.communicate(timeout=60)[0].decode()
    assert "stopped SecantusDB" in output and "stopped NATS JetStream" in output, output
    assert leftovers_of(data) == "", "embedded servers still running"


def test_dev_keeps_one_key_per_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from schedsvc.dev import _dev_key

    monkeypatch.delenv("SCHEDSVC_DEV_API_KEY", raising=False)
    first = _dev_key(tmp_path)
    assert _dev_key(tmp_path) == first
    assert (tmp_path / "dev-api-key").stat().st_mode & 0o077 == 0, "the key file is private"
    other = tmp_path / "other"
    other.mkdir()
    assert _dev_key(other) != first


def test_commands_but_serve_find_a_running_dev_service(tmp_path: Path) -> None:
    from schedsvc.dev import STATE_FILE, environment_from_running_dev

    state = {
        "pid": os.getpid(),  # alive: this process stands for the running dev service
        "mongodb_uri": "mongodb://127.0.0.1:1/",
        "nats_url": "nats://127.0.0.1:2",
        "url": "http://127.0.0.1:3",
        "api_key": "sk_dev",
    }
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    found = environment_from_running_dev("tenants", tmp_path, {"SCHEDSVC_URL": "http://127.0.0.1:4"})
    assert found == {
        "SCHEDSVC_MONGODB_URI": "mongodb://127.0.0.1:1/",
        "SCHEDSVC_NATS_URL": "nats://127.0.0.1:2",
        "SCHEDSVC_API_KEY": "sk_dev",
    }  # what the environment sets wins
    assert environment_from_running_dev("serve", tmp_path, {}) == {}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"SCHEDSVC_DEV_API_KEY": "not-a-key"}, "SCHEDSVC_DEV_API_KEY must look like"),
        ({"SCHEDSVC_PARTITIONS": "lots"}, "SCHEDSVC_PARTITIONS"),
        ({}, "is already in use"),
    ],
)
def test_dev_names_a_problem_in_one_line_before_starting_anything(
    tmp_path: Path, extra: dict[str, str], expected: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1] if not extra else servers.free_port()
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "schedsvc.cli", "dev", "--port", str(port), "--data-dir", str(tmp_path / "d")],
            env=dev_env(**extra),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "d" / "mongodb").exists(), "nothing was started"
