"""schedsvc: a job-scheduler microservice (REST API, leaderless timing, JetStream execution)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("schedsvc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
