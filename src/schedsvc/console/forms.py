"""The job form: its fields are named by the API's JSON paths (``schedule.expression``, ``target.url``...),
so the domain's msgspec types decode it with exactly the API's rules and their errors land beside the field.

A form shows only the common fields; on edit, fields it does not show (headers, body, jitter, backoff...)
are kept from the job, and only what changed goes into the ``JobPatch``. The notification target is its URL
alone: an empty ``notify.url`` means none of the job's own (the tenant's default applies), and the target's
headers, which the console never shows, are kept while a URL stays set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec

from schedsvc.domain.models import Job, JobCreate, JobPatch
from schedsvc.domain.wire import BulkJobAction, field_from_message

SCHEDULE_KINDS = ("cron", "interval", "calendar", "once")
TARGET_KINDS = ("http", "nats")
HTTP_METHODS = ("POST", "GET", "PUT", "PATCH", "DELETE")
BULK_ACTIONS = ("pause", "resume", "delete")
BULK_SELECTOR_FIELDS = ("selector.tag", "selector.namePrefix", "selector.status")
"""The bulk form's conditions, named by the JSON paths of ``POST /jobs/bulk/*``'s body (``limit`` beside them)."""
_SCHEDULE_FIELDS = {
    "cron": ("expression", "timezone"),
    "interval": ("seconds",),
    "calendar": ("unit", "every", "time", "timezone"),
    "once": ("at",),
}
_TARGET_FIELDS = {"http": ("url", "method"), "nats": ("subject",)}
_INTEGERS = {"schedule.seconds", "schedule.every", "retry.maxAttempts"}
_MISSING = re.compile(r"missing required field `([^`]+)`")
_ITEM = re.compile(r"(\.\d+)+$")


class FormErrors(Exception):
    """Field path -> message, for the fields the form shows (others go under ``""``)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def field_errors(exc: msgspec.ValidationError) -> FormErrors:
    """The field msgspec names (its JSON path is the form field's name) and what is wrong, as the API says it;
    a field left empty is just "required"."""
    error = field_from_message(str(exc), None, "")
    field = _ITEM.sub("", error.field)  # `tags.1`: the form has one field for the whole list
    return FormErrors({field: "required" if _MISSING.search(error.message) else error.message})


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def _section(
    form: Mapping[str, Any], prefix: str, kind: str, names: tuple[str, ...], base: dict[str, Any]
) -> dict[str, Any]:
    section = dict(base) if base.get("kind") == kind else {}
    section["kind"] = kind
    errors: dict[str, str] = {}
    for name in names:
        path = f"{prefix}.{name}"
        raw = _text(form, path)
        if raw == "":
            section.pop(name, None)  # the domain's default, or its "missing required field" error
        elif path in _INTEGERS:
            try:
                section[name] = int(raw)
            except ValueError:
                errors[path] = "must be a whole number"
        else:
            section[name] = raw
    if errors:
        raise FormErrors(errors)
    return section


def job_fields(form: Mapping[str, Any], current: Job | None = None) -> dict[str, Any]:
    """The job as the API's JSON would spell it, from the form (and the current job's hidden fields)."""
    base: dict[str, Any] = msgspec.to_builtins(current) if current is not None else {}
    schedule_kind = _text(form, "schedule.kind")
    target_kind = _text(form, "target.kind")
    errors: dict[str, str] = {}
    if schedule_kind not in SCHEDULE_KINDS:
        errors["schedule.kind"] = f"choose one of {', '.join(SCHEDULE_KINDS)}"
    if target_kind not in TARGET_KINDS:
        errors["target.kind"] = f"choose one of {', '.join(TARGET_KINDS)}"
    if errors:
        raise FormErrors(errors)
    body: dict[str, Any] = {
        "name": _text(form, "name"),
        "description": _text(form, "description") or None,
        "schedule": _section(
            form, "schedule", schedule_kind, _SCHEDULE_FIELDS[schedule_kind], base.get("schedule", {})
        ),
        "target": _section(form, "target", target_kind, _TARGET_FIELDS[target_kind], base.get("target", {})),
        "tags": [t.strip() for t in _text(form, "tags").split(",") if t.strip()],
        "overlap": _text(form, "overlap") or base.get("overlap", "allow"),
    }
    retry = _section(form, "retry", "", ("maxAttempts",), {**base.get("retry", {}), "kind": ""})
    retry.pop("kind")
    body["retry"] = retry
    body["notify"] = _notify(form, base.get("notify"))
    return body


def _notify(form: Mapping[str, Any], current: dict[str, Any] | None) -> dict[str, Any] | None:
    """The job's own notification target: the URL typed (null: none). The current target's headers (set
    through the API; the console never shows their values) stay only while the URL keeps its origin: they
    may carry credentials meant for that host alone."""
    url = _text(form, "notify.url")
    if not url:
        return None
    if current is None or _origin(current.get("url", "")) != _origin(url):
        return {"url": url}
    return {**current, "url": url}


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port: what a credential header is meant for (an unreadable URL has no origin)."""
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", url, None


def decode_create(form: Mapping[str, Any]) -> JobCreate:
    body = job_fields(form)
    body["paused"] = form.get("paused") == "on"
    try:
        return msgspec.convert(body, JobCreate)
    except msgspec.ValidationError as exc:
        raise field_errors(exc) from None


def decode_patch(form: Mapping[str, Any], job: Job) -> JobPatch:
    """Only the fields the user changed, so an unchanged schedule keeps its next fire."""
    body = job_fields(form, job)
    current = msgspec.to_builtins(job)
    changed = {name: value for name, value in body.items() if value != current.get(name)}
    try:
        return msgspec.convert(changed, JobPatch)
    except msgspec.ValidationError as exc:
        raise field_errors(exc) from None


def form_values(job: Job | None) -> dict[str, str]:
    """The form's initial values (field path -> text), from a job or the defaults of a new one."""
    if job is None:
        return {
            "schedule.kind": "cron",
            "schedule.timezone": "UTC",
            "target.kind": "http",
            "target.method": "POST",
            "retry.maxAttempts": "3",
            "overlap": "allow",
        }
    data = msgspec.to_builtins(job)
    values = {
        "name": job.name,
        "description": job.description or "",
        "tags": ", ".join(job.tags),
        "overlap": job.overlap,
        "retry.maxAttempts": str(job.retry.max_attempts),
        "notify.url": job.notify.url if job.notify is not None else "",
    }
    for section in ("schedule", "target"):
        for name, value in data[section].items():
            if isinstance(value, str | int) and not isinstance(value, bool):
                values[f"{section}.{name}"] = str(value)
    return values


def decode_bulk(form: Mapping[str, Any]) -> BulkJobAction:
    """The body of ``POST /jobs/bulk/*`` from the bulk form, decoded and checked as the API does: an empty
    condition is left out, and no condition at all is the API's error naming ``selector``."""
    selector = {path.split(".", 1)[1]: _text(form, path) for path in BULK_SELECTOR_FIELDS}
    body: dict[str, Any] = {"selector": {name: value for name, value in selector.items() if value}}
    limit = _text(form, "limit")
    if limit:
        try:
            body["limit"] = int(limit)
        except ValueError:
            raise FormErrors({"limit": "must be a whole number"}) from None
    try:
        return msgspec.convert(body, BulkJobAction)
    except msgspec.ValidationError as exc:
        raise field_errors(exc) from None


def bulk_values(action: BulkJobAction) -> dict[str, str]:
    """The bulk form's fields for an action (to ask for confirmation, or to list what it matches)."""
    selector = action.selector
    return {
        "selector.tag": selector.tag or "",
        "selector.namePrefix": selector.name_prefix or "",
        "selector.status": selector.status.value if selector.status is not None else "",
        "limit": str(action.limit),
    }
