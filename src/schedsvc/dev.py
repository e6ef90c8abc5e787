"""``schedsvc dev``: the whole service on this machine, on embedded servers where no URL is configured.

Everything a newcomer can get wrong is checked before anything starts and reported in one line. The data
directory keeps the embedded servers' data, one dev API key (reused on every start, so a key you exported
keeps working) and ``dev.json``, through which other ``schedsvc`` commands run from the same directory find
the running service and its database.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from schedsvc import embedded
from schedsvc.config import Settings
from schedsvc.domain.errors import ConfigurationError
from schedsvc.store.tenants import is_api_key, new_api_key

STATE_FILE = "dev.json"
KEY_FILE = "dev-api-key"


class DevError(RuntimeError):
    """Something that stops ``schedsvc dev`` before it starts; the message names the problem and the fix."""


def _dev_key(data: Path) -> str:
    """The data directory's dev key: ``SCHEDSVC_DEV_API_KEY`` if set, else the one kept there (or a new one)."""
    given = os.environ.get("SCHEDSVC_DEV_API_KEY")
    if given is not None:
        if not is_api_key(given):
            raise DevError(
                "SCHEDSVC_DEV_API_KEY must look like sk_<16 hex>_<43 url-safe characters>; unset it to get one"
            )
        return given
    path = data / KEY_FILE
    if path.exists() and is_api_key(kept := path.read_text().strip()):
        return kept
    key = new_api_key()
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def _stop_leftovers(data: Path) -> None:
    """Stop the embedded servers that a ``schedsvc dev`` killed outright (``kill -9``, a closed terminal) left
    running on this data directory, as its state file names them; its workers stop by themselves
    (``schedsvc/supervision.py``). A dev service still running here is an error, not a leftover."""
    try:
        state = json.loads((data / STATE_FILE).read_text())
    except (OSError, ValueError):
        return
    if running_state(data) is not None:
        raise DevError(f"a schedsvc dev (pid {state['pid']}) already runs from {data}: stop it first")
    for server in state.get("servers", []):
        pid, argv = int(server["pid"]), list(server["argv"])
        try:  # the same arguments (its own port and data path), so never a process that reused the pid
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except OSError:
            continue  # gone, or no /proc on this system
        if cmdline[-len(argv) + 1 :] != argv[1:]:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):  # 10 s, then it is killed
                time.sleep(0.1)
                os.kill(pid, 0)
            os.kill(pid, signal.SIGKILL)
        print(
            f"schedsvc dev: stopped {server.get('name', 'a server')} (pid {pid}) left by a killed dev run", flush=True
        )
    (data / STATE_FILE).unlink(missing_ok=True)


def _check_port(host: str, port: int) -> None:
    if embedded.port_open(port, host if host not in ("0.0.0.0", "::") else "127.0.0.1"):
        raise DevError(f"port {port} is already in use: stop what uses it or run `schedsvc dev --port N`")


@contextlib.contextmanager
def _started(server: embedded.ServerProcess, what: str) -> Iterator[embedded.ServerProcess]:
    try:
        server.start()
    except (RuntimeError, TimeoutError) as exc:
        raise DevError(f"{what} did not start ({exc}); its log: {server.log}") from None
    print(f"  {what}: 127.0.0.1:{server.port} (log {server.log})", flush=True)
    try:
        yield server
    finally:
        server.stop()


def _mongodb_kind(chosen: str | None) -> str:
    """The server asked for; without a choice, the Rust server, or the Python one while Rust's is not built."""
    if chosen or os.environ.get(embedded.MONGODB_SERVER_ENV):
        return embedded.mongodb_server_kind({embedded.MONGODB_SERVER_ENV: chosen} if chosen else None)
    try:
        embedded.secantus_bin("rust")
    except embedded.MissingServerError as exc:
        print(f"schedsvc dev: {exc}\n  using the slower Python server (secantusd-py) for now", flush=True)
        return "python"
    return "rust"


def running_state(data_dir: str | Path) -> dict[str, Any] | None:
    """What a ``schedsvc dev`` running from ``data_dir`` recorded, or None when none runs there."""
    path = Path(data_dir) / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)  # the recording process is still alive
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def environment_from_running_dev(command: str, data_dir: str | Path, environ: Mapping[str, str]) -> dict[str, str]:
    """``SCHEDSVC_*`` variables pointing at a running ``schedsvc dev``, for those not set in ``environ``, for a
    ``command`` run from its directory. None for ``serve``: a server runs on what it is configured with,
    wherever it starts (a second service beside a dev one must not take the dev's NATS for its own)."""
    state = None if command == "serve" else running_state(data_dir)
    if state is None:
        return {}
    found = {
        "SCHEDSVC_MONGODB_URI": state["mongodb_uri"],
        "SCHEDSVC_NATS_URL": state["nats_url"],
        "SCHEDSVC_URL": state["url"],
        "SCHEDSVC_API_KEY": state["api_key"],
    }
    return {name: value for name, value in found.items() if not environ.get(name)}


def run(port: int, data_dir: str, mongodb: str | None) -> None:
    """Start the embedded servers that no URL replaces, then the service in the foreground."""
    from schedsvc.cli import serve

    data = Path(data_dir).resolve()
    try:
        data.mkdir(parents=True, exist_ok=True)
        key = _dev_key(data)
        kind = _mongodb_kind(mongodb)
        probe = Settings.from_env(port=port)  # a malformed SCHEDSVC_* variable stops us here, not in a worker
        _stop_leftovers(data)
        _check_port(probe.host, port)
        with contextlib.ExitStack() as stack:
            print("schedsvc dev: starting", flush=True)
            started: list[embedded.ServerProcess] = []
            if not os.environ.get("SCHEDSVC_MONGODB_URI"):
                server = embedded.secantus(data / "mongodb", kind=kind)
                server.log = data / "secantus.log"
                started.append(
                    stack.enter_context(_started(server, f"embedded MongoDB-compatible server ({server.name})"))
                )
                os.environ["SCHEDSVC_MONGODB_URI"] = f"mongodb://127.0.0.1:{server.port}/?directConnection=true"
            if not os.environ.get("SCHEDSVC_NATS_URL"):
                server = embedded.nats(data / "nats")
                server.log = data / "nats.log"
                started.append(stack.enter_context(_started(server, "embedded NATS JetStream")))
                os.environ["SCHEDSVC_NATS_URL"] = f"nats://127.0.0.1:{server.port}"
            os.environ.update(
                {
                    "SCHEDSVC_DEV_MODE": "true",
                    "SCHEDSVC_DEV_API_KEY": key,
                    "SCHEDSVC_PORT": str(port),
                    # Development delivers to webhooks on this machine.
                    "SCHEDSVC_TARGET_ALLOW_NETWORKS": os.environ.get(
                        "SCHEDSVC_TARGET_ALLOW_NETWORKS", "127.0.0.0/8,::1/128"
                    ),
                }
            )
            settings = Settings.from_env()
            url = f"http://{settings.host}:{settings.port}"
            state = {
                "pid": os.getpid(),
                "url": url,
                "mongodb_uri": settings.mongodb_uri,
                "nats_url": settings.nats_url,
                "api_key": key,
                # What to stop if this process is killed outright (the next start does: _stop_leftovers).
                "servers": [
                    {"pid": server.proc.pid, "argv": server.argv, "name": server.name}
                    for server in started
                    if server.proc is not None
                ],
            }
            state_path = data / STATE_FILE
            state_path.write_text(json.dumps(state, indent=2) + "\n")
            state_path.chmod(0o600)
            stack.callback(state_path.unlink, missing_ok=True)
            metrics = f"http://{settings.host}:{settings.metrics_port}" if settings.metrics_port else url
            print(f"  API: {url}  (docs: {url}/schema, metrics: {metrics}/metrics)")
            print(f"  dev tenant API key: {key}  (kept in {data / KEY_FILE})")
            print(f"  for the command line and clients:\n    export SCHEDSVC_URL={url} SCHEDSVC_API_KEY={key}")
            print(f"  try: curl -H 'Authorization: Bearer {key}' {url}/jobs", flush=True)
            serve(settings, workers=1)
    except (DevError, ConfigurationError, embedded.MissingServerError) as exc:
        raise SystemExit(f"schedsvc dev: {exc}") from None
