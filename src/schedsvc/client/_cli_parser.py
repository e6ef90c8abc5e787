"""The command line's commands and flags: ``schedsvc jobs ...``, ``schedsvc runs ...`` and
``schedsvc settings ...``, registered on ``schedsvc``'s subcommands. Private to ``schedsvc.client.cli``,
which runs them.
"""

from __future__ import annotations

import argparse
from typing import Any

from schedsvc.client._protocol import DEFAULT_URL

COMMANDS = ("jobs", "runs", "settings")
"""``schedsvc``'s subcommands that call the API (``schedsvc.client.cli.run``)."""


def _command(commands: Any, name: str, text: str) -> argparse.ArgumentParser:
    """A command that calls the API, with the flags every such command takes: where, who, and how to show."""
    cmd: argparse.ArgumentParser = commands.add_parser(name, help=text)
    # Defaults are read when the command runs, not when it is parsed: `schedsvc` may fill them in from a
    # running `schedsvc dev` first.
    cmd.add_argument("--url", help=f"default: $SCHEDSVC_URL, else {DEFAULT_URL}")
    cmd.add_argument("--api-key", help="default: $SCHEDSVC_API_KEY")
    cmd.add_argument("-o", "--output", choices=("table", "json"), default="table")
    return cmd


def _command_group(sub: Any, name: str, text: str) -> Any:
    """``schedsvc NAME COMMAND``: the group's commands; ``cli.run`` reads the one chosen from ``NAME_command``."""
    group = sub.add_parser(name, help=text)
    return group.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


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
    parser.add_argument(
        "--misfire-grace", type=int, metavar="SECONDS", help="a fire this late still runs as scheduled (default 60)"
    )
    _notify_flags(parser, "notification target of the job (default: the tenant's, see `schedsvc settings`)")


def _notify_flags(parser: argparse.ArgumentParser, title: str) -> None:
    group = parser.add_argument_group(title)
    group.add_argument("--notify-url", metavar="URL", help="POST failures, recoveries and missed fires here")
    group.add_argument("--notify-header", action="append", metavar="NAME=VALUE", help="with --notify-url (repeatable)")


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


def add_commands(sub: Any) -> None:
    """Register ``COMMANDS`` on ``schedsvc``'s subcommands."""
    _jobs_commands(_command_group(sub, "jobs", "create, list, change and run jobs (the REST API)"))
    _runs_commands(_command_group(sub, "runs", "run history of jobs"))
    _settings_commands(_command_group(sub, "settings", "the tenant's settings: default notify target, run retention"))


def _jobs_commands(jobs: Any) -> None:
    ls = _command(jobs, "ls", "list jobs")
    ls.add_argument("--status", choices=("active", "paused", "completed"))
    ls.add_argument("--tag")
    ls.add_argument("--name", help="name prefix")
    ls.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata entry the jobs hold (repeatable)")
    ls.add_argument("--limit", type=int, default=50, help="page size (1-500)")
    ls.add_argument("--cursor", help="continue after a page (its nextCursor)")
    ls.add_argument("--all", action="store_true", help="follow nextCursor to the last page")

    for name, text in (("get", "show a job"), ("run", "run a job now (a manual run)")):
        _command(jobs, name, text).add_argument("job_id")
    for name, text in (("pause", "pause"), ("resume", "resume"), ("rm", "delete")):
        cmd = _command(jobs, name, f"{text} a job, or every job matching --tag/--name-prefix/--status/--meta")
        cmd.add_argument("job_id", nargs="?")
        _version_flag(cmd)
        _selector_flags(cmd)

    create = _command(jobs, "create", "create a job from flags or a JSON/YAML file")
    create.add_argument("-f", "--file", help="the job as JSON or YAML (the POST /jobs body); '-' reads stdin")
    _job_flags(create)
    create.add_argument("--paused", action="store_true", help="create it paused")
    create.add_argument("--idempotency-key", help="make re-running this command safe (default: one per command)")

    edit = _command(jobs, "edit", "change a job: only the fields given change")
    edit.add_argument("job_id")
    edit.add_argument("-f", "--file", help="the changes as JSON or YAML (the PATCH body); '-' reads stdin")
    _job_flags(edit)
    edit.add_argument("--no-notify", action="store_true", help="remove the job's notify (the tenant's applies)")
    _version_flag(edit)

    backfill = _command(jobs, "backfill", "run the job's past fires in a range (recorded as backfill runs)")
    backfill.add_argument("job_id")
    backfill.add_argument("--from", dest="first", required=True, metavar="INSTANT", help="first fire (RFC 3339)")
    backfill.add_argument("--to", dest="last", required=True, metavar="INSTANT", help="last fire, in the past")

    _runs_flags(_command(jobs, "runs", "a job's runs, newest first (as `schedsvc runs ls`)"))

    preview = _command(jobs, "preview", "the next fires of a schedule")
    _schedule_flags(preview)
    preview.add_argument("-f", "--file", help="the schedule as JSON or YAML")
    preview.add_argument("--count", type=int, default=10)
    preview.add_argument("--after", help="fires after this RFC 3339 instant (default: now)")


def _runs_commands(runs: Any) -> None:
    _runs_flags(_command(runs, "ls", "a job's runs, newest first"))

    retry = _command(runs, "retry", "retry failed runs on demand: RUN_ID, or --failed runs matching the flags")
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


def _settings_commands(settings: Any) -> None:
    _command(settings, "show", "the settings that apply to every job of the tenant")
    change = _command(settings, "set", "change the settings given; the others stay")
    _notify_flags(change, "default notification target (jobs without notify of their own)")
    change.add_argument("--no-notify", action="store_true", help="no default notification target")
    change.add_argument("--run-retention-days", type=int, metavar="N", help="days runs are kept after they end")
    change.add_argument("--default-retention", action="store_true", help="the deployment's default retention")


def _runs_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id")
    parser.add_argument("--limit", type=int, default=20, help="page size (1-500)")
    parser.add_argument("--cursor")
    parser.add_argument("--all", action="store_true", help="follow nextCursor to the oldest run")
