"""A typed client of the schedsvc REST API, and a helper for receiving its webhooks.

Importable without the server's dependencies: it needs ``httpx`` and ``msgspec`` only, and speaks the
same msgspec models the API does (``schedsvc.domain``)::

    from schedsvc.client import Client, CronSchedule, HttpTarget, JobCreate

    with Client.from_env() as client:  # SCHEDSVC_URL, SCHEDSVC_API_KEY
        job = client.create_job(JobCreate(
            name="nightly-report",
            schedule=CronSchedule(expression="0 2 * * *", timezone="Europe/Berlin"),
            target=HttpTarget(url="https://example.com/hooks/report"),
        ))
        job = client.pause_job(job)  # If-Match: the version this Job holds

See ``docs/client.md``.
"""

from schedsvc.client._async import AsyncClient
from schedsvc.client._protocol import (
    DEFAULT_URL,
    OPERATIONS,
    JobFilters,
    Operation,
    RunFilters,
    RunListFilters,
)
from schedsvc.client._retry import RequestRetry
from schedsvc.client._sync import Client
from schedsvc.client.errors import (
    ApiError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    PreconditionFailedError,
    RateLimitedError,
    ServiceUnavailableError,
    UnauthorizedError,
    UnprocessableError,
    UnsupportedMediaTypeError,
)
from schedsvc.client.webhooks import Delivery, InvalidDeliveryError, verify_delivery, verify_notification
from schedsvc.domain.models import (
    CalendarSchedule,
    CatchupPolicy,
    CronSchedule,
    HttpTarget,
    IntervalSchedule,
    Job,
    JobCreate,
    JobPatch,
    JobStatus,
    NatsTarget,
    NotificationTarget,
    OnceSchedule,
    RetryPolicy,
    Run,
    RunStatus,
    RunTrigger,
    Schedule,
    Target,
)
from schedsvc.domain.notifications import Notification
from schedsvc.domain.tenants import TenantSettings, TenantSettingsPatch
from schedsvc.domain.wire import (
    BackfillAccepted,
    BulkJobResult,
    FieldError,
    JobList,
    JobSelector,
    Problem,
    RunAccepted,
    RunList,
)

__all__ = [
    "DEFAULT_URL",
    "OPERATIONS",
    "ApiError",
    "AsyncClient",
    "BackfillAccepted",
    "BadRequestError",
    "BulkJobResult",
    "CalendarSchedule",
    "CatchupPolicy",
    "Client",
    "ConflictError",
    "CronSchedule",
    "Delivery",
    "FieldError",
    "ForbiddenError",
    "HttpTarget",
    "IntervalSchedule",
    "InvalidDeliveryError",
    "Job",
    "JobCreate",
    "JobFilters",
    "JobList",
    "JobPatch",
    "JobSelector",
    "JobStatus",
    "NatsTarget",
    "NotFoundError",
    "Notification",
    "NotificationTarget",
    "OnceSchedule",
    "Operation",
    "PayloadTooLargeError",
    "PreconditionFailedError",
    "Problem",
    "RateLimitedError",
    "RequestRetry",
    "RetryPolicy",
    "Run",
    "RunAccepted",
    "RunFilters",
    "RunList",
    "RunListFilters",
    "RunStatus",
    "RunTrigger",
    "Schedule",
    "ServiceUnavailableError",
    "Target",
    "TenantSettings",
    "TenantSettingsPatch",
    "UnauthorizedError",
    "UnprocessableError",
    "UnsupportedMediaTypeError",
    "verify_delivery",
    "verify_notification",
]
