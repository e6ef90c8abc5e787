"""The console's form decoding (the API's types and field names) and what its pages compute.

The pages and forms over HTTP, with a real database: tests/integration/test_console.py and tests/browser."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from litestar import Litestar, Request, get, post
from litestar.stores.memory import MemoryStore
from litestar.testing import TestClient
from tests.unit.samples import a_job

from schedsvc.console.forms import FormErrors, bulk_values, decode_bulk, decode_create, decode_patch, form_values
from schedsvc.console.presenting import (
    HIDDEN_VALUE,
    bulk_outcome_in_words,
    definition_json,
    next_fires,
    notification_shown,
    run_chart,
    schedule_in_words,
)
from schedsvc.console.session import SESSION_CONFIG, SESSION_STORE, start_session
from schedsvc.domain.models import (
    CalendarSchedule,
    CronSchedule,
    HttpTarget,
    IntervalSchedule,
    JobStatus,
    NatsTarget,
    NotificationTarget,
    RetryPolicy,
    Run,
    RunStatus,
    RunTrigger,
)
from schedsvc.domain.wire import BulkJobResult, JobSelector

NOW = datetime(2026, 3, 26, tzinfo=UTC)
BASE = {
    "name": "nightly",
    "schedule.kind": "cron",
    "schedule.expression": "0 3 * * *",
    "target.kind": "nats",
    "target.subject": "tenant.dev.x",
}


def errors_of(form: dict[str, str]) -> dict[str, str]:
    with pytest.raises(FormErrors) as raised:
        decode_create(form)
    return raised.value.errors


def test_a_form_decodes_to_the_apis_job_create() -> None:
    job = decode_create({**BASE, "tags": "a, b,", "retry.maxAttempts": "2", "paused": "on"})
    assert job.schedule == CronSchedule(expression="0 3 * * *")
    assert job.target == NatsTarget(subject="tenant.dev.x")
    assert (job.tags, job.retry.max_attempts, job.paused) == (["a", "b"], 2, True)


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"name": ""}, "name", "length >= 1"),
        ({"schedule.expression": ""}, "schedule.expression", "required"),
        ({"schedule.kind": "interval", "schedule.seconds": "0"}, "schedule.seconds", ">= 1"),
        ({"schedule.kind": "interval", "schedule.seconds": "ten"}, "schedule.seconds", "whole number"),
        ({"schedule.kind": "weekly"}, "schedule.kind", "choose one of"),
        ({"target.subject": "a b"}, "target.subject", "must not contain spaces"),
        ({"retry.maxAttempts": "0"}, "retry.maxAttempts", ">= 1"),
        ({"tags": "ok, two words"}, "tags", "only letters, digits"),  # one form field holds the whole list
    ],
)
def test_a_bad_field_is_named_by_its_form_field(change: dict[str, str], field: str, fragment: str) -> None:
    errors = errors_of({**BASE, **change})
    assert list(errors) == [field]
    assert fragment in errors[field]


def test_an_edit_patches_only_what_changed_and_keeps_what_the_form_does_not_show() -> None:
    current = a_job(
        schedule=IntervalSchedule(seconds=60, anchor=NOW, jitter_seconds=5),
        target=HttpTarget(url="https://hooks.example.com/x", headers={"X-Team": "ops"}),
        retry=RetryPolicy(max_attempts=3),
        tags=["a"],
        next_run=NOW,
    )
    unchanged = decode_patch(form_values(current), current)
    assert unchanged == type(unchanged)()  # nothing: an unchanged schedule keeps its next fire

    patch = decode_patch(
        {**form_values(current), "schedule.seconds": "120", "target.url": "https://h.example.com/y"}, current
    )
    assert patch.schedule == IntervalSchedule(seconds=120, anchor=NOW, jitter_seconds=5)  # anchor, jitter kept
    assert patch.target == HttpTarget(url="https://h.example.com/y", headers={"X-Team": "ops"})  # headers kept
    assert isinstance(patch.name, type(patch.tags))  # both unset


def test_the_notify_url_is_set_changed_with_its_headers_kept_and_cleared() -> None:
    plain = a_job(next_run=NOW)
    assert decode_create({**BASE, "notify.url": "https://n.example.com/a"}).notify == NotificationTarget(
        url="https://n.example.com/a"
    )
    assert decode_create(BASE).notify is None

    patch = decode_patch({**form_values(plain), "notify.url": "https://n.example.com/a"}, plain)
    assert patch.notify == NotificationTarget(url="https://n.example.com/a")

    notified = a_job(next_run=NOW, notify=NotificationTarget(url="https://n.example.com/a", headers={"X-K": "v"}))
    assert form_values(notified)["notify.url"] == "https://n.example.com/a"
    changed = decode_patch({**form_values(notified), "notify.url": "https://n.example.com/b"}, notified)
    assert changed.notify == NotificationTarget(url="https://n.example.com/b", headers={"X-K": "v"})
    assert decode_patch({**form_values(notified), "notify.url": " "}, notified).notify is None  # tenant default


def test_a_malformed_notify_url_is_named_by_its_field() -> None:
    errors = errors_of({**BASE, "notify.url": "ftp://n.example.com"})
    assert list(errors) == ["notify.url"] and "http:// or https:// URL" in errors["notify.url"]


def test_where_notifications_go_and_the_json_view_show_header_names_never_values() -> None:
    own = NotificationTarget(url="https://own.example.com", headers={"X-B": "secret-b", "X-A": "secret-a"})
    tenant = NotificationTarget(url="https://tenant.example.com", headers={"X-T": "secret-t"})
    assert notification_shown(own, tenant).source == "job"
    assert notification_shown(own, tenant).header_names == ["X-A", "X-B"]
    assert (notification_shown(None, tenant).source, notification_shown(None, tenant).url) == (
        "tenant",
        "https://tenant.example.com",
    )
    assert notification_shown(None, None).source == "none"

    job = a_job(next_run=NOW, notify=own, target=HttpTarget(url="https://h.example.com", headers={"X-T": "tok"}))
    shown = definition_json(job)
    assert "secret" not in shown and "tok" not in shown
    assert shown.count(HIDDEN_VALUE) == 3 and '"X-A"' in shown


@pytest.mark.parametrize(
    ("form", "field", "fragment"),
    [
        ({}, "selector", "name at least one of"),
        ({"selector.tag": "a b"}, "selector.tag", "only letters, digits"),
        ({"selector.status": "gone"}, "selector.status", "Invalid enum value"),
        ({"selector.tag": "a", "limit": "1001"}, "limit", "<= 1000"),
        ({"selector.tag": "a", "limit": "x"}, "limit", "whole number"),
    ],
)
def test_the_bulk_form_is_checked_as_the_apis_body(form: dict[str, str], field: str, fragment: str) -> None:
    with pytest.raises(FormErrors) as raised:
        decode_bulk(form)
    assert list(raised.value.errors) == [field]
    assert fragment in raised.value.errors[field]


def test_the_bulk_form_decodes_to_the_apis_bulk_action() -> None:
    form = {"selector.tag": " t ", "selector.namePrefix": "", "selector.status": "paused", "limit": "5"}
    action = decode_bulk(form)
    assert (action.selector, action.limit) == (JobSelector(tag="t", status=JobStatus.PAUSED), 5)
    assert decode_bulk(bulk_values(action)) == action
    assert decode_bulk({"selector.namePrefix": "n"}).limit == 1000


@pytest.mark.parametrize(
    ("action", "result", "words"),
    [
        ("pause", BulkJobResult(0, 0, more=False), "No job matches these conditions; none was paused."),
        ("pause", BulkJobResult(1, 1, more=False), "1 job matched; 1 was paused."),
        ("pause", BulkJobResult(5, 3, more=False), "5 jobs matched; 3 were paused. The others were not active."),
        ("resume", BulkJobResult(2, 0, more=False), "2 jobs matched; none was resumed: they were not paused."),
        (
            "delete",
            BulkJobResult(10_000, 1000, more=True),
            "At least 10,000 jobs matched; 1,000 were deleted. More remain: repeat the action.",
        ),
    ],
)
def test_a_bulk_outcome_in_words(action: str, result: BulkJobResult, words: str) -> None:
    assert bulk_outcome_in_words(action, result) == words


def test_fires_after_a_daylight_saving_change_are_marked() -> None:
    fires = next_fires(CronSchedule(expression="30 2 * * *", timezone="Europe/Berlin"), NOW, 5)
    marks = [(f.at.day, f.offset_change) for f in fires if f.offset_change]
    assert marks == [(29, "UTC offset +01:00 → +02:00")]  # 29 March 2026: 02:30 does not exist, 03:00 fires


def test_schedules_in_words() -> None:
    assert schedule_in_words(CronSchedule(expression="0 9 * * MON-FRI", timezone="Europe/Berlin")) == (
        "At 09:00 AM, Monday through Friday (Europe/Berlin)"
    )
    assert schedule_in_words(IntervalSchedule(seconds=300)) == "Every 5 minutes"
    assert schedule_in_words(CalendarSchedule(unit="weeks", every=2, time="08:00")) == "Every 2 weeks at 08:00 (UTC)"


def test_the_chart_has_a_bar_per_run_oldest_first_with_lateness_as_height() -> None:
    def run(minute: int, late_s: float | None, status: RunStatus) -> Run:
        scheduled = datetime(2026, 3, 26, 9, minute, tzinfo=UTC)
        started = None if late_s is None else scheduled.replace(second=int(late_s))
        return Run(
            id=f"j1:{minute}",
            job_id="j1",
            scheduled_at=scheduled,
            trigger=RunTrigger.SCHEDULED,
            status=status,
            started_at=started,
        )

    chart = run_chart([run(2, 10, RunStatus.FAILED), run(1, 5, RunStatus.SUCCEEDED), run(3, None, RunStatus.MISSED)])
    assert chart is not None
    assert [b.status for b in chart.bars] == ["succeeded", "failed", "missed"]
    tallest = chart.height - 4
    assert [round(b.height) for b in chart.bars] == [round(tallest / 2), tallest, 4]
    assert run_chart([]) is None


def session_app() -> Litestar:
    @post("/console/sign-in")
    async def sign_in(request: Request[Any, Any, Any]) -> str:
        start_session(request, "acme", "0123456789abcdef")
        return "ok"

    @get("/console/who")
    async def who(request: Request[Any, Any, Any]) -> str:
        return str(request.session.get("tenant"))

    return Litestar(
        route_handlers=[sign_in, who],
        middleware=[SESSION_CONFIG.middleware],
        stores={SESSION_STORE: MemoryStore()},
    )


@pytest.mark.parametrize(("base_url", "secure"), [("https://console.test", True), ("http://console.test", False)])
def test_sign_in_sets_a_fresh_strict_http_only_session_cookie_secure_over_https(base_url: str, secure: bool) -> None:
    with TestClient(session_app(), base_url=base_url) as client:
        client.cookies.set("schedsvc_console", "planted-by-someone-else")
        response = client.post("/console/sign-in")
        cookie = response.headers["set-cookie"]
        session_id = cookie.split(";", 1)[0].split("=", 1)[1]
        assert session_id != "planted-by-someone-else" and len(session_id) == 64
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/console"} <= attributes
        assert ("secure" in attributes) is secure
        client.cookies.clear()
        client.cookies.set("schedsvc_console", session_id)
        assert client.get("/console/who").text == "acme"
