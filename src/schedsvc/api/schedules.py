"""``POST /schedules/preview``: check a schedule before creating a job."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, post
from litestar.params import JSONBody
from msgspec import Meta

from schedsvc.api.errors import problem_responses
from schedsvc.domain.models import AwareDatetime, Schedule
from schedsvc.domain.time import utcnow
from schedsvc.timing import upcoming_fires


class PreviewRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    schedule: Schedule
    after: AwareDatetime | None = None
    """Fires strictly after this instant (default: now)."""
    count: Annotated[int, Meta(ge=1, le=100)] = 10


class PreviewResponse(msgspec.Struct):
    fires: list[datetime]
    """Fire instants in the schedule's time zone (jitter not applied)."""


class SchedulesController(Controller):
    path = "/schedules"
    tags = ["schedules"]

    @post("/preview", status_code=200, summary="Preview the next fires of a schedule", responses=problem_responses(422))
    async def preview(self, data: JSONBody[PreviewRequest]) -> PreviewResponse:
        return PreviewResponse(upcoming_fires(data.schedule, data.after or utcnow(), data.count))
