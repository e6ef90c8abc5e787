"""Bodies of the REST API that are not domain entities: pages, an accepted run, a preview, problem details.

They live here, beside the entities, because two parties speak them: the API (``schedsvc.api``) encodes
them and the client (``schedsvc.client``) decodes them, and the client must import nothing of the server.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from schedsvc.domain.limits import instant_problem
from schedsvc.domain.models import AwareDatetime, Job, JobStatus, Metadata, Name, Run, RunTrigger, Schedule, Tag
from schedsvc.domain.patterns import in_words


class JobList(msgspec.Struct, rename="camel"):
    """One page of ``GET /jobs``; ``nextCursor`` is null on the last page."""

    items: list[Job]
    next_cursor: str | None


class RunList(msgspec.Struct, rename="camel"):
    """One page of ``GET /jobs/{id}/runs``, newest first; ``nextCursor`` is null on the last page."""

    items: list[Run]
    next_cursor: str | None


class RunAccepted(msgspec.Struct, rename="camel"):
    """Answer of ``POST /jobs/{id}/run``: the run is queued; its outcome appears in the run history."""

    run_id: str
    job_id: str
    scheduled_at: datetime
    trigger: RunTrigger


RETRY_BATCH_MAX = 100
"""Failed runs one ``POST /runs/retry`` retries at most (``limit``)."""
RetryRefusalReason = Literal["exhausted", "job_deleted", "changed"]


class RunRetryFilter(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /runs/retry``: which of the tenant's failed runs to retry, newest first (the order and
    filters of ``GET /runs?status=failed``)."""

    job: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    """Only this job's failed runs."""
    trigger: RunTrigger | None = None
    """Only failed runs fired this way."""
    scheduled_from: AwareDatetime | None = msgspec.field(default=None, name="from")
    """Scheduled at or after this instant."""
    scheduled_to: AwareDatetime | None = msgspec.field(default=None, name="to")
    """Scheduled before this instant."""
    limit: Annotated[int, Meta(ge=1, le=RETRY_BATCH_MAX)] = 20
    """Failed runs to take in this batch."""
    cursor: Annotated[str, Meta(min_length=1, max_length=512)] | None = None
    """Continue after an earlier batch (its ``nextCursor``)."""

    def __post_init__(self) -> None:
        for name, instant in (("from", self.scheduled_from), ("to", self.scheduled_to)):
            problem = None if instant is None else instant_problem(instant)
            if problem:
                raise ValueError(f"{name}: {problem}")


class RunRetryRefusal(msgspec.Struct, rename="camel"):
    """A matched failed run that was not retried, and why."""

    run_id: str
    reason: RetryRefusalReason
    """``exhausted``: retried on demand the most times already; ``job_deleted``: the attempt needs the job's
    target; ``changed``: the run changed meanwhile (retried by another request?)."""
    detail: str


class RunRetryReport(msgspec.Struct, rename="camel"):
    """Answer of ``POST /runs/retry``: ``matched`` = ``retried`` + ``refused``."""

    matched: int
    retried: int
    refused: int
    retried_runs: list[str]
    """Ids of the runs queued for one more attempt."""
    refusals: list[RunRetryRefusal]
    next_cursor: str | None
    """More failed runs match after this batch: send the same filter with this cursor."""


MAX_BULK_JOBS = 1000
"""The most jobs one bulk action changes; a caller told ``more`` repeats the call for the rest."""
MAX_COUNTED_MATCHES = 10 * MAX_BULK_JOBS
"""A bulk action counts its matches up to here: a broad selector over a large tenant must not scan every
job on every call (``matched`` equal to it means at least that many)."""


class JobSelector(
    msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="camel", omit_defaults=True
):
    """Which of a tenant's jobs a list (``GET /jobs``) or a bulk action means: every condition given must hold
    (none: every job)."""

    tag: Tag | None = None
    name_prefix: Name | None = None
    status: JobStatus | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)
    """Jobs whose metadata holds every one of these key/value pairs."""

    def is_empty(self) -> bool:
        return self.tag is None and self.name_prefix is None and self.status is None and not self.metadata


EVERY_JOB = JobSelector()
"""The selector of a plain list: no condition."""


class BulkJobAction(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /jobs/bulk/pause``, ``/resume`` and ``/delete``."""

    selector: JobSelector
    limit: Annotated[int, Meta(ge=1, le=MAX_BULK_JOBS)] = MAX_BULK_JOBS
    """The most jobs this call changes."""

    def __post_init__(self) -> None:
        if self.selector.is_empty():  # never "every job of the tenant" by accident
            raise ValueError("selector: name at least one of tag, namePrefix, status, metadata")


class BulkJobResult(msgspec.Struct, rename="camel"):
    """What a bulk action did: repeating it is harmless (jobs already in the asked-for state are left alone)."""

    matched: int
    """Jobs matching the selector when the call began (whatever their status), counted up to
    :data:`MAX_COUNTED_MATCHES` (10,000): at that value, at least that many match."""
    changed: int
    """Jobs this call paused, resumed or deleted."""
    more: bool
    """More jobs the action applies to remain than ``limit`` let this call change: call again."""


MAX_BACKFILL_FIRES = 1000
"""Most fires one backfill request may run."""


class BackfillRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /jobs/{id}/backfill``: run every fire of the job's schedule from ``from`` to ``to``
    (both inclusive; both past instants with a UTC offset)."""

    from_: AwareDatetime = msgspec.field(name="from")
    to: AwareDatetime

    def __post_init__(self) -> None:
        for field, instant in (("from", self.from_), ("to", self.to)):
            problem = instant_problem(instant)
            if problem:
                raise ValueError(f"{field}: {problem}")
        if self.to < self.from_:
            raise ValueError("to: must not be before from")


class BackfillAccepted(msgspec.Struct, rename="camel"):
    """Answer of ``POST /jobs/{id}/backfill``: the fires of the range, and how many runs were queued now.

    A fire that already has a run (it ran, runs, failed or was skipped) is not run again, so a repeated
    backfill of the same range queues none; a fire recorded ``missed`` is run (its run reopens).
    """

    job_id: str
    fires: int
    """Fires of the schedule in the range."""
    queued: int
    """Runs queued by this request."""


class PreviewRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /schedules/preview``."""

    schedule: Schedule
    after: AwareDatetime | None = None
    """Fires strictly after this instant (default: now)."""
    count: Annotated[int, Meta(ge=1, le=100)] = 10

    def __post_init__(self) -> None:
        problem = None if self.after is None else instant_problem(self.after)
        if problem:
            raise ValueError(f"after: {problem}")


class PreviewResponse(msgspec.Struct):
    fires: list[datetime]
    """Fire instants in the schedule's time zone (jitter not applied)."""


class FieldError(msgspec.Struct):
    """One offending field of a request (``schedule.seconds``, ``If-Match``, ``cursor``) and what is wrong."""

    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`")
_INDEX = re.compile(r"\[(\d+)\]")
_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]+)`")
# Checks across fields (``__post_init__`` in domain/models.py) start their message with the field's name.
_LEADING_FIELD = re.compile(r"^([a-z][A-Za-z]*): (.+)$", re.DOTALL)


def field_from_message(message: str, source: str | None, key: str | None) -> FieldError:
    """msgspec says ``... - at `$.schedule.seconds```; turn that into ``schedule.seconds``.

    For unknown or missing fields msgspec names the field in the message and the path of its parent;
    checks across fields name it at the start of their message (``timezone: unknown time zone``).
    """
    match = _AT_PATH.search(message)
    # `$.tags[1]` → tags.1; a map's value (`$.metadata[...]`) is named by its map; `$[0]` (a field converted on
    # its own) → 0, which the caller joins to the field's name.
    path = _INDEX.sub(r".\1", match.group(1)).replace("[...]", "").strip(".") if match else ""
    text = _AT_PATH.sub("", message)
    named = _NAMED_FIELD.search(text)
    if named:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    leading = _LEADING_FIELD.match(text)
    if leading and not named:
        path = f"{path}.{leading.group(1)}" if path else leading.group(1)
        text = leading.group(2)
    if not path:
        path = "body" if key in (None, "data") else key
    return FieldError(path, in_words(text))
