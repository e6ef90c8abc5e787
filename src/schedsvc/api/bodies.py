"""Reading requests as a hostile client may send them: before any handler runs, a request is checked whole.

Litestar converts JSON bodies leniently (``"60"`` becomes 60, ``0`` a 1970 timestamp), stops at the first
invalid field, and lets decoder errors it does not expect (invalid UTF-8, nesting deeper than the decoder's
recursion limit) become 500s. This hook, run as the app's ``before_request``, answers all of those with a
problem detail before the handler's own (lenient) conversion runs, so that conversion only ever sees
bodies that already passed the strict one:

- a body the operation requires must be there (400), JSON (415 otherwise), UTF-8 and parseable (400), at most
  :data:`~schedsvc.domain.limits.MAX_DOCUMENT_DEPTH` levels deep (400);
- every integer fits in 64 bits and no object key holds NUL, anywhere (422, each field named);
- the body is converted strictly, one top-level field at a time, so every invalid field is listed (422);
- query parameters the operation does not declare are refused (400), rather than silently ignored, and so is a
  single-valued one given more than once.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
from litestar import Request
from litestar.exceptions import HTTPException
from litestar.params import QueryParameter

from schedsvc.api.errors import client_name, field_from_message
from schedsvc.domain.errors import InvalidRequestError
from schedsvc.domain.limits import MAX_DOCUMENT_DEPTH, MAX_REPORTED_PROBLEMS, json_problems

_BODY_METHODS = ("POST", "PUT", "PATCH")


async def check_request(request: Request[Any, Any, Any]) -> None:
    """The app's ``before_request``: raise a problem for anything the handler must not see."""
    handler = request.route_handler
    _check_query(request, _declared_query(handler))
    if request.method not in _BODY_METHODS:
        return
    data_field = handler.parsed_data_field
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if has_body:
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise HTTPException(status_code=415, detail="the request body must be application/json")
    if data_field is None:
        return
    raw = await request.body() if has_body else b""
    if raw:
        check_body(raw, data_field.annotation)
    elif not (data_field.is_optional or data_field.has_default):
        # Litestar's own answer names its parameter ("'data'"), which means nothing to the client.
        raise InvalidRequestError([("body", "this request needs a JSON body")], status=400)


def check_body(raw: bytes, body_type: Any) -> Any:
    """Decode ``raw`` strictly as ``body_type``; :class:`InvalidRequestError` lists every problem."""
    try:
        document = msgspec.json.decode(raw)
    except UnicodeDecodeError:
        raise InvalidRequestError([("body", "the body is not valid UTF-8")], status=400) from None
    except RecursionError:
        raise InvalidRequestError(
            [("body", f"the body is nested deeper than {MAX_DOCUMENT_DEPTH} levels")], status=400
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError([("body", f"the body is not valid JSON: {exc}")], status=400) from None
    problems = json_problems(document, "", MAX_DOCUMENT_DEPTH)
    if problems:
        raise InvalidRequestError([(field or "body", message) for field, message in problems])
    try:  # the common case, a valid body: one conversion; the field-by-field listing only for invalid ones
        return msgspec.convert(document, body_type, strict=True)
    except msgspec.ValidationError:
        pass
    problems = _struct_problems(document, body_type)
    if problems:
        raise InvalidRequestError(problems[:MAX_REPORTED_PROBLEMS])
    return msgspec.convert(document, body_type, strict=True)


def _struct_problems(document: Any, body_type: Any) -> list[tuple[str, str]]:
    """Every invalid top-level field of a Struct body (msgspec alone stops at the first one)."""
    if not (isinstance(body_type, type) and issubclass(body_type, msgspec.Struct)) or not isinstance(document, dict):
        return _convert_problems(document, body_type, "")
    fields = msgspec.structs.fields(body_type)
    known = {f.encode_name: f for f in fields}
    problems: list[tuple[str, str]] = []
    for name in document:
        if name not in known and body_type.__struct_config__.forbid_unknown_fields:
            problems.append((name, f"unknown field `{name}`"))
    for f in fields:
        if f.encode_name in document:
            problems += _convert_problems(document[f.encode_name], f.type, f.encode_name)
        elif f.required:
            problems.append((f.encode_name, f"missing required field `{f.encode_name}`"))
    if not problems:  # checks across fields (``__post_init__``) run on the whole body
        problems = _convert_problems(document, body_type, "")
    return problems


def _convert_problems(value: Any, target_type: Any, field: str) -> list[tuple[str, str]]:
    try:
        msgspec.convert(value, target_type, strict=True)
    except msgspec.ValidationError as exc:
        error = field_from_message(str(exc), "body", "")  # "": no path of its own (the field itself)
        path = ".".join(p for p in (field, error.field) if p) or "body"
        return [(path, error.message)]
    return []


class _DeclaredQuery(NamedTuple):
    names: frozenset[str]
    repeatable: frozenset[str]
    """The ones declared as lists (``metadata``): every other one is taken once."""


def _declared_query(handler: Any) -> _DeclaredQuery:
    """The query parameters a handler declares, computed once and kept in its ``opt`` (user data)."""
    declared: _DeclaredQuery | None = handler.opt.get("schedsvc_query")
    if declared is None:
        fields = {
            client_name(name, fd): fd
            for name, fd in handler.parsed_fn_signature.parameters.items()
            if isinstance(fd.kwarg_definition, QueryParameter)
        }
        repeatable = frozenset(name for name, fd in fields.items() if fd.is_non_string_sequence)
        declared = handler.opt["schedsvc_query"] = _DeclaredQuery(frozenset(fields), repeatable)
    return declared


def _check_query(request: Request[Any, Any, Any], declared: _DeclaredQuery) -> None:
    problems: list[tuple[str, str]] = []
    accepted = ", ".join(sorted(declared.names)) or "none"
    for name in sorted(request.query_params):
        if name not in declared.names:
            problems.append((name, f"unknown query parameter (accepted: {accepted})"))
        elif name not in declared.repeatable and len(values := request.query_params.getall(name)) > 1:
            # Litestar would take one of them, or a value that matches nothing: say so instead.
            problems.append((name, f"given {len(values)} times; it takes one value"))
    if problems:
        raise InvalidRequestError(problems[:MAX_REPORTED_PROBLEMS], status=400)
