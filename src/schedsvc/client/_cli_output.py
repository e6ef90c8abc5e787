"""How the command line shows jobs and runs: aligned tables and key/value listings (``--output table``).
Private to ``schedsvc.client.cli``; ``--output json`` prints the API's own JSON instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from schedsvc.domain.models import (
    CalendarSchedule,
    CronSchedule,
    HttpTarget,
    IntervalSchedule,
    Job,
    NatsTarget,
    NotificationTarget,
    OnceSchedule,
    Run,
    Schedule,
)
from schedsvc.domain.tenants import TenantSettings
from schedsvc.domain.wire import RunRetryReport


def when(instant: datetime | None) -> str:
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
            return f"once at {when(schedule.at)}"
    return schedule.__class__.__name__  # pragma: no cover - the union is exhaustive


def _target(job: Job) -> str:
    match job.target:
        case HttpTarget(method=method, url=url):
            return f"{method} {url}"
        case NatsTarget(subject=subject):
            return f"nats {subject}"
    return "-"  # pragma: no cover - the union is exhaustive


def table(header: Sequence[str], rows: Iterable[Sequence[str]], out: Callable[[str], None]) -> None:
    rows = [list(header), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def job_rows(jobs: Iterable[Job]) -> Iterable[list[str]]:
    for j in jobs:
        last = "-" if j.last_run is None else f"{when(j.last_run)} {j.last_run_status or ''}".strip()
        yield [j.id, j.name, j.status, describe_schedule(j.schedule), when(j.next_run), last]


def run_rows(runs: Iterable[Run]) -> Iterable[list[str]]:
    for r in runs:
        duration = "-" if r.duration_ms is None else f"{r.duration_ms}ms"
        status = "-" if r.http_status is None else str(r.http_status)
        yield [r.id, when(r.scheduled_at), r.trigger, r.status, str(r.attempts), duration, status, r.error or ""]


JOB_COLUMNS = ("ID", "NAME", "STATUS", "SCHEDULE", "NEXT RUN", "LAST RUN")
RUN_COLUMNS = ("RUN", "SCHEDULED", "TRIGGER", "STATUS", "ATTEMPTS", "DURATION", "HTTP", "ERROR")


def show_job(job: Job, out: Callable[[str], None]) -> None:
    lines = [
        ("id", job.id),
        ("name", job.name),
        ("status", job.status),
        ("schedule", describe_schedule(job.schedule)),
        ("target", _target(job)),
        ("next run", when(job.next_run)),
        ("last run", f"{when(job.last_run)} {job.last_run_status or ''}".strip()),
        ("retry", f"{job.retry.max_attempts} attempts"),
        ("catch-up", f"{job.catchup.policy} within {job.catchup.window_seconds}s"),
        ("misfire grace", f"{job.catchup.misfire_grace_seconds}s"),
        ("overlap", job.overlap),
        ("notify", _notify(job.notify, "tenant default")),
        ("tags", ", ".join(job.tags) or "-"),
        ("version", str(job.version)),
    ]
    _listing(lines, out)


def _listing(lines: Sequence[tuple[str, str]], out: Callable[[str], None]) -> None:
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        out(f"{key.ljust(width)}  {value}")


def _notify(target: NotificationTarget | None, otherwise: str) -> str:
    # Header values are often credentials: the table names them only (--output json has them all).
    if target is None:
        return otherwise
    headers = f" (headers: {', '.join(sorted(target.headers))})" if target.headers else ""
    return f"POST {target.url}{headers}"


def show_settings(settings: TenantSettings, out: Callable[[str], None]) -> None:
    chosen = "deployment default" if settings.run_retention_is_default else "chosen"
    lines = [
        ("notify", _notify(settings.notify, "none")),
        ("run retention", f"{settings.run_retention_days} days ({chosen}; at most {settings.max_run_retention_days})"),
    ]
    _listing(lines, out)


def show_retry_report(report: RunRetryReport, out: Callable[[str], None]) -> None:
    rows = [[rid, "queued", ""] for rid in report.retried_runs]
    rows += [[r.run_id, f"refused ({r.reason})", r.detail] for r in report.refusals]
    if rows:
        table(("RUN", "RETRY", "DETAIL"), rows, out)
    out(f"matched {report.matched}, retried {report.retried}, refused {report.refused}")
