"""Exceptions the client raises: one per problem status, each carrying every field error of the response.

Each also inherits the closest builtin (``NotFoundError`` is a ``LookupError``), as the service's own
exceptions do, so callers may catch either.
"""

from __future__ import annotations

from schedsvc.domain.errors import SchedsvcError
from schedsvc.domain.wire import FieldError, Problem


class ApiError(SchedsvcError):
    """The service answered with an RFC 9457 problem; ``errors`` names each offending field."""

    def __init__(self, problem: Problem, request_id: str | None = None, retry_after: float | None = None) -> None:
        self.problem = problem
        self.request_id = request_id
        self.retry_after = retry_after
        """Seconds the service asked to wait (429, 503), when it said."""
        super().__init__(self._one_line())

    @property
    def status(self) -> int:
        return self.problem.status

    @property
    def title(self) -> str:
        return self.problem.title

    @property
    def detail(self) -> str | None:
        return self.problem.detail

    @property
    def errors(self) -> list[FieldError]:
        return list(self.problem.errors or ())

    @property
    def fields(self) -> list[str]:
        """The offending fields' names (``schedule.seconds``, ``If-Match``), in the service's order."""
        return [e.field for e in self.errors]

    def _one_line(self) -> str:
        reasons = "; ".join(f"{e.field}: {e.message}" for e in self.errors) if self.errors else self.detail or ""
        return f"{self.status} {self.title}" + (f": {reasons}" if reasons else "")


class BadRequestError(ApiError, ValueError):
    """400: a malformed body, query parameter or header."""


class UnauthorizedError(ApiError, PermissionError):
    """401: the API key is missing, unknown or revoked."""


class ForbiddenError(ApiError, PermissionError):
    """403."""


class NotFoundError(ApiError, LookupError):
    """404: no such job for this tenant."""


class ConflictError(ApiError):
    """409: another job has the name, or the job's state does not allow the change (a completed job)."""


class PreconditionFailedError(ApiError):
    """412: the job changed since the version sent in ``If-Match``; fetch it again and reapply."""


class PayloadTooLargeError(ApiError, ValueError):
    """413."""


class UnsupportedMediaTypeError(ApiError, ValueError):
    """415."""


class UnprocessableError(ApiError, ValueError):
    """422: the body decodes but breaks a rule (a schedule without fires, a target not allowed, ...)."""


class RateLimitedError(ApiError):
    """429, still after the client's bounded retries."""


class ServiceUnavailableError(ApiError, ConnectionError):
    """503, still after the client's bounded retries."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    412: PreconditionFailedError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def error_for(problem: Problem, request_id: str | None = None, retry_after: float | None = None) -> ApiError:
    """The exception of a problem's status (``ApiError`` itself for statuses without a class)."""
    return _BY_STATUS.get(problem.status, ApiError)(problem, request_id, retry_after)


__all__ = [
    "ApiError",
    "BadRequestError",
    "ConflictError",
    "FieldError",
    "ForbiddenError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PreconditionFailedError",
    "Problem",
    "RateLimitedError",
    "ServiceUnavailableError",
    "UnauthorizedError",
    "UnprocessableError",
    "UnsupportedMediaTypeError",
    "error_for",
]
