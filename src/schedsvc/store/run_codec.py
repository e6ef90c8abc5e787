"""The run document: one per fire (``_id`` = ``<jobId>:<scheduledMs>``), every attempt inside it.

This module describes its layout, builds the parts every write shares (identity, the latest attempt's
outcome, attempt log entries) and reads it (:func:`read_run`). The ledger (``store/runs.py``) and the
history (``store/run_history.py``) are the only other modules that touch the ``runs`` collection, each
with its own conditional queries. Besides the fields in ``docs/design/data-model.md`` the execution
module keeps bookkeeping fields:

- ``leaseUntil``: while an attempt is ``running``, until when its worker is known to be alive (extended
  with the JetStream ack deadline). A redelivered message whose run is running under a live lease is put
  back rather than called twice; once the lease has passed, the attempt is taken as interrupted (it still
  counts in ``attempts``).
- ``nextAttemptAt``: while a failed run waits for its retry (status ``queued``), when the retry is due.
- ``attemptLog``: every attempt, keyed by its number (``{"1": {startedAt, finishedAt, durationMs,
  httpStatus, errorClass, error, responseSnippet, nextRetryAt}, ...}``). An object rather than an array
  so each write sets its own attempt's fields by path (``attemptLog.2.finishedAt``), with no array
  operator, in the same single-document update as the run's status. Bounded: attempts beyond
  :data:`MAX_ATTEMPT_HISTORY` are counted but not logged, and each keeps the first
  :data:`ATTEMPT_SNIPPET_CHARS` characters of its response and :data:`ATTEMPT_ERROR_CHARS` of its error.
- ``attemptLimit`` and ``retriesOnDemand``: set when a failed run is reopened for a retry on demand.
- ``reopenedAt``: the instant of that reopen, only until its attempt is claimed, the run ends without one,
  or the reopen is undone (``RunLedger.stranded_retries``: a reopen whose message may be lost).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schedsvc.domain.lifecycle import FINAL_STATUSES
from schedsvc.domain.models import Attempt, Run, RunMessage, RunStatus, RunTrigger
from schedsvc.domain.runs import AttemptRecord, scheduled_at

Doc = dict[str, Any]

FINAL = sorted(s.value for s in FINAL_STATUSES)
"""The stored values of :data:`FINAL_STATUSES` (every ledger write is conditional on ``$nin`` these)."""
MAX_ATTEMPT_HISTORY = 60
"""Attempts logged per run (a policy allows 50; retries on demand add a few)."""
ATTEMPT_SNIPPET_CHARS = 256
"""Characters of the response kept per attempt (the run's latest keeps ``response_snippet_bytes``)."""
ATTEMPT_ERROR_CHARS = 512
"""Characters of the error message kept per attempt."""
_INTERRUPTED = "the worker stopped during this attempt"


def identity(message: RunMessage) -> Doc:
    """The fields a run is created with, whichever write creates it."""
    return {
        "jobId": message.job_id,
        "tenant": message.tenant,
        "scheduledAt": scheduled_at(message),
        "trigger": message.trigger,
    }


def outcome_fields(record: AttemptRecord) -> Doc:
    """The run's top-level fields that describe its latest attempt."""
    return {
        "startedAt": record.started_at,
        "durationMs": record.duration_ms,
        "httpStatus": record.http_status,
        "error": record.error,
        "responseSnippet": record.response_snippet,
    }


def log_fields(attempt: int, fields: Doc) -> Doc:
    """``$set`` paths for attempt ``attempt``'s entry in ``attemptLog`` (none beyond the bound)."""
    if not 1 <= attempt <= MAX_ATTEMPT_HISTORY:
        return {}
    return {f"attemptLog.{attempt}.{name}": value for name, value in fields.items()}


def attempt_outcome(record: AttemptRecord, next_retry_at: datetime | None) -> Doc:
    """One attempt's entry in ``attemptLog`` once it ended (bounded error and response)."""
    snippet = record.response_snippet
    return {
        "startedAt": record.started_at,
        "finishedAt": record.finished_at,
        "durationMs": record.duration_ms,
        "httpStatus": record.http_status,
        "errorClass": record.error_class,
        "error": None if record.error is None else record.error[:ATTEMPT_ERROR_CHARS],
        "responseSnippet": None if snippet is None else snippet[:ATTEMPT_SNIPPET_CHARS],
        "nextRetryAt": next_retry_at,
    }


def read_run(doc: Doc) -> Run:
    """The API's view of a stored run."""
    try:
        trigger = RunTrigger(doc.get("trigger", RunTrigger.SCHEDULED))
    except ValueError:
        trigger = RunTrigger.SCHEDULED
    status = RunStatus(doc.get("status", RunStatus.QUEUED))
    return Run(
        id=str(doc["_id"]),
        job_id=str(doc["jobId"]),
        scheduled_at=doc["scheduledAt"],
        trigger=trigger,
        status=status,
        attempts=int(doc.get("attempts") or 0),
        started_at=doc.get("startedAt"),
        finished_at=doc.get("finishedAt"),
        duration_ms=doc.get("durationMs"),
        http_status=doc.get("httpStatus"),
        error=doc.get("error"),
        response_snippet=doc.get("responseSnippet"),
        next_attempt_at=doc.get("nextAttemptAt") if status == RunStatus.QUEUED else None,
        retries_on_demand=int(doc.get("retriesOnDemand") or 0),
        attempt_history=_attempt_history(doc, status),
    )


def _attempt_history(doc: Doc, status: RunStatus) -> list[Attempt]:
    """The logged attempts, oldest first. An attempt without an end that is not the one running now was
    cut short by its worker (a crash, or a stop that could not record it): shown as interrupted."""
    log = doc.get("attemptLog")
    if not isinstance(log, dict):
        return []
    attempts = int(doc.get("attempts") or 0)
    history = []
    for key, entry in log.items():
        if not (isinstance(entry, dict) and str(key).isdigit() and entry.get("startedAt")):
            continue
        number = int(key)
        finished = entry.get("finishedAt")
        error_class, error = entry.get("errorClass"), entry.get("error")
        running_now = status == RunStatus.RUNNING and number == attempts
        if finished is None and not running_now:
            error_class, error = "interrupted", error or _INTERRUPTED
        history.append(
            Attempt(
                number=number,
                started_at=entry["startedAt"],
                finished_at=finished,
                duration_ms=entry.get("durationMs"),
                http_status=entry.get("httpStatus"),
                error_class=error_class,
                error=error,
                response_snippet=entry.get("responseSnippet"),
                next_retry_at=entry.get("nextRetryAt"),
            )
        )
    return sorted(history, key=lambda a: a.number)
