"""The job resource, its schedule and target unions, and run records, as msgspec Structs.

Schema evolution: new fields get defaults, and a field never changes meaning. JSON names are camelCase.
"""

from __future__ import annotations

import enum
import re
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from schedsvc.domain import patterns
from schedsvc.domain.limits import MAX_FREE_FORM_DEPTH, instant_problem, json_problems

AwareDatetime = Annotated[datetime, Meta(tz=True)]
TimeZoneName = Annotated[str, Meta(min_length=1, max_length=64)]
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=patterns.PRINTABLE)]
"""A job's name, unique in its tenant: printable, since people read it in lists, logs and terminals."""
Description = Annotated[str, Meta(max_length=1000)]
Tag = Annotated[str, Meta(min_length=1, max_length=64, pattern=patterns.TAG)]
HeaderMap = Annotated[dict[str, Annotated[str, Meta(max_length=4096)]], Meta(max_length=64)]
JsonBody = str | dict[str, Any] | list[Any] | None
# The largest number a cron field can use (day of year is the widest, 1-366); a larger one is a typo or
# an attack, and the core would read it as "saturated" (a silent hourly job), so it is refused here.
_CRON_NUMBER_MAX = 9999
_CRON_NUMBER = re.compile(r"\d+")

# Validation errors raised in ``__post_init__`` start with the JSON name of the offending field
# ("timezone: ..."), so problem details can name it (msgspec keeps only the message of such errors).


def _zone_problem(name: str) -> str | None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as "Europe"
        return f"timezone: unknown time zone {name!r}"
    return None


def _check_instants(**instants: datetime | None) -> None:
    for field, instant in instants.items():
        problem = None if instant is None else instant_problem(instant)
        if problem:
            raise ValueError(f"{field}: {problem}")


def _check_free_form(field: str, value: JsonBody) -> None:
    problems = json_problems(value, "", MAX_FREE_FORM_DEPTH)
    if problems:
        where, message = problems[0]
        raise ValueError(f"{field}: {where + ': ' if where else ''}{message}")


class _ScheduleBase(Struct, tag_field="kind", kw_only=True, forbid_unknown_fields=True, rename="camel"):
    start_at: AwareDatetime | None = None
    """No fire before this instant."""
    end_at: AwareDatetime | None = None
    """No fire after this instant; the job completes once it has passed."""
    jitter_seconds: Annotated[int, Meta(ge=0, le=3600)] = 0
    """Each fire is delayed by a deterministic amount in ``[0, jitterSeconds]`` (same on every replica)."""

    def __post_init__(self) -> None:
        _check_instants(startAt=self.start_at, endAt=self.end_at)
        if self.start_at is not None and self.end_at is not None and self.end_at < self.start_at:
            raise ValueError("endAt: endAt must not be before startAt")


class CronSchedule(_ScheduleBase, tag="cron"):
    """Vixie-cron expression (5 fields, or 6 with seconds first) evaluated in an IANA time zone."""

    expression: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=256,
            pattern=patterns.CRON_CHARACTERS,
            description="5 fields (or 6 with seconds first), names, ranges, steps, lists, L, W, #, @macros",
        ),
    ]
    timezone: TimeZoneName = "UTC"

    def __post_init__(self) -> None:
        super().__post_init__()
        for number in _CRON_NUMBER.findall(self.expression):
            if int(number) > _CRON_NUMBER_MAX:
                raise ValueError(f"expression: the number {number[:24]} is out of range for a cron field")
        problem = _zone_problem(self.timezone)
        if problem:
            raise ValueError(problem)


class IntervalSchedule(_ScheduleBase, tag="interval"):
    """Every ``seconds`` of real elapsed time from ``anchor`` (set to the creation instant if omitted)."""

    seconds: Annotated[int, Meta(ge=1, le=366 * 86_400)]
    anchor: AwareDatetime | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_instants(anchor=self.anchor)


class CalendarSchedule(_ScheduleBase, tag="calendar"):
    """Every ``every`` days, weeks or months at wall time ``time`` in ``timezone``, from date ``anchor``."""

    unit: Literal["days", "weeks", "months"]
    time: Annotated[str, Meta(pattern=patterns.TIME_OF_DAY)]
    every: Annotated[int, Meta(ge=1, le=1000)] = 1
    timezone: TimeZoneName = "UTC"
    anchor: date | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        problem = _zone_problem(self.timezone)
        if problem:
            raise ValueError(problem)


class OnceSchedule(_ScheduleBase, tag="once"):
    """A single fire at ``at``."""

    at: AwareDatetime

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_instants(at=self.at)


Schedule = CronSchedule | IntervalSchedule | CalendarSchedule | OnceSchedule


class _TargetBase(Struct, tag_field="kind", kw_only=True, forbid_unknown_fields=True, rename="camel"):
    pass


class HttpTarget(_TargetBase, tag="http"):
    """Call a webhook. Success is a 2xx status unless ``successStatuses`` says otherwise."""

    url: Annotated[str, Meta(min_length=1, max_length=2048, pattern=patterns.HTTP_URL)]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: HeaderMap = msgspec.field(default_factory=dict)
    body: JsonBody = None
    timeout_seconds: Annotated[float, Meta(gt=0, le=300)] = 30.0
    success_statuses: Annotated[list[Annotated[int, Meta(ge=100, le=599)]], Meta(max_length=50)] | None = None

    def __post_init__(self) -> None:
        _check_free_form("body", self.body)


class NatsTarget(_TargetBase, tag="nats"):
    """Publish a message to a NATS subject the tenant is granted."""

    subject: Annotated[str, Meta(min_length=1, max_length=256, pattern=patterns.NATS_SUBJECT)]
    payload: JsonBody = None
    headers: HeaderMap = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_free_form("payload", self.payload)


Target = HttpTarget | NatsTarget


class NotificationTarget(Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """Where a job's failures, recoveries and missed fires are reported: a signed JSON ``POST`` to ``url``
    (the target policy of deliveries applies; ``docs/webhooks.md``, Notifications)."""

    url: Annotated[str, Meta(min_length=1, max_length=2048, pattern=patterns.HTTP_URL)]
    headers: HeaderMap = msgspec.field(default_factory=dict)


class RetryPolicy(Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """Exponential backoff with full jitter, bounded by attempts and by the age of the fire."""

    max_attempts: Annotated[int, Meta(ge=1, le=50)] = 3
    min_backoff_seconds: Annotated[float, Meta(ge=0, le=3600)] = 1.0
    max_backoff_seconds: Annotated[float, Meta(ge=0, le=86_400)] = 60.0
    max_event_age_seconds: Annotated[float, Meta(ge=1, le=7 * 86_400)] = 3600.0

    def __post_init__(self) -> None:
        if self.max_backoff_seconds < self.min_backoff_seconds:
            raise ValueError("maxBackoffSeconds: maxBackoffSeconds must not be below minBackoffSeconds")


DEFAULT_MISFIRE_GRACE_SECONDS = 60
"""A fire this much past its due instant counts as late (see ``CatchupPolicy.misfire_grace_seconds``)."""


class CatchupPolicy(Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """What to do with fires missed while no replica ran the job's partition or the job was paused."""

    policy: Literal["skip", "latest", "all"] = "latest"
    window_seconds: Annotated[int, Meta(ge=0, le=30 * 86_400)] = 3600
    misfire_grace_seconds: Annotated[int, Meta(ge=1, le=86_400)] = DEFAULT_MISFIRE_GRACE_SECONDS
    """A fire delivered up to this long after its due instant still runs as ``scheduled``; an older one is
    late and follows ``policy``. Below the partition lease takeover time (about 15 s), the fires a crashed
    replica left behind count as late too."""


class JobStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    MISSED = "missed"


class RunTrigger(enum.StrEnum):
    SCHEDULED = "scheduled"
    CATCHUP = "catchup"
    MANUAL = "manual"
    BACKFILL = "backfill"
    """A past fire run on request (``POST /jobs/{id}/backfill``)."""


Overlap = Literal["allow", "skip", "bufferOne"]
"""What a fire does while another fire of its job runs (from its first attempt to its final outcome):
``allow`` runs beside it, ``skip`` is recorded ``skipped``, ``bufferOne`` waits and starts when the
running fire ends, unless another fire already waits (then it is skipped)."""
Tags = Annotated[list[Tag], Meta(max_length=32)]
Metadata = Annotated[
    dict[Annotated[str, Meta(max_length=64)], Annotated[str, Meta(max_length=1024)]], Meta(max_length=64)
]


class JobCreate(Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """Body of ``POST /jobs``."""

    name: Name
    description: Description | None = None
    """Free text for people; the service does nothing with it."""
    schedule: Schedule
    target: Target
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    catchup: CatchupPolicy = msgspec.field(default_factory=CatchupPolicy)
    overlap: Overlap = "allow"
    tags: Tags = msgspec.field(default_factory=list)
    metadata: Metadata = msgspec.field(default_factory=dict)
    notify: NotificationTarget | None = None
    """Called once when a run fails for good, when the job recovers, and when fires are recorded missed;
    without it, the tenant's default (``/tenant/settings``) is used."""
    paused: bool = False
    """Create the job paused."""


class JobPatch(Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """Body of ``PATCH /jobs/{id}``: only the fields present change."""

    name: Name | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    schedule: Schedule | UnsetType = UNSET
    target: Target | UnsetType = UNSET
    retry: RetryPolicy | UnsetType = UNSET
    catchup: CatchupPolicy | UnsetType = UNSET
    overlap: Overlap | UnsetType = UNSET
    tags: Tags | UnsetType = UNSET
    metadata: Metadata | UnsetType = UNSET
    notify: NotificationTarget | UnsetType | None = UNSET
    """null removes the job's own target (the tenant's default applies again)."""


class Job(Struct, kw_only=True, rename="camel"):
    """A job as stored and as returned by the API."""

    id: str
    name: str
    description: str | None = None
    schedule: Schedule
    target: Target
    retry: RetryPolicy
    catchup: CatchupPolicy
    overlap: Overlap
    tags: list[str]
    metadata: dict[str, str]
    notify: NotificationTarget | None = None
    status: JobStatus
    next_run: datetime | None
    last_run: datetime | None
    last_run_status: RunStatus | None
    created_at: datetime
    updated_at: datetime
    version: int


AttemptErrorClass = Literal["http_status", "timeout", "connection", "refused", "invalid_request", "nats", "interrupted"]
"""Why an attempt failed: the target answered a status that is not a success (``http_status``), did not
answer in time (``timeout``), could not be reached or broke the connection (``connection``), was refused
by the target policy or address guard (``refused``), the request could not be built
(``invalid_request``), a NATS publish failed (``nats``), or the worker stopped mid-attempt
(``interrupted``)."""


class Attempt(Struct, kw_only=True, rename="camel"):
    """One attempt of a run at calling its target."""

    number: int
    """1 for the first attempt; a retry on demand continues the count."""
    started_at: datetime
    finished_at: datetime | None = None
    """None while the attempt runs."""
    duration_ms: int | None = None
    http_status: int | None = None
    error_class: AttemptErrorClass | None = None
    error: str | None = None
    response_snippet: str | None = None
    """The first bytes of the response body (UTF-8, invalid sequences replaced)."""
    next_retry_at: datetime | None = None
    """When the retry after this failed attempt is due (None: no retry followed it)."""


class Run(Struct, kw_only=True, rename="camel"):
    """One fire of a job: keyed by job id and scheduled instant, stable across retries.

    The top-level outcome fields (``startedAt`` … ``responseSnippet``) describe the latest attempt;
    ``attemptHistory`` lists every attempt, oldest first (bounded: see ``MAX_ATTEMPT_HISTORY``).
    """

    id: str
    job_id: str
    scheduled_at: datetime
    trigger: RunTrigger
    status: RunStatus
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    http_status: int | None = None
    error: str | None = None
    response_snippet: str | None = None
    next_attempt_at: datetime | None = None
    """While the run waits for a retry: when it is due."""
    retries_on_demand: int = 0
    """How often the run was retried with ``POST /runs/{runId}/retry`` after it failed."""
    attempt_history: list[Attempt] = msgspec.field(default_factory=list)


class RunMessage(Struct, array_like=True):
    """What timing publishes to JetStream for every fire (compact: array-encoded msgpack)."""

    job_id: str
    tenant: str
    scheduled_ms: int
    due_ms: int
    trigger: str
    epoch: int
    """Lease epoch of the publishing replica (fencing token), for diagnosis."""


def run_id(job_id: str, scheduled_ms: int) -> str:
    """The identity of a fire: the same for every attempt and on every replica."""
    return f"{job_id}:{scheduled_ms}"
