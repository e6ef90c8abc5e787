"""Structured JSON logs, with the request id, tenant, job id and run id of the work in hand.

The ids travel in context variables, so any log line written while serving a request or performing a run
carries them without being passed around. Secrets are never put in log records: API keys, signing
secrets and target headers are not logged anywhere in the service.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import msgspec

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
tenant_var: ContextVar[str | None] = ContextVar("tenant", default=None)
job_id_var: ContextVar[str | None] = ContextVar("job_id", default=None)
run_id_var: ContextVar[str | None] = ContextVar("run_id", default=None)

_CONTEXT = (("requestId", request_id_var), ("tenant", tenant_var), ("jobId", job_id_var), ("runId", run_id_var))
_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, var in _CONTEXT:
            value = var.get()
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _encode(entry).decode()


def configure_logging(level: str) -> None:
    """JSON lines on stderr at ``level`` for the service and the libraries it uses."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request line with its URL (which may carry a tenant's query secrets).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def granian_log_config(level: str) -> dict[str, Any]:
    """granian's ``log_dictconfig``: its own lines (start-up, worker spawns, errors) as JSON like ours.

    granian configures its loggers in the main process before the app exists (so before
    :func:`configure_logging`); without this its lines are plain text and a log pipeline that parses
    every stdout line as JSON would drop or choke on them.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "loggers": {
            "_granian": {"handlers": ["json"], "level": level.upper(), "propagate": False},
            "granian.access": {"handlers": ["json"], "level": level.upper(), "propagate": False},
        },
    }
