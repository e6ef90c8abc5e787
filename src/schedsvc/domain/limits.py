"""Limits of what the service stores: the shapes MongoDB (BSON) can hold and the bounds the API promises.

Free-form values (a target's ``body`` and ``payload``) are arbitrary JSON, but every stored value must
survive a round trip through the database and back into a run: integers fit BSON's 64 bits, object keys
hold no NUL (BSON keys are C strings), nesting stays shallow enough for every decoder on the way (a
600-level body once made every delivery of its run fail). Instants must stay representable once their
offset is applied (``9999-12-31T23:00:00-14:00`` is year 10000 in UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_FREE_FORM_DEPTH = 32
"""Deepest nesting of arrays and objects inside a free-form field (``target.body``, ``target.payload``)."""
MAX_DOCUMENT_DEPTH = 64
"""Deepest nesting of a whole request body (the job's own structure plus a free-form field)."""
MAX_REPORTED_PROBLEMS = 50
"""A problem detail lists at most this many fields (a hostile body could otherwise name millions)."""

Problem = tuple[str, str]


def key_problem(key: str) -> str | None:
    """Why the database cannot hold ``key`` as an object key (or find it by path), or None: BSON keys are C
    strings, so a key holds no NUL."""
    return "object keys must not contain NUL" if "\x00" in key else None


def json_problems(value: Any, field: str, max_depth: int) -> list[Problem]:
    """What in a decoded JSON value the database cannot store or the API does not accept.

    Iterative (a deep value must not exhaust the Python stack here either). Paths are dotted, array
    items by index: ``target.body.items.3.n``.
    """
    problems: list[Problem] = []
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack and len(problems) < MAX_REPORTED_PROBLEMS:
        item, path, depth = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                problems.append((path, "integers must fit in 64 bits (-2^63 to 2^63-1)"))
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= max_depth:
            problems.append((path, f"nested deeper than {max_depth} levels"))
            continue
        if isinstance(item, list):
            stack.extend((v, f"{path}.{i}" if path else str(i), depth + 1) for i, v in enumerate(item))
            continue
        for key, v in item.items():
            child = f"{path}.{key}" if path else str(key)
            if problem := key_problem(str(key)):
                problems.append((child.replace("\x00", "\\u0000"), problem))
                continue
            stack.append((v, child, depth + 1))
    return problems


def instant_problem(instant: datetime) -> str | None:
    """Why an aware instant cannot be stored, or None: it must stay within years 1-9999 in UTC."""
    try:
        instant.astimezone(UTC)
    except OverflowError:
        return "the instant is outside years 1-9999 once converted to UTC"
    return None
