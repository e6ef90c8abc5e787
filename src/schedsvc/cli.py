"""``schedsvc``: serve | dev | migrate | tenants | jobs | runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from schedsvc.client import cli as jobs_cli
from schedsvc.config import Settings


def _serve(settings: Settings, workers: int | None = None) -> None:
    """Run the app under granian; configuration reaches the workers through the environment."""
    from granian import Granian
    from granian.constants import Interfaces

    workers = workers or settings.workers
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="schedsvc-metrics-")
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        # Files left by an earlier process (a restarted container keeps its volume) would resurrect
        # stale samples under reused process ids.
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)
        for stale in Path(metrics_dir).glob("*.db"):
            stale.unlink()
    Granian(
        "schedsvc.api.app:create_app_from_env",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=workers,
        # Leases are released and in-flight runs drained on SIGTERM; leave them time to finish.
        workers_kill_timeout=30,
        log_access=False,
    ).serve()


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is not installed: `pip install 'schedsvc[dev]'` provides it")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not start listening on 127.0.0.1:{port}")


@contextlib.contextmanager
def _embedded(argv: list[str], port: int, what: str, log: Path) -> Iterator[None]:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_port(port, proc, what)
        print(f"  {what}: 127.0.0.1:{port} (log {log})", flush=True)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _dev(args: argparse.Namespace) -> None:
    """The whole service on embedded defaults: SecantusDB and nats-server unless URLs are set."""
    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    key = os.environ.get("SCHEDSVC_DEV_API_KEY") or f"sk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
    with contextlib.ExitStack() as stack:
        print("schedsvc dev: starting", flush=True)
        if not os.environ.get("SCHEDSVC_MONGODB_URI"):
            port = _free_port()
            stack.enter_context(
                _embedded(
                    [
                        _bin("secantusd-py"),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--storage-path",
                        str(data / "mongodb"),
                        "--log-level",
                        "WARNING",
                    ],
                    port,
                    "embedded MongoDB-compatible server (SecantusDB)",
                    data / "secantus.log",
                )
            )
            os.environ["SCHEDSVC_MONGODB_URI"] = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        if not os.environ.get("SCHEDSVC_NATS_URL"):
            port = _free_port()
            stack.enter_context(
                _embedded(
                    [_bin("nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(data / "nats")],
                    port,
                    "embedded NATS JetStream",
                    data / "nats.log",
                )
            )
            os.environ["SCHEDSVC_NATS_URL"] = f"nats://127.0.0.1:{port}"
        os.environ.update(
            {
                "SCHEDSVC_DEV_MODE": "true",
                "SCHEDSVC_DEV_API_KEY": key,
                "SCHEDSVC_PORT": str(args.port),
                # Development delivers to webhooks on this machine.
                "SCHEDSVC_TARGET_ALLOW_NETWORKS": os.environ.get(
                    "SCHEDSVC_TARGET_ALLOW_NETWORKS", "127.0.0.0/8,::1/128"
                ),
            }
        )
        settings = Settings.from_env()
        print(f"  API: http://{settings.host}:{settings.port}  (docs: /schema, metrics: /metrics)")
        print(f"  dev tenant API key: {key}")
        print(f"  try: curl -H 'Authorization: Bearer {key}' http://{settings.host}:{settings.port}/jobs", flush=True)
        _serve(settings, workers=1)


async def _migrate(settings: Settings) -> None:
    from schedsvc.store import connect, database
    from schedsvc.store.migrate import applied_versions, apply_migrations

    client = connect(settings)
    try:
        db = database(client, settings)
        applied = await apply_migrations(db, settings)
        print(f"applied: {applied or 'nothing new'}; schema at {sorted(await applied_versions(db))}")
    finally:
        await client.close()


async def _tenants(settings: Settings, args: argparse.Namespace) -> int:
    from schedsvc.store import MongoTenantStore, connect, database
    from schedsvc.store.tenants import TenantExistsError, key_id_of

    client = connect(settings)
    try:
        store = MongoTenantStore(database(client, settings))
        match args.tenants_command:
            case "create":
                try:
                    key, secret = await store.create_tenant(args.name)
                except (TenantExistsError, ValueError) as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 1
                print(f"tenant: {args.name}\napi key (shown once): {key.key}\nkey id: {key.key_id}")
                print(f"webhook signing secret: {secret}")
            case "create-key":
                key = await store.create_key(args.name)
                print(f"api key (shown once): {key.key}\nkey id: {key.key_id}")
            case "revoke":
                key_id = key_id_of(args.key) if args.key else None
                if key_id is not None:
                    ok = await store.revoke_key(key_id)
                    print(f"revoked key {key_id}" if ok else f"no active key {key_id}")
                    return 0 if ok else 1
                tenant = args.tenant or args.key
                count = await store.revoke_tenant_keys(tenant)
                print(f"revoked {count} key(s) of tenant {tenant}")
                return 0 if count else 1
            case "rotate-secret":
                print(f"new webhook signing secret: {await store.rotate_secret(args.name)}")
            case "list":
                for t in await store.list_tenants():
                    active = [k["_id"] for k in t["keys"] if k.get("revokedAt") is None]
                    print(f"{t['_id']}\tactive keys: {', '.join(active) or '-'}")
        return 0
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="schedsvc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the service (configuration from SCHEDSVC_* variables)")
    dev = sub.add_parser("dev", help="run everything locally on embedded defaults")
    dev.add_argument("--port", type=int, default=int(os.environ.get("SCHEDSVC_PORT", "8000")))
    dev.add_argument("--data-dir", default=os.environ.get("SCHEDSVC_DATA_DIR", ".dev-data"))
    sub.add_parser("migrate", help="apply database migrations")
    tenants = sub.add_parser("tenants", help="manage tenants and API keys")
    tsub = tenants.add_subparsers(dest="tenants_command", required=True)
    tsub.add_parser("create", help="create a tenant and print its first API key").add_argument("name")
    tsub.add_parser("create-key", help="print a new API key for a tenant").add_argument("name")
    revoke = tsub.add_parser("revoke", help="revoke one key, or every key of a tenant")
    group = revoke.add_mutually_exclusive_group(required=True)
    group.add_argument("key", nargs="?", help="an API key, its key id (the hex after sk_), or a tenant name")
    group.add_argument("--tenant", help="revoke every key of this tenant")
    tsub.add_parser("rotate-secret", help="add a new webhook signing secret").add_argument("name")
    tsub.add_parser("list", help="list tenants and their active key ids")
    jobs_cli.add_commands(sub)
    args = parser.parse_args(argv)

    if args.command == "dev":
        _dev(args)
        return
    if args.command in ("jobs", "runs"):
        jobs_cli.run(args)
    settings = Settings.from_env()
    match args.command:
        case "serve":
            _serve(settings)
        case "migrate":
            asyncio.run(_migrate(settings))
        case "tenants":
            raise SystemExit(asyncio.run(_tenants(settings, args)))


if __name__ == "__main__":
    main()
