"""``POST /schedules/preview``: check a schedule before creating a job."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, post
from litestar.params import JSONBody
from msgspec import Meta

from schedsvc.api.errors import problem_responses
from schedsvc.domain import InvalidScheduleError
from schedsvc.domain.limits import instant_problem
from schedsvc.domain.models import AwareDatetime, Schedule
from schedsvc.store.jobs import utcnow
from schedsvc.timing import upcoming_fires


class PreviewRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    schedule: Schedule
    after: AwareDatetime | None = None
    """Fires strictly after this instant (default: now)."""
    count: Annotated[int, Meta(ge=1, le=100)] = 10

    def __post_init__(self) -> None:
        problem = None if self.after is None else instant_problem(self.after)
        if problem:
            raise ValueError(f"after: {problem}")


class PreviewResponse(msgspec.Struct):
    fires: list[datetime]
    """Fire instants in the schedule's time zone (jitter not applied)."""


class SchedulesController(Controller):
    path = "/schedules"
    tags = ["schedules"]

    @post("/preview", status_code=200, summary="Preview the next fires of a schedule", responses=problem_responses(422))
    async def preview(self, data: JSONBody[PreviewRequest]) -> PreviewResponse:
        try:
            fires = upcoming_fires(data.schedule, data.after or utcnow(), data.count)
        except InvalidScheduleError:
            raise
        except (OverflowError, OSError, ValueError):  # fires beyond year 9999 (a datetime ends there)
            raise InvalidScheduleError("the schedule's fires leave the years 1-9999", "after") from None
        return PreviewResponse(fires)
