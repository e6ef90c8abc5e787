"""Notification events, tenant settings and the receiver's check of a notification: pure, no I/O."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import msgspec
import pytest

from schedsvc.client import InvalidDeliveryError, verify_notification
from schedsvc.domain.models import NotificationTarget
from schedsvc.domain.notifications import ERROR_CHARS, Notification, fires_missed, job_recovered, run_failed
from schedsvc.domain.signing import signature_headers
from schedsvc.domain.tenants import TenantPreferences, effective_settings
from schedsvc.domain.timing import MissedFire

NOW = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)


def test_a_failure_is_one_event_per_final_outcome() -> None:
    first = run_failed("acme", "j1", 1000, attempts=3, error="HTTP 500", http_status=500, now=NOW)
    again = run_failed("acme", "j1", 1000, attempts=3, error="HTTP 500", http_status=500, now=NOW)
    after_retry = run_failed("acme", "j1", 1000, attempts=4, error="x" * 5000, http_status=None, now=NOW)
    assert first.notification.id == again.notification.id == "j1:1000:failed:3"  # a repeat is a duplicate
    assert after_retry.notification.id != first.notification.id  # failed again after a retry on demand
    assert len(after_retry.notification.error or "") == ERROR_CHARS
    body = msgspec.json.decode(msgspec.json.encode(first.notification))
    assert body == {
        "id": "j1:1000:failed:3",
        "type": "run.failed",
        "jobId": "j1",
        "occurredAt": "2026-11-29T06:00:00Z",
        "runId": "j1:1000",
        "scheduledAt": "1970-01-01T00:00:01Z",
        "attempts": 3,
        "httpStatus": 500,
        "error": "HTTP 500",
    }
    assert job_recovered("acme", "j1", 2000, NOW).notification.id == "j1:2000:recovered"


def test_missed_fires_are_one_event_per_job_with_their_count() -> None:
    fires = [MissedFire("a", "t1", 3000), MissedFire("b", "t2", 5000), MissedFire("a", "t1", 1000)]
    messages = {m.notification.job_id: m for m in fires_missed(fires, NOW)}
    assert set(messages) == {"a", "b"}
    a = messages["a"]
    assert a.tenant == "t1" and a.notification.missed_count == 2
    assert a.notification.first_missed_at == datetime.fromtimestamp(1, UTC)
    assert a.notification.last_missed_at == datetime.fromtimestamp(3, UTC)
    assert messages["b"].tenant == "t2" and messages["b"].notification.missed_count == 1
    assert fires_missed([], NOW) == []


def test_effective_settings_keep_the_tenants_choice_within_the_maximum() -> None:
    target = NotificationTarget(url="https://hooks.example.com/n")
    chosen = effective_settings(TenantPreferences(notify=target, run_retention_days=7), 30, 90)
    assert (chosen.notify, chosen.run_retention_days, chosen.run_retention_is_default) == (target, 7, False)
    default = effective_settings(TenantPreferences(), 30, 90)
    assert (default.run_retention_days, default.run_retention_is_default) == (30, True)
    # The operator lowered the maximum below what the tenant chose: the maximum applies.
    assert effective_settings(TenantPreferences(run_retention_days=80), 30, 60).run_retention_days == 60


def test_a_receiver_verifies_a_notification_and_learns_the_event() -> None:
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    event = run_failed("acme", "j1", 1000, attempts=1, error="boom", http_status=None, now=NOW).notification
    body = msgspec.json.encode(event)
    headers = signature_headers([key], event.id, int(time.time()), body)
    assert verify_notification(headers, body, [secret]) == msgspec.json.decode(body, type=Notification)
    with pytest.raises(InvalidDeliveryError):
        verify_notification(headers, body + b" ", [secret])
    forged_id = {**headers, **signature_headers([key], "other-id", int(time.time()), body)}
    with pytest.raises(InvalidDeliveryError, match="webhook-id"):
        verify_notification(forged_id, body, [secret])
