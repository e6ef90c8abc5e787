"""The one place that maps exceptions to HTTP responses: RFC 9457 problem details naming the field."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import ParameterKwarg
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from schedsvc.domain.errors import (
    AuthenticationError,
    DuplicateJobNameError,
    IdempotencyConflictError,
    IdempotencyInProgressError,
    InfrastructureUnavailableError,
    InvalidCursorError,
    InvalidRequestError,
    InvalidScheduleError,
    JobActionRefusedError,
    JobNotFoundError,
    RunNotFoundError,
    RunRetryRefusedError,
    SchedsvcError,
    TenantExistsError,
    VersionConflictError,
)
from schedsvc.domain.wire import FieldError, Problem, field_from_message

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    412: "Precondition failed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    503: "Service unavailable",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI documentation of the problem-details responses a handler can give."""
    common = (400, 401, 413, 415, 429, 503)
    return {
        status: ResponseSpec(data_container=Problem, media_type=PROBLEM_JSON, description=_TITLES.get(status, "Error"))
        for status in sorted({*common, *statuses})
    }


def problem(
    request: Request[Any, Any, Any],
    status: int,
    title: str,
    detail: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Problem]:
    slug = title.lower().replace(" ", "-")
    body = Problem(f"https://schedsvc.dev/problems/{slug}", title, status, detail, request.url.path, errors)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def client_name(name: str, field: Any) -> str:
    """What the client calls a handler parameter (``from``, ``If-Match``), rather than its Python name."""
    definition = getattr(field, "kwarg_definition", None)
    if isinstance(definition, ParameterKwarg):
        return definition.query or definition.header or definition.name or name
    return name


def _validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    handler = request.scope.get("route_handler")  # every validation runs after routing; be sure, not sorry
    parameters = handler.parsed_fn_signature.parameters if handler is not None else {}
    errors = [
        field_from_message(str(e.get("message", "")), e.get("source"), _client_key(e, parameters))
        for e in extra
        if isinstance(e, dict)
    ]
    malformed = any("malformed" in f.message.lower() or "truncated" in f.message.lower() for f in errors)
    if malformed:
        return problem(request, 400, "Malformed JSON", "the request body is not valid JSON", errors)
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or str(exc.detail)
    # A body that decodes but breaks the schema is 422; bad query parameters or headers are 400.
    in_body = any(isinstance(e, dict) and e.get("source") in (None, "body") for e in extra)
    return problem(request, 422 if errors and in_body else 400, "Invalid request", detail, errors or None)


def _client_key(error: dict[str, Any], parameters: dict[str, Any]) -> str | None:
    """The client's name for the parameter an error is about; a body field keeps its own."""
    key = error.get("key")
    if not isinstance(key, str) or error.get("source") in (None, "body"):
        return key if isinstance(key, str) else None
    return client_name(key, parameters.get(key))


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    if exc.status_code >= 500:
        log.error("%s on %s %s: %r", exc.status_code, request.method, request.url.path, exc, exc_info=exc)
    headers = dict(exc.headers or {})
    if isinstance(exc, NotAuthorizedException):
        headers.setdefault("WWW-Authenticate", 'Bearer realm="schedsvc"')
    title = _TITLES.get(exc.status_code, "Error")
    errors = None
    if isinstance(exc.extra, dict) and "field" in exc.extra:
        errors = [FieldError(str(exc.extra["field"]), str(exc.detail))]
    return problem(request, exc.status_code, title, str(exc.detail), errors, headers or None)


def _domain(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    match exc:
        case InvalidRequestError():
            errors = [FieldError(field, message) for field, message in exc.problems]
            title = "Bad request" if exc.status == 400 else "Invalid request"
            return problem(request, exc.status, title, str(exc), errors)
        case InvalidCursorError():
            return problem(request, 400, "Bad request", f"cursor: {exc}", [FieldError("cursor", str(exc))])
        case InvalidScheduleError():
            return problem(request, 422, "Invalid request", f"{exc.field}: {exc}", [FieldError(exc.field, str(exc))])
        case JobNotFoundError():
            return problem(request, 404, "Not found", "no such job")
        case RunNotFoundError():
            return problem(request, 404, "Not found", "no such run")
        case JobActionRefusedError() | RunRetryRefusedError():
            return problem(request, 409, "Conflict", str(exc))
        case DuplicateJobNameError():
            return problem(request, 409, "Conflict", str(exc), [FieldError("name", str(exc))])
        case VersionConflictError():
            return problem(request, 412, "Precondition failed", "the job changed since the version in If-Match")
        case IdempotencyInProgressError():
            # Not the client's mistake: the first request is still being performed; the same one later is fine.
            return problem(request, 409, "Conflict", str(exc), [FieldError("Idempotency-Key", str(exc))])
        case IdempotencyConflictError():
            return problem(request, 422, "Idempotency key reused", str(exc), [FieldError("Idempotency-Key", str(exc))])
        case AuthenticationError():
            return problem(
                request, 401, "Unauthorized", str(exc), headers={"WWW-Authenticate": 'Bearer realm="schedsvc"'}
            )
        case TenantExistsError():
            return problem(request, 409, "Conflict", str(exc))
        case InfrastructureUnavailableError():
            # An outage, not a bug: one line without a traceback, and the client is told when to retry.
            log.warning("%s is unavailable on %s %s: %s", exc.what, request.method, request.url.path, exc)
            headers = {"Retry-After": str(exc.retry_after_seconds)}
            return problem(request, 503, "Service unavailable", f"{exc.what} is unavailable", headers=headers)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(request, HTTP_500_INTERNAL_SERVER_ERROR, "Internal error", "an unexpected error occurred")


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    ValidationException: _validation,
    HTTPException: _http,
    SchedsvcError: _domain,
    Exception: _domain,
}

__all__ = [
    "EXCEPTION_HANDLERS",
    "PROBLEM_JSON",
    "FieldError",
    "Problem",
    "field_from_message",
    "problem",
    "problem_responses",
]
