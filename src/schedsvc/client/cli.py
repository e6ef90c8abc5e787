"""``schedsvc jobs ...`` and ``schedsvc runs ...``: the jobs API from a shell, through ``schedsvc.client``.

Where and who come from ``--url``/``--api-key`` or ``SCHEDSVC_URL``/``SCHEDSVC_API_KEY`` (``schedsvc dev``
prints both). Output is a table, or ``--output json`` for scripts. Errors are one line on stderr naming
the field, and the exit code says what kind of failure it was (``EXIT_CODES``; docs/client.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx
import msgspec

from schedsvc.client._protocol import DEFAULT_URL
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
from schedsvc.domain.models import (
    CalendarSchedule,
    CronSchedule,
    HttpTarget,
    IntervalSchedule,
    Job,
    JobCreate,
    JobPatch,
    NatsTarget,
    OnceSchedule,
    Run,
    Schedule,
)
from schedsvc.domain.wire import JobList, RunList

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

_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`")


class UsageError(Exception):
    """Input the command line refuses before calling the service (exit 2)."""


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


def add_commands(sub: Any) -> None:
    """Register ``jobs`` and ``runs`` on ``schedsvc``'s subcommands."""
    jobs = sub.add_parser("jobs", help="create, list, change and run jobs (the REST API)")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")

    ls = jsub.add_parser("ls", help="list jobs")
    _common(ls)
    ls.add_argument("--status", choices=("active", "paused", "completed"))
    ls.add_argument("--tag")
    ls.add_argument("--name", help="name prefix")
    ls.add_argument("--limit", type=int, default=50, help="page size (1-500)")
    ls.add_argument("--cursor", help="continue after a page (its nextCursor)")
    ls.add_argument("--all", action="store_true", help="follow nextCursor to the last page")

    for name, text in (("get", "show a job"), ("run", "run a job now (a manual run)")):
        cmd = jsub.add_parser(name, help=text)
        _common(cmd)
        cmd.add_argument("job_id")
    for name, text in (("pause", "pause a job"), ("resume", "resume a job"), ("rm", "delete a job")):
        cmd = jsub.add_parser(name, help=text)
        _common(cmd)
        cmd.add_argument("job_id")
        _version_flag(cmd)

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


def _runs_flags(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("job_id")
    parser.add_argument("--limit", type=int, default=20, help="page size (1-500)")
    parser.add_argument("--cursor")
    parser.add_argument("--all", action="store_true", help="follow nextCursor to the oldest run")


# --- building request bodies from flags and files -----------------------------------------------------------


def _load(path: str) -> Any:
    text = sys.stdin.read() if path == "-" else _read(path)
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise UsageError(
                f"{path}: reading YAML needs PyYAML (`pip install pyyaml`); JSON works without it"
            ) from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON: {exc}") from None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _pairs(values: Sequence[str] | None, flag: str) -> dict[str, str]:
    pairs = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag}: expected NAME=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def _schedule_from_flags(args: argparse.Namespace) -> dict[str, Any] | None:
    given = [f for f in ("cron", "every", "at", "schedule") if getattr(args, f) is not None]
    if len(given) > 1:
        raise UsageError(f"schedule: give one of --cron, --every, --at, --schedule (got {', '.join(given)})")
    if args.timezone is not None and args.cron is None:
        raise UsageError("schedule.timezone: --timezone goes with --cron (put it inside --schedule otherwise)")
    if args.cron is not None:
        return {"kind": "cron", "expression": args.cron, **({"timezone": args.timezone} if args.timezone else {})}
    if args.every is not None:
        return {"kind": "interval", "seconds": args.every}
    if args.at is not None:
        return {"kind": "once", "at": args.at}
    if args.schedule is not None:
        schedule = _json_or_text(args.schedule)
        if not isinstance(schedule, dict):
            raise UsageError("schedule: --schedule must be a JSON object")
        return schedule
    return None


def _target_from_flags(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.webhook is not None and args.subject is not None:
        raise UsageError("target: give --webhook or --subject, not both")
    if args.webhook is not None:
        target: dict[str, Any] = {"kind": "http", "url": args.webhook}
        if args.method:
            target["method"] = args.method
        if args.header:
            target["headers"] = _pairs(args.header, "--header")
        if args.body is not None:
            target["body"] = _json_or_text(args.body)
        return target
    if args.subject is not None:
        target = {"kind": "nats", "subject": args.subject}
        if args.header:
            target["headers"] = _pairs(args.header, "--header")
        if args.payload is not None:
            target["payload"] = _json_or_text(args.payload)
        return target
    for flag in ("method", "header", "body", "payload"):
        if getattr(args, flag) is not None:
            raise UsageError(f"target: --{flag} needs --webhook or --subject")
    return None


def _fields_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if args.name is not None:
        fields["name"] = args.name
    if (schedule := _schedule_from_flags(args)) is not None:
        fields["schedule"] = schedule
    if (target := _target_from_flags(args)) is not None:
        fields["target"] = target
    if args.tag is not None:
        fields["tags"] = args.tag
    if args.meta is not None:
        fields["metadata"] = _pairs(args.meta, "--meta")
    if args.overlap is not None:
        fields["overlap"] = args.overlap
    if args.max_attempts is not None:
        fields["retry"] = {"maxAttempts": args.max_attempts}
    if args.catchup is not None:
        fields["catchup"] = {"policy": args.catchup}
    return fields


def _convert(data: Any, kind: type[Any], what: str) -> Any:
    """Validate locally with the API's own types, so a mistake is named before anything is sent."""
    if not isinstance(data, dict):
        raise UsageError(f"{what}: expected a JSON object")
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        match = _AT_PATH.search(str(exc))
        message = _AT_PATH.sub("", str(exc))
        field = match.group(1).replace("[", ".").replace("]", "") if match else what
        raise UsageError(f"{field or what}: {message}") from None


def _job_create(args: argparse.Namespace) -> JobCreate:
    data = _load(args.file) if args.file else {}
    if not isinstance(data, dict):
        raise UsageError(f"{args.file}: expected a JSON object (the POST /jobs body)")
    data = {**data, **_fields_from_flags(args)}
    if args.paused:
        data["paused"] = True
    for required in ("name", "schedule", "target"):
        if required not in data:
            hint = {"name": "--name", "schedule": "--cron/--every/--at", "target": "--webhook/--subject"}[required]
            raise UsageError(f"{required}: required ({hint}, or --file)")
    job: JobCreate = _convert(data, JobCreate, "job")
    return job


def _job_patch(args: argparse.Namespace) -> JobPatch:
    data = _load(args.file) if args.file else {}
    if not isinstance(data, dict):
        raise UsageError(f"{args.file}: expected a JSON object (the PATCH /jobs/ID body)")
    data = {**data, **_fields_from_flags(args)}
    if not data:
        raise UsageError("edit: nothing to change (give flags such as --cron or --tag, or --file)")
    patch: JobPatch = _convert(data, JobPatch, "changes")
    return patch


def _edit(client: Client, args: argparse.Namespace) -> Job:
    """``--max-attempts`` and ``--catchup`` change one setting of a policy the API replaces whole: the rest
    comes from the job as read, and the change is made only if the job is still that version."""
    patch = _job_patch(args)
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


def _preview_schedule(args: argparse.Namespace) -> Schedule:
    data = _load(args.file) if args.file else _schedule_from_flags(args)
    if data is None:
        raise UsageError("schedule: required (--cron/--every/--at/--schedule, or --file)")
    wrapped = _convert({"schedule": data}, _ScheduleOnly, "schedule")
    schedule: Schedule = wrapped.schedule
    return schedule


class _ScheduleOnly(msgspec.Struct):
    schedule: Schedule


def _instant(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag}: not an RFC 3339 instant: {value!r}") from None
    if instant.tzinfo is None:
        raise UsageError(f"{flag}: give a UTC offset (e.g. 2026-12-01T09:00:00+01:00 or ...Z)")
    return instant


# --- output ----------------------------------------------------------------------------------------------


def _when(instant: datetime | None) -> str:
    return "-" if instant is None else instant.isoformat(timespec="seconds")


def describe_schedule(schedule: Schedule) -> str:
    match schedule:
        case CronSchedule():
            return f"cron {schedule.expression} {schedule.timezone}"
        case IntervalSchedule():
            return f"every {schedule.seconds}s"
        case CalendarSchedule():
            return f"every {schedule.every} {schedule.unit} at {schedule.time} {schedule.timezone}"
        case OnceSchedule():
            return f"once at {_when(schedule.at)}"
    return schedule.__class__.__name__  # pragma: no cover - the union is exhaustive


def _target(job: Job) -> str:
    match job.target:
        case HttpTarget(method=method, url=url):
            return f"{method} {url}"
        case NatsTarget(subject=subject):
            return f"nats {subject}"
    return "-"  # pragma: no cover - the union is exhaustive


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], out: Callable[[str], None]) -> None:
    rows = [list(header), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _job_rows(jobs: Iterable[Job]) -> Iterable[list[str]]:
    for j in jobs:
        last = "-" if j.last_run is None else f"{_when(j.last_run)} {j.last_run_status or ''}".strip()
        yield [j.id, j.name, j.status, describe_schedule(j.schedule), _when(j.next_run), last]


def _run_rows(runs: Iterable[Run]) -> Iterable[list[str]]:
    for r in runs:
        duration = "-" if r.duration_ms is None else f"{r.duration_ms}ms"
        status = "-" if r.http_status is None else str(r.http_status)
        yield [r.id, _when(r.scheduled_at), r.trigger, r.status, str(r.attempts), duration, status, r.error or ""]


JOB_COLUMNS = ("ID", "NAME", "STATUS", "SCHEDULE", "NEXT RUN", "LAST RUN")
RUN_COLUMNS = ("RUN", "SCHEDULED", "TRIGGER", "STATUS", "ATTEMPTS", "DURATION", "HTTP", "ERROR")


def _show_job(job: Job, out: Callable[[str], None]) -> None:
    lines = [
        ("id", job.id),
        ("name", job.name),
        ("status", job.status),
        ("schedule", describe_schedule(job.schedule)),
        ("target", _target(job)),
        ("next run", _when(job.next_run)),
        ("last run", f"{_when(job.last_run)} {job.last_run_status or ''}".strip()),
        ("retry", f"{job.retry.max_attempts} attempts"),
        ("catch-up", f"{job.catchup.policy} within {job.catchup.window_seconds}s"),
        ("overlap", job.overlap),
        ("tags", ", ".join(job.tags) or "-"),
        ("version", str(job.version)),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        out(f"{key.ljust(width)}  {value}")


# --- running ----------------------------------------------------------------------------------------------


def _page_jobs(client: Client, args: argparse.Namespace) -> JobList:
    if not args.all:
        return client.list_jobs(status=args.status, tag=args.tag, name=args.name, limit=args.limit, cursor=args.cursor)
    jobs = list(client.iter_jobs(status=args.status, tag=args.tag, name=args.name, page_size=args.limit))
    return JobList(jobs, None)


def _page_runs(client: Client, args: argparse.Namespace) -> RunList:
    if not args.all:
        return client.list_runs(args.job_id, limit=args.limit, cursor=args.cursor)
    return RunList(list(client.iter_runs(args.job_id, page_size=args.limit)), None)


def _execute(client: Client, command: str, args: argparse.Namespace, out: Callable[[str], None]) -> None:
    as_json = args.output == "json"

    def emit(value: Any, table: Callable[[], None]) -> None:
        if as_json:
            out(msgspec.json.encode(value).decode())
        else:
            table()

    match command:
        case "ls":
            page = _page_jobs(client, args)
            emit(page, lambda: _table(JOB_COLUMNS, _job_rows(page.items), out))
            if page.next_cursor and not as_json:
                print(f"more: --cursor {page.next_cursor}  (or --all)", file=sys.stderr)
        case "get" | "create" | "edit" | "pause" | "resume":
            if command == "get":
                job = client.get_job(args.job_id)
            elif command == "create":
                job = client.create_job(_job_create(args), idempotency_key=args.idempotency_key)
            elif command == "edit":
                job = _edit(client, args)
            elif command == "pause":
                job = client.pause_job(args.job_id, version=args.if_version)
            else:
                job = client.resume_job(args.job_id, version=args.if_version)
            emit(job, lambda: _show_job(job, out))
        case "rm":
            client.delete_job(args.job_id, version=args.if_version)
            emit({"deleted": args.job_id}, lambda: out(f"deleted {args.job_id}"))
        case "run":
            accepted = client.run_job_now(args.job_id)
            emit(accepted, lambda: out(f"queued run {accepted.run_id} (see: schedsvc runs ls {accepted.job_id})"))
        case "runs":
            runs = _page_runs(client, args)
            emit(runs, lambda: _table(RUN_COLUMNS, _run_rows(runs.items), out))
            if runs.next_cursor and not as_json:
                print(f"more: --cursor {runs.next_cursor}  (or --all)", file=sys.stderr)
        case "preview":
            fires = client.preview_schedule(
                _preview_schedule(args), after=_instant(args.after, "--after"), count=args.count
            )
            emit({"fires": fires}, lambda: out("\n".join(_when(f) for f in fires)))


def _fail(code: int, message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run(args: argparse.Namespace) -> None:
    """Run a parsed ``jobs``/``runs`` command; exits with one of the ``EXIT_*`` codes."""
    command = args.jobs_command if args.command == "jobs" else "runs"
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
