"""The service's exceptions. Each also inherits the closest builtin, so callers may catch either."""


class SchedsvcError(Exception):
    """Base class of every error raised by schedsvc."""


class ConfigurationError(SchedsvcError, ValueError):
    """The environment or settings are invalid."""


class InvalidScheduleError(SchedsvcError, ValueError):
    """A schedule cannot be compiled; ``field`` names the offending field (JSON pointer-ish path)."""

    def __init__(self, message: str, field: str = "schedule") -> None:
        super().__init__(message)
        self.field = field


class JobNotFoundError(SchedsvcError, LookupError):
    """No job with that id exists for the calling tenant."""


class DuplicateJobNameError(SchedsvcError, ValueError):
    """Another job of the tenant already has that name."""


class VersionConflictError(SchedsvcError, RuntimeError):
    """The job changed since the version the client based its change on."""


class JobActionRefusedError(SchedsvcError, RuntimeError):
    """The action does not apply to the job as it is, e.g. pausing a completed job (409)."""


class IdempotencyConflictError(SchedsvcError, ValueError):
    """An ``Idempotency-Key`` was reused with a different request body (422)."""


class IdempotencyInProgressError(SchedsvcError, RuntimeError):
    """The first request with this ``Idempotency-Key`` is still being performed (409: repeat it later)."""


class RunNotFoundError(SchedsvcError, LookupError):
    """No run with that id exists for the calling tenant (another tenant's run included)."""


class RunRetryRefusedError(SchedsvcError, RuntimeError):
    """A run cannot be retried on demand as it is (409); ``reason`` says why, as a batch retry reports it."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class AuthenticationError(SchedsvcError, PermissionError):
    """The API key is missing, unknown or revoked."""


class TenantExistsError(SchedsvcError, ValueError):
    """A tenant with that name already exists."""


class InvalidCursorError(SchedsvcError, ValueError):
    """A page cursor was not produced by this service, was altered, or points outside any page."""


class InvalidRequestError(SchedsvcError, ValueError):
    """A request breaks the API's rules; ``problems`` lists every offending field with its message.

    ``status`` is 400 for a request that cannot be read at all (not UTF-8, nested too deeply, a bad
    header or query parameter) and 422 for a body that reads but breaks the schema.
    """

    def __init__(self, problems: list[tuple[str, str]], status: int = 422) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))
        self.problems = problems
        self.status = status


class PreconditionFailedError(VersionConflictError):
    """``If-Match`` names a version the job is not at (the same answer as a lost update: 412)."""


class InfrastructureUnavailableError(SchedsvcError, ConnectionError):
    """A backing service is unreachable; the request may succeed later (503 with ``Retry-After``)."""

    retry_after_seconds: int = 5
    what: str = "a backing service"


class StoreUnavailableError(InfrastructureUnavailableError):
    """The database cannot be reached."""

    what = "the database"


class BusUnavailableError(InfrastructureUnavailableError):
    """The message bus (NATS JetStream) could not take or hand out a message."""

    what = "the run queue"


class CacheUnavailableError(InfrastructureUnavailableError):
    """The shared cache and rate-limit store (Redis) cannot be reached."""

    what = "the cache"
