"""What the OpenAPI document says beyond the handlers' types: the bearer scheme, and examples.

Every example is built from the domain's own msgspec types and encoded as the API encodes them, so an
example cannot show a field the API does not have.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from litestar.enums import RequestEncodingType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, Example, SecurityRequirement, SecurityScheme
from litestar.params import Body

from schedsvc.domain import models, tenants, wire

BEARER = "apiKey"
COMPONENTS = Components(
    security_schemes={
        BEARER: SecurityScheme(
            type="http",
            scheme="bearer",
            bearer_format="sk_<key id>_<secret>",
            description="The tenant's API key (`schedsvc tenants create NAME`, or printed by `schedsvc dev`).",
        )
    }
)
REQUIRES_KEY: list[SecurityRequirement] = [{BEARER: []}]
KEY_OPTIONAL: list[SecurityRequirement] = [{}, {BEARER: []}]


def _example(summary: str, value: msgspec.Struct | list[Any]) -> Example:
    return Example(summary=summary, value=msgspec.to_builtins(value))


def body(*examples: Example) -> Any:
    """``Body`` metadata for a JSON request body with examples (use as ``Annotated[T, body(...)]``)."""
    return Body(media_type=RequestEncodingType.JSON, examples=list(examples))


def success(data: type[Any] | None, description: str, *examples: Example) -> ResponseSpec:
    """The documented success response of a handler (replaces the one Litestar derives, adding examples)."""
    return ResponseSpec(data, description=description, examples=list(examples) or None, generate_examples=False)


_AT = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
_JOB_ID = "6745a1c2e4b0f1a2b3c4d5e6"
_CRON = models.CronSchedule(expression="0 2 * * *", timezone="Europe/Berlin")
_HOOK = models.HttpTarget(url="https://example.com/hooks/report", method="POST", body={"report": "nightly"})

CREATE_CRON_WEBHOOK = _example(
    "A nightly webhook",
    models.JobCreate(name="nightly-report", schedule=_CRON, target=_HOOK, tags=["reports"]),
)
CREATE_INTERVAL_NATS = _example(
    "Every 5 minutes, published to NATS, at most one run at a time",
    models.JobCreate(
        name="sync-inventory",
        schedule=models.IntervalSchedule(seconds=300),
        target=models.NatsTarget(subject="tenant.acme.inventory.sync", payload={"full": False}),
        overlap="skip",
        retry=models.RetryPolicy(max_attempts=5),
    ),
)
PATCH_SCHEDULE = _example(
    "Move to 03:30 on weekdays",
    models.JobPatch(schedule=models.CronSchedule(expression="30 3 * * MON-FRI", timezone="Europe/Berlin")),
)
PATCH_TAGS = _example("Replace the tags", models.JobPatch(tags=["reports", "finance"]))
PATCH_NOTIFY = _example(
    "Report failures to an on-call hook",
    models.JobPatch(notify=models.NotificationTarget(url="https://oncall.example.com/hook")),
)
SETTINGS_NOTIFY = _example(
    "A default notification target, runs kept 14 days",
    tenants.TenantSettingsPatch(
        notify=models.NotificationTarget(url="https://oncall.example.com/hook"), run_retention_days=14
    ),
)
SETTINGS_DEFAULTS = _example(
    "Back to the deployment's defaults", tenants.TenantSettingsPatch(notify=None, run_retention_days=None)
)

_JOB = models.Job(
    id=_JOB_ID,
    name="nightly-report",
    schedule=_CRON,
    target=_HOOK,
    retry=models.RetryPolicy(),
    catchup=models.CatchupPolicy(),
    overlap="allow",
    tags=["reports"],
    metadata={},
    status=models.JobStatus.ACTIVE,
    next_run=datetime(2026, 11, 28, 1, 0, tzinfo=UTC),
    last_run=datetime(2026, 11, 27, 1, 0, tzinfo=UTC),
    last_run_status=models.RunStatus.SUCCEEDED,
    created_at=datetime(2026, 11, 20, 9, 12, 5, tzinfo=UTC),
    updated_at=datetime(2026, 11, 20, 9, 12, 5, tzinfo=UTC),
    version=1,
)
JOB = _example("A job", _JOB)
JOB_PAUSED = _example("The job, paused", msgspec.structs.replace(_JOB, status=models.JobStatus.PAUSED, version=2))
JOB_PAGE = _example(
    "A page with more after it", wire.JobList(items=[_JOB], next_cursor="eyJpZCI6IjY3NDVhMWMyZTRiMGYxYTJiM2M0ZDVlNiJ9")
)
_RUN = models.Run(
    id=f"{_JOB_ID}:1795741200000",
    job_id=_JOB_ID,
    scheduled_at=datetime(2026, 11, 27, 1, 0, tzinfo=UTC),
    trigger=models.RunTrigger.SCHEDULED,
    status=models.RunStatus.SUCCEEDED,
    attempts=1,
    started_at=datetime(2026, 11, 27, 1, 0, 0, 42_000, tzinfo=UTC),
    finished_at=datetime(2026, 11, 27, 1, 0, 0, 250_000, tzinfo=UTC),
    duration_ms=208,
    http_status=200,
    response_snippet='{"ok":true}',
)
RUN_PAGE = _example("The last page of a job's runs", wire.RunList(items=[_RUN], next_cursor=None))
RUN_ACCEPTED = _example(
    "A manual run, queued",
    wire.RunAccepted(
        run_id=f"{_JOB_ID}:{int(_AT.timestamp() * 1000)}",
        job_id=_JOB_ID,
        scheduled_at=_AT,
        trigger=models.RunTrigger.MANUAL,
    ),
)
PREVIEW = _example("The next 3 fires of a cron schedule", wire.PreviewRequest(schedule=_CRON, count=3))
FIRES = _example(
    "Three fires",
    wire.PreviewResponse(fires=[datetime(2026, 11, d, 2, 0, tzinfo=ZoneInfo("Europe/Berlin")) for d in (28, 29, 30)]),
)
RETRY_FILTER = _example(
    "A job's failed runs of the last day, 50 at a time",
    wire.RunRetryFilter(job=_JOB_ID, scheduled_from=datetime(2026, 11, 26, 8, 0, tzinfo=UTC), limit=50),
)
RETRY_REPORT = _example(
    "Two retried, one refused, no more to take",
    wire.RunRetryReport(
        matched=3,
        retried=2,
        refused=1,
        retried_runs=[f"{_JOB_ID}:1795741200000", f"{_JOB_ID}:1795654800000"],
        refusals=[
            wire.RunRetryRefusal(f"{_JOB_ID}:1795568400000", "exhausted", "the run was already retried 5 times"),
        ],
        next_cursor=None,
    ),
)
BULK_BY_TAG = _example("The jobs tagged `reports`", wire.BulkJobAction(selector=wire.JobSelector(tag="reports")))
BULK_BY_METADATA = _example(
    "At most 100 jobs of one team whose name starts with `sync-`",
    wire.BulkJobAction(selector=wire.JobSelector(name_prefix="sync-", metadata={"team": "payments"}), limit=100),
)
BULK_RESULT = _example("12 matched, 9 changed (3 were already so), none left", wire.BulkJobResult(12, 9, more=False))
