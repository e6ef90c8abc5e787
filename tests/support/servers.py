"""Start and stop the real servers tests talk to: SecantusDB (MongoDB wire protocol) and nats-server.

Both run as separate processes on loopback ports chosen at random; nothing here imports SecantusDB.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _bin(name: str) -> str:
    """Prefer the executable installed beside this Python (the venv's), then PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed; run `make test` to set up the environment")
    return found


@dataclass
class ServerProcess:
    """A server we started, which can be stopped (gracefully or with SIGKILL) and started again."""

    argv: list[str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] | None = None
    """The process's environment (None: this process's)."""

    def start(self, timeout: float = 60.0) -> None:
        logf = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=self.env
        )
        logf.close()
        wait_for_port(self.port, timeout, self.proc)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


def secantus(storage: Path, port: int | None = None) -> ServerProcess:
    port = port or free_port()
    storage.mkdir(parents=True, exist_ok=True)
    argv = [
        _bin("secantusd-py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage-path",
        str(storage),
        "--log-level",
        "WARNING",
    ]
    return ServerProcess(argv, port, storage.parent / f"secantus-{port}.log")


def nats(storage: Path, port: int | None = None) -> ServerProcess:
    port = port or free_port()
    storage.mkdir(parents=True, exist_ok=True)
    argv = [_bin("nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(storage)]
    return ServerProcess(argv, port, storage.parent / f"nats-{port}.log")


def redis(storage: Path, port: int | None = None) -> ServerProcess:
    """A private Redis that keeps nothing on disk (the machine's shared one must never be stopped)."""
    port = port or free_port()
    storage.mkdir(parents=True, exist_ok=True)
    argv = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(storage),
    ]
    return ServerProcess(argv, port, storage.parent / f"redis-{port}.log")


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def schedsvc(settings_env: dict[str, str], log: Path, port: int | None = None) -> ServerProcess:
    """``schedsvc serve`` on loopback, configured by ``SCHEDSVC_*`` variables (the port is set here)."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDSVC_")}
    env.update(settings_env)
    env.update({"SCHEDSVC_HOST": "127.0.0.1", "SCHEDSVC_PORT": str(port)})
    return ServerProcess([sys.executable, "-m", "schedsvc.cli", "serve"], port, log, env=env)
