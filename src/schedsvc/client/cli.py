"""``schedsvc jobs ...``, ``schedsvc runs ...`` and ``schedsvc settings ...``: the API from a shell, through
``schedsvc.client``.

Where and who come from ``--url``/``--api-key`` or ``SCHEDSVC_URL``/``SCHEDSVC_API_KEY`` (``schedsvc dev``
prints both). Output is a table, or ``--output json`` for scripts. Errors are one line on stderr naming
the field, and the exit code says what kind of failure it was (``EXIT_CODES``; docs/client.md).

This module runs the commands; their flags are declared in ``_cli_parser.py``, request bodies are built
from flags and files in ``_cli_input.py``, and tables are drawn in ``_cli_output.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import httpx
import msgspec

from schedsvc.client._cli_input import (
    UsageError,
    instant,
    job_create,
    job_patch,
    pairs,
    preview_schedule,
    settings_patch,
)
from schedsvc.client._cli_output import (
    JOB_COLUMNS,
    RUN_COLUMNS,
    job_rows,
    run_rows,
    show_job,
    show_retry_report,
    show_settings,
    table,
    when,
)
from schedsvc.client._cli_parser import COMMANDS, add_commands
from schedsvc.client._protocol import DEFAULT_URL, metadata_filter
from schedsvc.client._sync import Client
from schedsvc.client.errors import (
    ApiError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PreconditionFailedError,
    RateLimitedError,
    ServiceUnavailableError,
    UnauthorizedError,
    UnprocessableError,
)
from schedsvc.domain.models import Job, JobStatus
from schedsvc.domain.wire import MAX_COUNTED_MATCHES, BulkJobResult, JobList, JobSelector, RunList, RunRetryReport

__all__ = ["COMMANDS", "EXIT_CODES", "add_commands", "run"]

EXIT_OK = 0
EXIT_ERROR = 1
"""Anything not below (a 5xx other than 503, a bug)."""
EXIT_USAGE = 2
"""Bad flags or an unreadable/invalid file, found before calling the service (argparse uses 2 as well)."""
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
"""409 (duplicate name, completed job) or 412 (the job changed since ``--if-version``)."""
EXIT_INVALID = 5
"""400/422: the service refused the input; the message names the field."""
EXIT_AUTH = 6
"""401/403: no key, or a wrong or revoked one."""
EXIT_UNAVAILABLE = 7
"""The service cannot be reached, or is rate limiting (429) or unavailable (503) after retries: try later."""

EXIT_CODES: dict[type[ApiError], int] = {
    NotFoundError: EXIT_NOT_FOUND,
    ConflictError: EXIT_CONFLICT,
    PreconditionFailedError: EXIT_CONFLICT,
    BadRequestError: EXIT_INVALID,
    UnprocessableError: EXIT_INVALID,
    UnauthorizedError: EXIT_AUTH,
    ForbiddenError: EXIT_AUTH,
    RateLimitedError: EXIT_UNAVAILABLE,
    ServiceUnavailableError: EXIT_UNAVAILABLE,
}

# --- running ----------------------------------------------------------------------------------------------


def _selects(args: argparse.Namespace) -> bool:
    return any(getattr(args, f) is not None for f in ("tag", "name_prefix", "status", "meta", "limit"))


def _bulk(client: Client, command: str, args: argparse.Namespace) -> BulkJobResult:
    """A pause, resume or rm without a job id: the jobs the selector flags match."""
    if args.job_id is not None or args.if_version is not None:
        raise UsageError("selector: give a job id (and --if-version) or selector flags, not both")
    status = JobStatus(args.status) if args.status else None
    selector = JobSelector(
        tag=args.tag, name_prefix=args.name_prefix, status=status, metadata=pairs(args.meta, "--meta")
    )
    if selector.is_empty():
        raise UsageError("selector: give a job id, or at least one of --tag, --name-prefix, --status, --meta")
    act = {"pause": client.pause_jobs, "resume": client.resume_jobs, "rm": client.delete_jobs}[command]
    return act(selector, limit=args.limit)


def _edit(client: Client, args: argparse.Namespace) -> Job:
    """``--max-attempts``, ``--catchup`` and ``--misfire-grace`` change one setting of a policy the API
    replaces whole: the rest comes from the job as read, and the change is made only if the job is still
    that version."""
    patch = job_patch(args)
    if args.max_attempts is None and args.catchup is None and args.misfire_grace is None:
        return client.update_job(args.job_id, patch, version=args.if_version)
    current = client.get_job(args.job_id)
    if args.if_version is not None and args.if_version != current.version:
        return client.update_job(current, patch, version=args.if_version)  # the service answers 412
    if args.max_attempts is not None:
        patch.retry = msgspec.structs.replace(current.retry, max_attempts=args.max_attempts)
    if args.catchup is not None or args.misfire_grace is not None:
        changed = {"policy": args.catchup, "misfire_grace_seconds": args.misfire_grace}
        patch.catchup = msgspec.structs.replace(current.catchup, **{k: v for k, v in changed.items() if v is not None})
    return client.update_job(current, patch)


def _page_jobs(client: Client, args: argparse.Namespace) -> JobList:
    meta = pairs(args.meta, "--meta")
    try:
        metadata_filter(meta)
    except ValueError as exc:
        raise UsageError(f"--meta: {exc}") from None
    if not args.all:
        return client.list_jobs(
            status=args.status, tag=args.tag, name=args.name, metadata=meta, limit=args.limit, cursor=args.cursor
        )
    jobs = list(client.iter_jobs(status=args.status, tag=args.tag, name=args.name, metadata=meta, page_size=args.limit))
    return JobList(jobs, None)


def _page_runs(client: Client, args: argparse.Namespace) -> RunList:
    if not args.all:
        return client.list_runs(args.job_id, limit=args.limit, cursor=args.cursor)
    return RunList(list(client.iter_runs(args.job_id, page_size=args.limit)), None)


def _retry_failed(client: Client, args: argparse.Namespace) -> RunRetryReport:
    """``runs retry --failed``: the failed runs matching the flags, one batch (or every batch with ``--all``)."""
    if args.all and args.idempotency_key:
        raise UsageError("--idempotency-key: one key answers one batch; leave it out with --all")
    total = RunRetryReport(0, 0, 0, [], [], args.cursor)
    while True:
        batch = client.retry_runs(
            job=args.job,
            trigger=args.trigger,
            scheduled_from=instant(args.scheduled_from, "--from"),
            scheduled_to=instant(args.scheduled_to, "--to"),
            limit=args.limit,
            cursor=total.next_cursor,
            idempotency_key=args.idempotency_key,
        )
        total = RunRetryReport(
            total.matched + batch.matched,
            total.retried + batch.retried,
            total.refused + batch.refused,
            total.retried_runs + batch.retried_runs,
            total.refusals + batch.refusals,
            batch.next_cursor,
        )
        if not args.all or total.next_cursor is None:
            return total


def _execute(client: Client, command: str, args: argparse.Namespace, out: Callable[[str], None]) -> None:
    as_json = args.output == "json"

    def emit(value: Any, show: Callable[[], None]) -> None:
        if as_json:
            out(msgspec.json.encode(value).decode())
        else:
            show()

    match command:
        case "pause" | "resume" | "rm" if args.job_id is None or _selects(args):
            done = _bulk(client, command, args)
            more = " (more match: run it again)" if done.more else ""
            matched = f"at least {done.matched}" if done.matched >= MAX_COUNTED_MATCHES else done.matched
            emit(done, lambda: out(f"matched {matched}, changed {done.changed}{more}"))
        case "ls":
            page = _page_jobs(client, args)
            emit(page, lambda: table(JOB_COLUMNS, job_rows(page.items), out))
            if page.next_cursor and not as_json:
                print(f"more: --cursor {page.next_cursor}  (or --all)", file=sys.stderr)
        case "get" | "create" | "edit" | "pause" | "resume":
            if command == "get":
                job = client.get_job(args.job_id)
            elif command == "create":
                job = client.create_job(job_create(args), idempotency_key=args.idempotency_key)
            elif command == "edit":
                job = _edit(client, args)
            elif command == "pause":
                job = client.pause_job(args.job_id, version=args.if_version)
            else:
                job = client.resume_job(args.job_id, version=args.if_version)
            emit(job, lambda: show_job(job, out))
        case "rm":
            client.delete_job(args.job_id, version=args.if_version)
            emit({"deleted": args.job_id}, lambda: out(f"deleted {args.job_id}"))
        case "run":
            accepted = client.run_job_now(args.job_id)
            emit(accepted, lambda: out(f"queued run {accepted.run_id} (see: schedsvc runs ls {accepted.job_id})"))
        case "backfill":
            first, last = instant(args.first, "--from"), instant(args.last, "--to")
            if first is None or last is None:  # argparse requires both; this tells the type checker
                raise UsageError("backfill: give --from and --to")
            backfilled = client.backfill_job(args.job_id, first, last)
            queued = f"fires {backfilled.fires}, queued {backfilled.queued}"
            emit(backfilled, lambda: out(f"{queued} (see: schedsvc runs ls {backfilled.job_id})"))
        case "settings show" | "settings set":
            if command == "settings show":
                settings = client.get_tenant_settings()
            else:
                settings = client.update_tenant_settings(settings_patch(args))
            emit(settings, lambda: show_settings(settings, out))
        case "runs":
            runs = _page_runs(client, args)
            emit(runs, lambda: table(RUN_COLUMNS, run_rows(runs.items), out))
            if runs.next_cursor and not as_json:
                print(f"more: --cursor {runs.next_cursor}  (or --all)", file=sys.stderr)
        case "retry":
            filtering = [
                f for f in ("job", "trigger", "scheduled_from", "scheduled_to", "cursor", "all") if getattr(args, f)
            ]
            if args.run_id is not None and (args.failed or filtering):
                raise UsageError("runs retry: give RUN_ID, or --failed with filter flags, not both")
            if args.run_id is not None:
                accepted = client.retry_run(args.run_id)
                emit(accepted, lambda: out(f"queued a retry of run {accepted.run_id}"))
                return
            if not args.failed:
                raise UsageError("runs retry: give RUN_ID, or --failed to retry the failed runs matching the flags")
            report = _retry_failed(client, args)
            emit(report, lambda: show_retry_report(report, out))
            if report.next_cursor and not as_json:
                print(f"more: --cursor {report.next_cursor}  (or --all)", file=sys.stderr)
        case "preview":
            fires = client.preview_schedule(
                preview_schedule(args), after=instant(args.after, "--after"), count=args.count
            )
            emit({"fires": fires}, lambda: out("\n".join(when(f) for f in fires)))


def _fail(code: int, message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run(args: argparse.Namespace) -> None:
    """Run a parsed command of ``COMMANDS``; exits with one of the ``EXIT_*`` codes."""
    match args.command:
        case "jobs":
            command = args.jobs_command
        case "settings":
            command = f"settings {args.settings_command}"
        case _:
            command = "retry" if args.runs_command == "retry" else "runs"
    args.url = args.url or os.environ.get("SCHEDSVC_URL") or DEFAULT_URL
    api_key = args.api_key or os.environ.get("SCHEDSVC_API_KEY")
    try:
        with Client(args.url, api_key) as client:
            _execute(client, command, args, print)
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    except ApiError as exc:
        _fail(EXIT_CODES.get(type(exc), EXIT_ERROR), str(exc))
    except httpx.TransportError as exc:
        _fail(EXIT_UNAVAILABLE, f"cannot reach {args.url}: {exc or type(exc).__name__}")
    raise SystemExit(EXIT_OK)
