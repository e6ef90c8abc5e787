"""The job document: the one place that builds it, reads it, and spells its field names.

Every adapter that touches the ``jobs`` collection builds its queries and updates here, and tests and
benchmarks build documents with :func:`new_document`. The layout is :class:`JobDocument`; field names
are its attributes in camelCase (``_id`` for the id), so a new job field is one attribute here (plus the
API's models). Schema evolution follows msgspec's rules: new fields get defaults, a field never changes
meaning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import msgspec

from schedsvc.domain.jobs import JobChange, JobForRun, JobTiming
from schedsvc.domain.models import (
    CatchupPolicy,
    Job,
    JobCreate,
    JobStatus,
    NotificationTarget,
    RetryPolicy,
    RunStatus,
    Schedule,
    Target,
)
from schedsvc.domain.time import from_ms
from schedsvc.domain.timing import Advance
from schedsvc.domain.wire import JobSelector

Doc = dict[str, Any]


class JobDocument(msgspec.Struct, kw_only=True, rename="camel"):
    """A job as stored in the ``jobs`` collection.

    Its fields repeat :class:`~schedsvc.domain.models.JobCreate`'s with the plain types (``str``, not ``Name``
    or ``Overlap``) on purpose: the API's rules apply when a job is written, and a document is read back as it
    was written even after a rule is tightened."""

    id: str = msgspec.field(name="_id")
    tenant: str
    name: str
    description: str | None = None
    schedule: Schedule
    target: Target
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    catchup: CatchupPolicy = msgspec.field(default_factory=CatchupPolicy)
    overlap: str = "allow"
    tags: list[str] = msgspec.field(default_factory=list)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    notify: NotificationTarget | None = None
    status: JobStatus = JobStatus.ACTIVE
    next_run: datetime | None = None
    resumed_at: datetime | None = None
    """Set by a resume until timing has applied the catch-up policy to the fires the pause missed."""
    last_run: datetime | None = None
    last_run_status: RunStatus | None = None
    last_failure: datetime | None = None
    """Scheduled instant of the latest fire that failed for good, until a fire at or after it succeeds:
    set while the job is failing, so exactly one success reports its recovery."""
    last_recovery: datetime | None = None
    """Scheduled instant of the fire whose success last cleared ``last_failure``: a redelivery of that
    success (its worker died before reporting) finds it and reports the recovery again (same event id)."""
    partition: int
    created_at: datetime
    updated_at: datetime
    version: int = 1


_ENCODED = {f.name: f.encode_name for f in msgspec.structs.fields(JobDocument)}


def _name(attribute: str) -> str:
    return _ENCODED[attribute]


# The field names the adapters' queries need, derived from the layout above (never spelled twice).
ID: Final = _name("id")
TENANT: Final = _name("tenant")
NAME: Final = _name("name")
TAGS: Final = _name("tags")
METADATA: Final = _name("metadata")
STATUS: Final = _name("status")
NEXT_RUN: Final = _name("next_run")
RESUMED_AT: Final = _name("resumed_at")
LAST_RUN: Final = _name("last_run")
LAST_RUN_STATUS: Final = _name("last_run_status")
LAST_FAILURE: Final = _name("last_failure")
LAST_RECOVERY: Final = _name("last_recovery")
PARTITION: Final = _name("partition")
UPDATED_AT: Final = _name("updated_at")
VERSION: Final = _name("version")

_COPIED_FROM_CREATE = tuple(
    f.name for f in msgspec.structs.fields(JobCreate) if f.name in JobDocument.__struct_fields__
)
"""The fields a job document takes from the create request as they are."""

TIMING_PROJECTION: Final[Doc] = {f.encode_name: 1 for f in msgspec.structs.fields(JobTiming) if f.name != "id"}
"""Only what timing needs to plan fires: never the target, body or metadata."""
FOR_RUN_PROJECTION: Final[Doc] = {f.encode_name: 1 for f in msgspec.structs.fields(JobForRun) if f.name != "id"}
"""What execution needs to run a fire."""


def to_builtins(value: object) -> Any:
    """A value as BSON-ready builtins: datetimes stay datetimes, dates become ISO strings."""
    return msgspec.to_builtins(value, builtin_types=(datetime,))


# -- building --------------------------------------------------------------------------------------


def new_document(
    job_id: str,
    tenant: str,
    body: JobCreate,
    *,
    status: JobStatus,
    next_run: datetime | None,
    partition: int,
    now: datetime,
) -> JobDocument:
    """A new job's document (store it with :func:`encode`)."""
    fields = {name: getattr(body, name) for name in _COPIED_FROM_CREATE}
    return JobDocument(
        id=job_id,
        tenant=tenant,
        status=status,
        next_run=next_run,
        partition=partition,
        created_at=now,
        updated_at=now,
        **fields,
    )


def encode(document: JobDocument) -> Doc:
    """The BSON-ready form of a job document."""
    return to_builtins(document)  # type: ignore[no-any-return]


def change_update(change: JobChange, now: datetime) -> Doc:
    """The update of an API write: the changed fields, ``updatedAt``, and a new version."""
    changed = {
        _ENCODED[name]: to_builtins(value)
        for name in JobChange.__struct_fields__
        if name in _ENCODED and (value := getattr(change, name)) is not msgspec.UNSET
    }
    return {"$set": {**changed, UPDATED_AT: now}, "$inc": {VERSION: 1}}


# -- reading ---------------------------------------------------------------------------------------


def decode(doc: Doc) -> JobDocument:
    """A stored job document, typed."""
    return msgspec.convert(doc, JobDocument, strict=False)


def read_job(doc: Doc) -> Job:
    """The API's view of a stored job."""
    return msgspec.convert({**doc, "id": doc[ID]}, Job, strict=False)


def read_timing(doc: Doc) -> JobTiming:
    """The timing module's view of a stored job (read with :data:`TIMING_PROJECTION`)."""
    return msgspec.convert({**doc, "id": doc[ID]}, JobTiming, strict=False)


def read_for_run(doc: Doc) -> JobForRun:
    """Execution's view of a stored job (read with :data:`FOR_RUN_PROJECTION`); ``msgspec.ValidationError``
    when the stored job does not decode."""
    return msgspec.convert({**doc, "id": doc[ID]}, JobForRun, strict=False)


# -- queries ---------------------------------------------------------------------------------------


def of_id(job_id: str) -> Doc:
    return {ID: job_id}


def of_tenant(tenant: str, job_id: str, expected_version: int | None = None) -> Doc:
    query: Doc = {ID: job_id, TENANT: tenant}
    if expected_version is not None:
        query[VERSION] = expected_version
    return query


def change_filter(tenant: str, job_id: str, change: JobChange, expected_version: int | None) -> Doc:
    query = of_tenant(tenant, job_id, expected_version)
    if change.only_if_status:
        query[STATUS] = {"$in": sorted(s.value for s in change.only_if_status)}
    return query


def page_query(tenant: str, selector: JobSelector, *, after_id: str | None = None) -> Doc:
    """A tenant's jobs the selector matches (after ``after_id`` in creation order)."""
    query: Doc = {TENANT: tenant}
    if after_id:
        query[ID] = {"$gt": after_id}
    if selector.status is not None:
        query[STATUS] = selector.status.value
    if selector.tag is not None:
        query[TAGS] = selector.tag
    if selector.name_prefix:
        query[NAME] = _prefix_match(selector.name_prefix)
    if selector.metadata:
        query.update(_metadata_match(selector.metadata))
    return query


def _metadata_match(metadata: Mapping[str, str]) -> Doc:
    """Jobs whose metadata holds every pair. A key is a path below ``metadata`` when it can be one; a key
    with a dot or a leading ``$`` (which a path would misread) is looked up by name with ``$getField``."""
    plain: Doc = {}
    by_name: list[Doc] = []
    for key, value in metadata.items():
        if key and "." not in key and not key.startswith("$"):
            plain[f"{METADATA}.{key}"] = value
        else:
            field = {"$getField": {"field": {"$literal": key}, "input": f"${METADATA}"}}
            by_name.append({"$eq": [field, value]})
    if by_name:
        plain["$expr"] = {"$and": by_name}
    return plain


def _prefix_match(prefix: str) -> Doc:
    """Names starting with ``prefix``, as a range: the same names as an anchored regex (strings compare by
    code point, as their UTF-8 bytes do), answered from the ``{tenant, name}`` index by every server
    (SecantusDB evaluates a regex document by document: 0.4 s at 10,000 jobs, docs/console.md)."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return {"$regex": f"^{re.escape(prefix)}"}
    following = 0xE000 if 0xD7FF <= last < 0xE000 else last + 1  # never a lone surrogate
    return {"$gte": prefix, "$lt": prefix[:-1] + chr(following)}


def due_query(partitions: Sequence[int], until: datetime, after: datetime | None) -> Doc:
    """Active jobs of ``partitions`` whose ``nextRun`` is in ``(after, until]``; served by the
    ``{partition, status, nextRun}`` index."""
    window: Doc = {"$lte": until} if after is None else {"$gt": after, "$lte": until}
    return {PARTITION: {"$in": list(partitions)}, STATUS: JobStatus.ACTIVE.value, NEXT_RUN: window}


def advance_write(advance: Advance) -> tuple[Doc, Doc]:
    """Filter and update of a ``nextRun`` advance.

    It applies only while the job is still active with the ``nextRun`` the plan started from (and the
    same ``resumedAt``), so an API change made meanwhile wins over it.
    """
    query: Doc = {ID: advance.job_id, NEXT_RUN: from_ms(advance.old_ms), STATUS: JobStatus.ACTIVE.value}
    change: Doc = {NEXT_RUN: None if advance.new_ms is None else from_ms(advance.new_ms)}
    if advance.resumed_at is not None:
        query[RESUMED_AT] = advance.resumed_at
        change[RESUMED_AT] = None
    if advance.new_ms is None:
        change[STATUS] = JobStatus.COMPLETED.value
    return query, {"$set": change}


def last_run_write(job_id: str, scheduled: datetime, status: RunStatus) -> tuple[Doc, Doc]:
    """Filter and update recording a finished fire on its job, unless a later fire already finished.

    Deliberately leaves ``version`` and ``updatedAt`` alone: they belong to API changes (the ETag).
    """
    # lastRun missing, null or older than this fire.
    return {ID: job_id, LAST_RUN: {"$not": {"$gte": scheduled}}}, {
        "$set": {LAST_RUN: scheduled, LAST_RUN_STATUS: status.value}
    }


def failure_write(job_id: str, scheduled: datetime) -> tuple[Doc, Doc]:
    """Filter and update marking the job as failing since the fire at ``scheduled`` failed for good (the
    latest such fire wins; like ``lastRun``, it leaves ``version`` and ``updatedAt`` alone)."""
    return {ID: job_id}, {"$max": {LAST_FAILURE: scheduled}}


def recovery_write(job_id: str, scheduled: datetime) -> tuple[Doc, Doc]:
    """Filter and update clearing the failing mark when the fire at ``scheduled`` succeeded: it matches only
    while the job is marked failing at or before that fire, so of several successes exactly one recovers
    it, and a late success of an older fire does not hide a newer failure. It notes which fire recovered
    the job (see :func:`recovered_by`). Flat conditions beside the ``_id`` equality, so every server answers
    it from the ``_id`` index (it runs after every success)."""
    return {ID: job_id, LAST_FAILURE: {"$lte": scheduled}}, {"$set": {LAST_FAILURE: None, LAST_RECOVERY: scheduled}}


def recovered_by(job_id: str, scheduled: datetime) -> Doc:
    """Filter matching the job if the fire at ``scheduled`` is the one that last cleared its failing mark and
    no failure came since: a repeat of that success then reports the recovery its first worker may have
    died before reporting."""
    return {ID: job_id, LAST_FAILURE: None, LAST_RECOVERY: scheduled}
