"""Request bodies from the command line's flags and files, checked with the API's own types before anything
is sent, so a mistake is named (field and reason) without a round trip. Private to ``schedsvc.client.cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from schedsvc.domain.models import JobCreate, JobPatch, Schedule
from schedsvc.domain.tenants import TenantSettingsPatch
from schedsvc.domain.wire import field_from_message


class UsageError(Exception):
    """Input the command line refuses before calling the service (exit 2)."""


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


def pairs(values: Sequence[str] | None, flag: str) -> dict[str, str]:
    pairs = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag}: expected NAME=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def schedule_from_flags(args: argparse.Namespace) -> dict[str, Any] | None:
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
            target["headers"] = pairs(args.header, "--header")
        if args.body is not None:
            target["body"] = _json_or_text(args.body)
        return target
    if args.subject is not None:
        target = {"kind": "nats", "subject": args.subject}
        if args.header:
            target["headers"] = pairs(args.header, "--header")
        if args.payload is not None:
            target["payload"] = _json_or_text(args.payload)
        return target
    for flag in ("method", "header", "body", "payload"):
        if getattr(args, flag) is not None:
            raise UsageError(f"target: --{flag} needs --webhook or --subject")
    return None


def fields_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if args.name is not None:
        fields["name"] = args.name
    if (schedule := schedule_from_flags(args)) is not None:
        fields["schedule"] = schedule
    if (target := _target_from_flags(args)) is not None:
        fields["target"] = target
    if args.tag is not None:
        fields["tags"] = args.tag
    if args.meta is not None:
        fields["metadata"] = pairs(args.meta, "--meta")
    if args.overlap is not None:
        fields["overlap"] = args.overlap
    if args.max_attempts is not None:
        fields["retry"] = {"maxAttempts": args.max_attempts}
    catchup = {"policy": args.catchup, "misfireGraceSeconds": args.misfire_grace}
    if catchup := {k: v for k, v in catchup.items() if v is not None}:
        fields["catchup"] = catchup
    return fields | notify_from_flags(args)


def notify_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """``{"notify": ...}`` from ``--notify-url``/``--notify-header``/``--no-notify`` (null: remove it), or
    ``{}`` when none is given. The target is replaced whole, so a header goes with its URL."""
    if getattr(args, "no_notify", False):
        if args.notify_url is not None or args.notify_header is not None:
            raise UsageError("notify: --no-notify removes the target; leave out --notify-url/--notify-header")
        return {"notify": None}
    if args.notify_url is None:
        if args.notify_header is not None:
            raise UsageError("notify.headers: --notify-header needs --notify-url (the target is replaced whole)")
        return {}
    return {"notify": {"url": args.notify_url, "headers": pairs(args.notify_header, "--notify-header")}}


def _convert(data: Any, kind: type[Any], what: str) -> Any:
    """Validate locally with the API's own types, so a mistake is named before anything is sent."""
    if not isinstance(data, dict):
        raise UsageError(f"{what}: expected a JSON object")
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        error = field_from_message(str(exc), None, what)  # named and worded as the API would answer
        raise UsageError(f"{error.field}: {error.message}") from None


def job_create(args: argparse.Namespace) -> JobCreate:
    data = _load(args.file) if args.file else {}
    if not isinstance(data, dict):
        raise UsageError(f"{args.file}: expected a JSON object (the POST /jobs body)")
    data = {**data, **fields_from_flags(args)}
    if args.paused:
        data["paused"] = True
    for required in ("name", "schedule", "target"):
        if required not in data:
            hint = {"name": "--name", "schedule": "--cron/--every/--at", "target": "--webhook/--subject"}[required]
            raise UsageError(f"{required}: required ({hint}, or --file)")
    job: JobCreate = _convert(data, JobCreate, "job")
    return job


def job_patch(args: argparse.Namespace) -> JobPatch:
    data = _load(args.file) if args.file else {}
    if not isinstance(data, dict):
        raise UsageError(f"{args.file}: expected a JSON object (the PATCH /jobs/ID body)")
    data = {**data, **fields_from_flags(args)}
    if not data:
        raise UsageError("edit: nothing to change (give flags such as --cron or --tag, or --file)")
    patch: JobPatch = _convert(data, JobPatch, "changes")
    return patch


def settings_patch(args: argparse.Namespace) -> TenantSettingsPatch:
    """``settings set``: the tenant's default notification target and run retention; null resets a field."""
    data = notify_from_flags(args)
    if args.run_retention_days is not None and args.default_retention:
        raise UsageError("runRetentionDays: give --run-retention-days or --default-retention, not both")
    if args.run_retention_days is not None or args.default_retention:
        data["runRetentionDays"] = args.run_retention_days
    if not data:
        raise UsageError("settings set: nothing to change (give --notify-url, --no-notify, --run-retention-days, ...)")
    patch: TenantSettingsPatch = _convert(data, TenantSettingsPatch, "settings")
    return patch


def preview_schedule(args: argparse.Namespace) -> Schedule:
    data = _load(args.file) if args.file else schedule_from_flags(args)
    if data is None:
        raise UsageError("schedule: required (--cron/--every/--at/--schedule, or --file)")
    wrapped = _convert({"schedule": data}, _ScheduleOnly, "schedule")
    schedule: Schedule = wrapped.schedule
    return schedule


class _ScheduleOnly(msgspec.Struct):
    schedule: Schedule


def instant(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag}: not an RFC 3339 instant: {value!r}") from None
    if instant.tzinfo is None:
        raise UsageError(f"{flag}: give a UTC offset (e.g. 2026-12-01T09:00:00+01:00 or ...Z)")
    return instant
