"""``schedsvc``: serve | dev | migrate | tenants | jobs | runs | settings."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from schedsvc import dev, embedded
from schedsvc.client import cli as jobs_cli
from schedsvc.config import Settings
from schedsvc.domain.errors import ConfigurationError
from schedsvc.supervision import SERVER_PID_ENV

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from schedsvc.domain.tenants import TenantChangeKind

DEFAULT_DATA_DIR = os.environ.get("SCHEDSVC_DATA_DIR", ".dev-data")


def serve(settings: Settings, workers: int | None = None) -> None:
    """Run the app under granian; configuration reaches the workers through the environment."""
    from granian import Granian
    from granian.constants import Interfaces

    from schedsvc.observability.logging import granian_log_config

    workers = workers or settings.workers
    # granian's workers are child processes: with more than one, or with the metrics served from this
    # process, their samples must go through files that every process can read.
    if (workers > 1 or settings.metrics_port) and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="schedsvc-metrics-")
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        # Files left by an earlier process (a restarted container keeps its volume) would resurrect
        # stale samples under reused process ids.
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)
        for stale in Path(metrics_dir).glob("*.db"):
            stale.unlink()
    metrics_server = _serve_metrics(settings.host, settings.metrics_port) if settings.metrics_port else None
    # The workers stop if this process is killed outright. (``schedsvc.supervision`` imports nothing of the app:
    # prometheus_client must not be imported here before PROMETHEUS_MULTIPROC_DIR is set, or forked workers
    # would count in their own memory and the metrics port would show none of it.)
    os.environ[SERVER_PID_ENV] = str(os.getpid())
    try:
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
            log_dictconfig=granian_log_config(settings.log_level),
        ).serve()
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()


def _serve_metrics(host: str, port: int) -> WSGIServer:
    """Serve every granian worker's metrics on their own port, from granian's main process.

    prometheus-client's own server (a thread) with its multi-process collector, which reads the files the
    workers write to ``PROMETHEUS_MULTIPROC_DIR``; the main process records no samples of its own.
    """
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


async def _migrate(settings: Settings) -> None:
    from schedsvc.store import connect, database
    from schedsvc.store.migrate import applied_versions, apply_migrations

    # No per-operation deadline: building an index on a large collection may take minutes.
    client = connect(settings, timeoutMS=None)
    try:
        db = database(client, settings)
        applied = await apply_migrations(db, settings)
        print(f"applied: {applied or 'nothing new'}; schema at {sorted(await applied_versions(db))}")
    finally:
        await client.close()


async def _announce(settings: Settings, kind: TenantChangeKind, value: str) -> None:
    """Running replicas drop their cached copy at once (else within their cache lifetime, 5 minutes)."""
    from schedsvc.bus import announce_tenant_change

    if not await announce_tenant_change(settings, kind, value):
        print("warning: NATS unreachable; running replicas notice within 5 minutes", file=sys.stderr)


async def _tenants(settings: Settings, args: argparse.Namespace) -> int:
    from schedsvc.domain.errors import TenantExistsError
    from schedsvc.store import MongoTenantStore, connect, database
    from schedsvc.store.tenants import key_id_of

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
                    if ok:
                        await _announce(settings, "key", key_id)
                    return 0 if ok else 1
                tenant = args.tenant or args.key
                count = await store.revoke_tenant_keys(tenant)
                print(f"revoked {count} key(s) of tenant {tenant}")
                if count:
                    await _announce(settings, "tenant", tenant)
                return 0 if count else 1
            case "rotate-secret":
                print(f"new webhook signing secret: {await store.rotate_secret(args.name)}")
                await _announce(settings, "data", args.name)
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
    dev_parser = sub.add_parser("dev", help="run everything locally on embedded defaults")
    dev_parser.add_argument("--port", type=int, default=int(os.environ.get("SCHEDSVC_PORT", "8000")))
    dev_parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="servers' data and the dev key")
    dev_parser.add_argument(
        "--mongodb",
        choices=embedded.SERVER_KINDS,
        default=None,
        help=f"embedded MongoDB-compatible server (default: rust; or {embedded.MONGODB_SERVER_ENV})",
    )
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
        dev.run(args.port, args.data_dir, args.mongodb)
        return
    # Run from the directory of a running `schedsvc dev`, commands find its database without being told.
    os.environ.update(dev.environment_from_running_dev(args.command, DEFAULT_DATA_DIR, os.environ))
    if args.command in jobs_cli.COMMANDS:
        jobs_cli.run(args)
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        raise SystemExit(f"error: {exc}") from None
    match args.command:
        case "serve":
            serve(settings)
        case "migrate":
            asyncio.run(_migrate(settings))
        case "tenants":
            raise SystemExit(asyncio.run(_tenants(settings, args)))


if __name__ == "__main__":
    main()
