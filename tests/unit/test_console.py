"""The console's form decoding (the API's types and field names) and what its pages compute."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from litestar import Litestar, Request, get, post
from litestar.stores.memory import MemoryStore
from litestar.testing import TestClient
from tests.unit.samples import a_job

from schedsvc.console.forms import FormErrors, decode_create, decode_patch, form_values
from schedsvc.console.presenting import next_fires, run_chart, schedule_in_words
from schedsvc.console.session import SESSION_CONFIG, SESSION_STORE, start_session
from schedsvc.domain.models import (
    CalendarSchedule,
    CronSchedule,
    HttpTarget,
    IntervalSchedule,
    NatsTarget,
    RetryPolicy,
    Run,
    RunStatus,
    RunTrigger,
)

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
        ({"target.subject": "a b"}, "target.subject", "matching regex"),
        ({"retry.maxAttempts": "0"}, "retry.maxAttempts", ">= 1"),
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
