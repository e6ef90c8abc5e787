"""``schedsvc jobs ...`` and ``schedsvc runs ...``: the jobs API from a shell, through ``schedsvc.client``.

Where and who come from ``--url``/``--api-key`` or ``SCHEDSVC_URL``/``SCHEDSVC_API_KEY`` (``schedsvc dev``
prints both). Output is a table, or ``--output json`` for scripts. Errors are one line on stderr naming
the field, and the exit code says what kind of failure it was (``EXIT_CODES``; docs/client.md).

This module holds the commands and their flags; request bodies are built from flags and files in
``_cli_input.py``, and tables are drawn in ``_cli_output.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import httpx
import msgspec

from schedsvc.client._cli_input import UsageError, instant, job_create, job_patch, pairs, preview_schedule
from schedsvc.client._cli_output import (
    JOB_COLUMNS,
    RUN_COLUMNS,
    job_rows,
    run_rows,
    show_job,
    show_retry_report,
    table,
    when,
)
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

# --- parsing -------------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    # Defaults are read when the command runs, not when it is parsed: `schedsvc` may fill them in from a
    # running `schedsvc dev` first.
    parser.add_argument("--url", help=f"default: $SCHEDSVC_URL, else {DEFAULT_URL}")
    parser.add_argument("--api-key", help="default: $SCHEDSVC_API_KEY")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")


def _schedule_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("schedule (one of)")
    group.add_argument("--cron", metavar="EXPR", help="cron expression, e.g. '0 2 * * *'")
    group.add_argument("--every", metavar="SECONDS", type=int, help="fixed interval in seconds")
    group.add_argument("--at", metavar="INSTANT", help="once, at an RFC 3339 instant with offset")
    group.add_argument("--schedule", metavar="JSON", help='any schedule as JSON, e.g. \'{"kind": "calendar", ...}\'')
    group.add_argument("--timezone", metavar="TZ", help="IANA time zone of --cron (default UTC)")


def _job_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name")
    _schedule_flags(parser)
    target = parser.add_argument_group("target (--webhook or --subject)")
    target.add_argument("--webhook", metavar="URL", help="call this URL (http target)")
    target.add_argument("--method", choices=("GET", "POST", "PUT", "PATCH", "DELETE"))
    target.add_argument("--header", action="append", metavar="NAME=VALUE", help="webhook header (repeatable)")
    target.add_argument("--body", metavar="JSON", help="webhook body: JSON, or a plain string")
    target.add_argument("--subject", help="publish to this NATS subject (nats target)")
    target.add_argument("--payload", metavar="JSON", help="NATS payload: JSON, or a plain string")
    parser.add_argument("--tag", action="append", help="repeatable; replaces the job's tags on edit")
    parser.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata entry (repeatable)")
    parser.add_argument("--overlap", choices=("allow", "skip", "bufferOne"))
    parser.add_argument("--max-attempts", type=int, help="retry policy: attempts per fire")
    parser.add_argument("--catchup", choices=("skip", "latest", "all"), help="catch-up policy for missed fires")


def _version_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--if-version", type=int, metavar="N", help="only if the job is still at version N (If-Match); else exit 4"
    )


def _selector_flags(cmd: argparse.ArgumentParser) -> None:
    """Instead of a job id: the jobs matching every flag given (``POST /jobs/bulk/...``)."""
    cmd.add_argument("--tag")
    cmd.add_argument("--name-prefix")
    cmd.add_argument("--status", choices=("active", "paused", "completed"))
    cmd.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata entry (repeatable)")
    cmd.add_argument("--limit", type=int, help="at most this many jobs (1-1000; default 1000)")


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


def add_commands(sub: Any) -> None:
    """Register ``jobs`` and ``runs`` on ``schedsvc``'s subcommands."""
    jobs = sub.add_parser("jobs", help="create, list, change and run jobs (the REST API)")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")

    ls = jsub.add_parser("ls", help="list jobs")
    _common(ls)
    ls.add_argument("--status", choices=("active", "paused", "completed"))
    ls.add_argument("--tag")
    ls.add_argument("--name", help="name prefix")
    ls.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata entry the jobs hold (repeatable)")
    ls.add_argument("--limit", type=int, default=50, help="page size (1-500)")
    ls.add_argument("--cursor", help="continue after a page (its nextCursor)")
    ls.add_argument("--all", action="store_true", help="follow nextCursor to the last page")

    for name, text in (("get", "show a job"), ("run", "run a job now (a manual run)")):
        cmd = jsub.add_parser(name, help=text)
        _common(cmd)
        cmd.add_argument("job_id")
    for name, text in (("pause", "pause"), ("resume", "resume"), ("rm", "delete")):
        cmd = jsub.add_parser(name, help=f"{text} a job, or every job matching --tag/--name-prefix/--status/--meta")
        _common(cmd)
        cmd.add_argument("job_id", nargs="?")
        _version_flag(cmd)
        _selector_flags(cmd)

    create = jsub.add_parser("create", help="create a job from flags or a JSON/YAML file")
    _common(create)
    create.add_argument("-f", "--file", help="the job as JSON or YAML (the POST /jobs body); '-' reads stdin")
    _job_flags(create)
    create.add_argument("--paused", action="store_true", help="create it paused")
    create.add_argument("--idempotency-key", help="make re-running this command safe (default: one per command)")

    edit = jsub.add_parser("edit", help="change a job: only the fields given change")
    _common(edit)
    edit.add_argument("job_id")
    edit.add_argument("-f", "--file", help="the changes as JSON or YAML (the PATCH body); '-' reads stdin")
    _job_flags(edit)
    _version_flag(edit)

    _runs_flags(jsub.add_parser("runs", help="a job's runs, newest first (as `schedsvc runs ls`)"))

    preview = jsub.add_parser("preview", help="the next fires of a schedule")
    _common(preview)
    _schedule_flags(preview)
    preview.add_argument("-f", "--file", help="the schedule as JSON or YAML")
    preview.add_argument("--count", type=int, default=10)
    preview.add_argument("--after", help="fires after this RFC 3339 instant (default: now)")

    runs_cmd = sub.add_parser("runs", help="run history of jobs")
    rsub = runs_cmd.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    _runs_flags(rsub.add_parser("ls", help="a job's runs, newest first"))

    retry = rsub.add_parser("retry", help="retry failed runs on demand: RUN_ID, or --failed runs matching the flags")
    _common(retry)
    retry.add_argument("run_id", nargs="?", metavar="RUN_ID", help="retry this failed run: one more attempt")
    retry.add_argument("--failed", action="store_true", help="retry the failed runs that match the flags below")
    retry.add_argument("--job", help="only this job's failed runs")
    retry.add_argument("--trigger", choices=("scheduled", "catchup", "manual"))
    retry.add_argument("--from", dest="scheduled_from", metavar="INSTANT", help="scheduled at or after (RFC 3339)")
    retry.add_argument("--to", dest="scheduled_to", metavar="INSTANT", help="scheduled before (RFC 3339)")
    retry.add_argument("--limit", type=int, default=20, help="failed runs per batch (1-100)")
    retry.add_argument("--cursor", help="continue after a batch (its nextCursor)")
    retry.add_argument("--all", action="store_true", help="follow nextCursor: every matching failed run")
    retry.add_argument("--idempotency-key", help="make re-running this command safe (one batch only)")


def _runs_flags(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("job_id")
    parser.add_argument("--limit", type=int, default=20, help="page size (1-500)")
    parser.add_argument("--cursor")
    parser.add_argument("--all", action="store_true", help="follow nextCursor to the oldest run")


# --- running ----------------------------------------------------------------------------------------------


def _edit(client: Client, args: argparse.Namespace) -> Job:
    """``--max-attempts`` and ``--catchup`` change one setting of a policy the API replaces whole: the rest
    comes from the job as read, and the change is made only if the job is still that version."""
    patch = job_patch(args)
    if args.max_attempts is None and args.catchup is None:
        return client.update_job(args.job_id, patch, version=args.if_version)
    current = client.get_job(args.job_id)
    if args.if_version is not None and args.if_version != current.version:
        return client.update_job(current, patch, version=args.if_version)  # the service answers 412
    if args.max_attempts is not None:
        patch.retry = msgspec.structs.replace(current.retry, max_attempts=args.max_attempts)
    if args.catchup is not None:
        patch.catchup = msgspec.structs.replace(current.catchup, policy=args.catchup)
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
    """Run a parsed ``jobs``/``runs`` command; exits with one of the ``EXIT_*`` codes."""
    command = args.jobs_command if args.command == "jobs" else "retry" if args.runs_command == "retry" else "runs"
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
