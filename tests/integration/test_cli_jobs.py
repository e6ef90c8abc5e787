"""``schedsvc jobs``/``schedsvc runs`` as a user runs them: separate processes against the real service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_client import Service, service  # noqa: F401 - the running service, shared
from tests.support import servers

from schedsvc.client.cli import EXIT_AUTH, EXIT_CONFLICT, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_USAGE


def schedsvc(svc: Service | None, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDSVC_")}
    if svc is not None:
        environ |= {"SCHEDSVC_URL": svc.url, "SCHEDSVC_API_KEY": svc.key}
    environ |= env or {}
    return subprocess.run(
        [sys.executable, "-m", "schedsvc.cli", *args], env=environ, capture_output=True, text=True, timeout=60
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_a_job_through_its_whole_life(service: Service, unique: str) -> None:  # noqa: F811
    name = f"{unique}-cli"
    created = ok(
        schedsvc(
            service,
            "jobs",
            "create",
            "--name",
            name,
            "--cron",
            "0 2 * * *",
            "--timezone",
            "Europe/Berlin",
            "--subject",
            "tenant.dev.cli-tests",
            "--payload",
            '{"full": true}',
            "--tag",
            "cli",
        )
    )
    assert name in created and "cron 0 2 * * * Europe/Berlin" in created
    job_id = created.split()[1]  # "id  <id>" is the first line
    job = as_json(schedsvc(service, "jobs", "get", job_id, "-o", "json"))
    assert (job["id"], job["version"], job["target"]["payload"]) == (job_id, 1, {"full": True})

    listing = ok(schedsvc(service, "jobs", "ls", "--name", name))
    assert listing.splitlines()[0].split()[:3] == ["ID", "NAME", "STATUS"]
    assert job_id in listing and "active" in listing
    page = as_json(schedsvc(service, "jobs", "ls", "--tag", "cli", "--all", "--limit", "1", "-o", "json"))
    assert job_id in [j["id"] for j in page["items"]] and page["nextCursor"] is None

    edited = as_json(schedsvc(service, "jobs", "edit", job_id, "--tag", "edited", "--if-version", "1", "-o", "json"))
    assert (edited["tags"], edited["version"]) == (["edited"], 2)
    stale = schedsvc(service, "jobs", "edit", job_id, "--tag", "lost", "--if-version", "1")
    assert "412" in one_line_error(stale, EXIT_CONFLICT)

    assert "paused" in ok(schedsvc(service, "jobs", "pause", job_id))
    assert "active" in ok(schedsvc(service, "jobs", "resume", job_id, "--if-version", "3"))

    queued = as_json(schedsvc(service, "jobs", "run", job_id, "-o", "json"))
    assert queued["trigger"] == "manual"
    deadline = time.monotonic() + 30
    while True:
        runs = as_json(schedsvc(service, "runs", "ls", job_id, "-o", "json"))["items"]
        if runs and runs[0]["status"] == "succeeded":
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.5)
    assert runs[0]["id"] == queued["runId"]
    table = ok(schedsvc(service, "jobs", "runs", job_id))
    assert table.splitlines()[0].split()[:4] == ["RUN", "SCHEDULED", "TRIGGER", "STATUS"]
    assert queued["runId"] in table and "succeeded" in table

    assert f"deleted {job_id}" in ok(schedsvc(service, "jobs", "rm", job_id))
    assert "404" in one_line_error(schedsvc(service, "jobs", "get", job_id), EXIT_NOT_FOUND)


def test_create_from_json_and_yaml_files_and_flags_override(service: Service, unique: str, tmp_path: Path) -> None:  # noqa: F811
    body = {
        "name": f"{unique}-file",
        "schedule": {"kind": "interval", "seconds": 600},
        "target": {"kind": "nats", "subject": "tenant.dev.cli-tests"},
        "tags": ["from-file"],
        "retry": {"maxAttempts": 2, "maxBackoffSeconds": 10},
    }
    (tmp_path / "job.json").write_text(json.dumps(body))
    from_json = as_json(schedsvc(service, "jobs", "create", "-f", str(tmp_path / "job.json"), "-o", "json"))
    assert (from_json["schedule"]["seconds"], from_json["tags"]) == (600, ["from-file"])
    # One setting of a policy changes; the rest of it stays as it was.
    edited = as_json(schedsvc(service, "jobs", "edit", from_json["id"], "--max-attempts", "5", "-o", "json"))
    assert (edited["retry"]["maxAttempts"], edited["retry"]["maxBackoffSeconds"]) == (5, 10)

    (tmp_path / "job.yaml").write_text(
        f"name: {unique}-yaml\nschedule:\n  kind: cron\n  expression: '*/15 * * * *'\n"
        "target:\n  kind: nats\n  subject: tenant.dev.cli-tests\n"
    )
    from_yaml = as_json(schedsvc(service, "jobs", "create", "-f", str(tmp_path / "job.yaml"), "--paused", "-o", "json"))
    assert (from_yaml["schedule"]["expression"], from_yaml["status"]) == ("*/15 * * * *", "paused")


def test_preview_prints_fires(service: Service) -> None:  # noqa: F811
    fires = ok(schedsvc(service, "jobs", "preview", "--cron", "0 9 * * *", "--timezone", "Asia/Tokyo", "--count", "3"))
    assert [line.endswith("T09:00:00+09:00") for line in fires.splitlines()] == [True] * 3
    as_data = as_json(
        schedsvc(None, "jobs", "preview", "--every", "60", "--count", "2", "--url", service.url, "-o", "json")
    )
    assert len(as_data["fires"]) == 2


def test_errors_are_one_line_naming_the_field_with_documented_exit_codes(service: Service, unique: str) -> None:  # noqa: F811
    base = ["jobs", "create", "--name", f"{unique}-bad", "--subject", "tenant.dev.x"]
    local = one_line_error(schedsvc(service, *base, "--every", "0"), EXIT_USAGE)
    assert "schedule.seconds" in local
    missing = one_line_error(
        schedsvc(service, "jobs", "create", "--every", "60", "--subject", "tenant.dev.x"), EXIT_USAGE
    )
    assert "name" in missing
    refused = schedsvc(
        service, "jobs", "create", "--name", f"{unique}-ssrf", "--every", "60", "--webhook", "http://10.1.2.3/"
    )
    assert "target.url" in one_line_error(refused, EXIT_INVALID)
    cron = one_line_error(schedsvc(service, *base, "--cron", "not a cron"), EXIT_INVALID)
    assert "schedule" in cron

    wrong_key = schedsvc(service, "jobs", "ls", env={"SCHEDSVC_API_KEY": "sk_0000000000000000_" + "x" * 43})
    one_line_error(wrong_key, EXIT_AUTH)
    nobody = f"http://127.0.0.1:{servers.free_port()}"  # a loopback port nothing listens on
    one_line_error(schedsvc(service, "jobs", "ls", "--url", nobody), EXIT_UNAVAILABLE)
    assert "PyYAML" not in schedsvc(service, "jobs", "ls", "-o", "json").stderr


@pytest.mark.parametrize("args", [["jobs"], ["jobs", "get"], ["runs", "ls"], ["jobs", "ls", "--output", "xml"]])
def test_usage_mistakes_exit_2(args: list[str]) -> None:
    assert schedsvc(None, *args).returncode == EXIT_USAGE


def test_failed_runs_are_retried_one_by_one_or_by_filter(service: Service, unique: str) -> None:  # noqa: F811
    nobody = f"http://127.0.0.1:{servers.free_port()}/hook"  # refused: every attempt fails
    created = schedsvc(
        service, "jobs", "create", "--name", f"{unique}-dead", "--every", "3600", "--webhook", nobody,
        "--max-attempts", "1", "-o", "json",
    )  # fmt: skip
    job_id = as_json(created)["id"]

    def failed_after(attempts: int) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while True:
            [run] = as_json(schedsvc(service, "runs", "ls", job_id, "-o", "json"))["items"]
            if run["status"] == "failed" and run["attempts"] == attempts:
                return run
            assert time.monotonic() < deadline, run
            time.sleep(0.3)

    run_id = as_json(schedsvc(service, "jobs", "run", job_id, "-o", "json"))["runId"]
    failed_after(1)
    report = as_json(schedsvc(service, "runs", "retry", "--failed", "--job", job_id, "-o", "json"))
    assert report == {
        "matched": 1, "retried": 1, "refused": 0, "retriedRuns": [run_id], "refusals": [], "nextCursor": None
    }  # fmt: skip
    failed_after(2)
    assert f"queued a retry of run {run_id}" in ok(schedsvc(service, "runs", "retry", run_id))
    failed_after(3)
    table = ok(schedsvc(service, "runs", "retry", "--failed", "--job", job_id, "--all", "--limit", "1"))
    assert table.splitlines()[0].split() == ["RUN", "RETRY", "DETAIL"] and f"{run_id}  queued" in table
    assert table.splitlines()[-1] == "matched 1, retried 1, refused 0"
    for attempts in (4, 5):
        failed_after(attempts)
        ok(schedsvc(service, "runs", "retry", run_id))
    failed_after(6)  # five retries on demand: the most a run gets
    table = ok(schedsvc(service, "runs", "retry", "--failed", "--job", job_id))
    assert f"{run_id}  refused (exhausted)  the run was already retried 5 times" in table
    assert table.splitlines()[-1] == "matched 1, retried 0, refused 1"
    assert "already retried" in one_line_error(schedsvc(service, "runs", "retry", run_id), EXIT_CONFLICT)
    nothing = schedsvc(service, "runs", "retry", "--failed", "--job", job_id, "--trigger", "scheduled", "-o", "json")
    assert as_json(nothing)["matched"] == 0

    one_line_error(schedsvc(service, "runs", "retry"), EXIT_USAGE)
    one_line_error(schedsvc(service, "runs", "retry", run_id, "--job", job_id), EXIT_USAGE)
    one_line_error(schedsvc(service, "runs", "retry", "--failed", "--from", "yesterday"), EXIT_USAGE)
    assert "limit" in one_line_error(schedsvc(service, "runs", "retry", "--failed", "--limit", "0"), EXIT_INVALID)
    one_line_error(schedsvc(service, "runs", "retry", f"{job_id}:1"), EXIT_NOT_FOUND)


def test_jobs_take_notify_misfire_grace_and_overlap_flags(service: Service, unique: str) -> None:  # noqa: F811
    hook = f"http://127.0.0.1:{servers.free_port()}/notify"
    flags = "--every 3600 --subject tenant.dev.cli-tests --misfire-grace 5 --catchup skip --overlap bufferOne"
    notify = ["--notify-url", hook, "--notify-header", "X-Token=s3cret"]
    created = as_json(
        schedsvc(service, "jobs", "create", "--name", f"{unique}-notify", *flags.split(), *notify, "-o", "json")
    )
    assert created["notify"] == {"url": hook, "headers": {"X-Token": "s3cret"}}
    assert (created["catchup"]["policy"], created["catchup"]["misfireGraceSeconds"]) == ("skip", 5)
    assert created["overlap"] == "bufferOne"
    shown = ok(schedsvc(service, "jobs", "get", created["id"]))
    assert f"POST {hook} (headers: X-Token)" in shown and "s3cret" not in shown  # header values may be secrets
    assert "misfire grace  5s" in shown and "bufferOne" in shown

    # The grace changes alone: the rest of the catch-up policy stays as it was.
    edited = as_json(schedsvc(service, "jobs", "edit", created["id"], "--misfire-grace", "30", "-o", "json"))
    assert edited["catchup"] == {**created["catchup"], "misfireGraceSeconds": 30}
    edited = as_json(schedsvc(service, "jobs", "edit", created["id"], "--notify-url", hook + "2", "-o", "json"))
    assert edited["notify"] == {"url": hook + "2", "headers": {}}
    edited = as_json(schedsvc(service, "jobs", "edit", created["id"], "--no-notify", "-o", "json"))
    assert edited["notify"] is None
    assert "tenant default" in ok(schedsvc(service, "jobs", "get", created["id"]))

    one_line_error(schedsvc(service, "jobs", "edit", created["id"], "--notify-header", "A=b"), EXIT_USAGE)
    one_line_error(schedsvc(service, "jobs", "edit", created["id"], "--no-notify", "--notify-url", hook), EXIT_USAGE)
    assert "misfireGraceSeconds" in one_line_error(
        schedsvc(service, "jobs", "edit", created["id"], "--misfire-grace", "0"), EXIT_USAGE
    )
    refused = schedsvc(service, "jobs", "edit", created["id"], "--notify-url", "http://10.1.2.3/")
    assert "notify.url" in one_line_error(refused, EXIT_INVALID)


def test_tenant_settings_are_shown_and_changed(service: Service) -> None:  # noqa: F811
    hook = f"http://127.0.0.1:{servers.free_port()}/tenant-notify"
    try:
        before = as_json(schedsvc(service, "settings", "show", "-o", "json"))
        assert (before["runRetentionIsDefault"], before["notify"]) == (True, None)
        changed = as_json(schedsvc(service, "settings", "set", "--run-retention-days", "7", "-o", "json"))
        assert (changed["runRetentionDays"], changed["runRetentionIsDefault"]) == (7, False)
        assert as_json(schedsvc(service, "settings", "show", "-o", "json")) == changed

        ok(schedsvc(service, "settings", "set", "--notify-url", hook, "--notify-header", "X-Token=s3cret"))
        shown = as_json(schedsvc(service, "settings", "show", "-o", "json"))
        assert shown["notify"] == {"url": hook, "headers": {"X-Token": "s3cret"}} and shown["runRetentionDays"] == 7
        table = ok(schedsvc(service, "settings", "show"))
        assert f"notify         POST {hook} (headers: X-Token)" in table and "s3cret" not in table
        assert f"run retention  7 days (chosen; at most {before['maxRunRetentionDays']})" in table

        too_long = schedsvc(service, "settings", "set", "--run-retention-days", str(before["maxRunRetentionDays"] + 1))
        assert "runRetentionDays" in one_line_error(too_long, EXIT_INVALID)
        refused = schedsvc(service, "settings", "set", "--notify-url", "http://10.1.2.3/")
        assert "notify.url" in one_line_error(refused, EXIT_INVALID)
        one_line_error(schedsvc(service, "settings", "set"), EXIT_USAGE)
        one_line_error(schedsvc(service, "settings", "set", "--no-notify", "--notify-url", hook), EXIT_USAGE)
        one_line_error(schedsvc(service, "settings", "set", "--run-retention-days", "3", "--default-retention"), 2)
        assert as_json(schedsvc(service, "settings", "show", "-o", "json"))["runRetentionDays"] == 7  # unchanged
    finally:
        reset = schedsvc(service, "settings", "set", "--no-notify", "--default-retention", "-o", "json")
    assert as_json(reset) == before


def test_backfill_runs_past_fires_once(service: Service, unique: str) -> None:  # noqa: F811
    flags = "--every 60 --subject tenant.dev.cli-tests -o json"
    job = as_json(schedsvc(service, "jobs", "create", "--name", f"{unique}-backfill", *flags.split()))
    anchor = datetime.fromisoformat(job["schedule"]["anchor"])
    first, last = (str(anchor - timedelta(minutes=m)).replace(" ", "T") for m in (5, 1))
    done = as_json(schedsvc(service, "jobs", "backfill", job["id"], "--from", first, "--to", last, "-o", "json"))
    assert done == {"jobId": job["id"], "fires": 5, "queued": 5}
    deadline = time.monotonic() + 30
    while True:
        runs = as_json(schedsvc(service, "runs", "ls", job["id"], "-o", "json"))["items"]
        backfilled = [r for r in runs if r["trigger"] == "backfill"]
        if len(backfilled) == 5 and all(r["status"] == "succeeded" for r in backfilled):
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.5)
    fires = sorted(datetime.fromisoformat(r["scheduledAt"]) for r in backfilled)
    assert fires == [anchor - timedelta(minutes=m) for m in (5, 4, 3, 2, 1)]
    assert "backfill" in ok(schedsvc(service, "runs", "ls", job["id"]))
    again = ok(schedsvc(service, "jobs", "backfill", job["id"], "--from", first, "--to", last))
    assert again.startswith("fires 5, queued 0")  # each fire runs once

    future = str(datetime.now(UTC) + timedelta(hours=1)).replace(" ", "T")
    assert "to" in one_line_error(
        schedsvc(service, "jobs", "backfill", job["id"], "--from", first, "--to", future), EXIT_INVALID
    )
    one_line_error(schedsvc(service, "jobs", "backfill", job["id"], "--from", "yesterday", "--to", last), EXIT_USAGE)
    assert schedsvc(service, "jobs", "backfill", job["id"], "--from", first).returncode == EXIT_USAGE
    one_line_error(schedsvc(service, "jobs", "backfill", "nope", "--from", first, "--to", last), EXIT_NOT_FOUND)
