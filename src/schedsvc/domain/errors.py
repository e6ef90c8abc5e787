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


class InvalidTargetError(SchedsvcError, ValueError):
    """A target is not allowed for this tenant or deployment."""

    def __init__(self, message: str, field: str = "target") -> None:
        super().__init__(message)
        self.field = field


class JobNotFoundError(SchedsvcError, LookupError):
    """No job with that id exists for the calling tenant."""


class DuplicateJobNameError(SchedsvcError, ValueError):
    """Another job of the tenant already has that name."""


class VersionConflictError(SchedsvcError, RuntimeError):
    """The job changed since the version the client based its change on."""


class IdempotencyConflictError(SchedsvcError, ValueError):
    """An ``Idempotency-Key`` was reused with a different request body."""


class AuthenticationError(SchedsvcError, PermissionError):
    """The API key is missing, unknown or revoked."""


class StoreUnavailableError(SchedsvcError, ConnectionError):
    """The database cannot be reached."""
