"""Every pattern a request field must match is said in words when a value misses it."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from schedsvc.domain import patterns
from schedsvc.domain.models import JobCreate, JobPatch
from schedsvc.domain.tenants import TenantSettingsPatch
from schedsvc.domain.wire import BulkJobAction, field_from_message


def _patterns_in(schema: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(schema, dict):
        if isinstance(schema.get("pattern"), str):
            found.add(schema["pattern"])
        for value in schema.values():
            found |= _patterns_in(value)
    elif isinstance(schema, list):
        for value in schema:
            found |= _patterns_in(value)
    return found


def test_every_pattern_of_the_request_bodies_has_its_words() -> None:
    bodies = (JobCreate, JobPatch, BulkJobAction, TenantSettingsPatch)
    used = set().union(*(_patterns_in(msgspec.json.schema(body)) for body in bodies))
    assert used, "the bodies declare patterns"
    unworded = {p for p in used if patterns.in_words(f"Expected `str` matching regex {p!r}").startswith("Expected")}
    assert unworded == set(), json.dumps(sorted(unworded))


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"name": "a\nb"}, "name", "must not contain control characters"),
        ({"tags": ["a b"]}, "tags.0", "may hold only letters, digits"),
        ({"schedule": {"kind": "calendar", "every": 1, "unit": "days", "time": "7am"}}, "schedule.time", "HH:MM"),
        ({"schedule": {"kind": "once", "at": "soon"}}, "schedule.at", "such as 2026-11-29T06:00:00Z"),
    ],
)
def test_a_mismatch_names_the_field_and_says_what_it_must_look_like(body: Any, field: str, words: str) -> None:
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.convert(body, JobPatch)
    error = field_from_message(str(raised.value), "body", "data")
    assert error.field == field and words in error.message, error
