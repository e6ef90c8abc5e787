"""``POST /schedules/preview``: check a schedule before creating a job."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, post

from schedsvc.api import openapi
from schedsvc.api.errors import problem_responses
from schedsvc.domain.errors import InvalidScheduleError
from schedsvc.domain.time import utcnow
from schedsvc.domain.wire import PreviewRequest, PreviewResponse
from schedsvc.timing import upcoming_fires


class SchedulesController(Controller):
    path = "/schedules"
    tags = ["schedules"]

    @post(
        "/preview",
        status_code=200,
        summary="Preview the next fires of a schedule (an API key is optional)",
        operation_id="previewSchedule",
        security=openapi.KEY_OPTIONAL,
        responses={**problem_responses(422), 200: openapi.success(PreviewResponse, "The fires", openapi.FIRES)},
    )
    async def preview(self, data: Annotated[PreviewRequest, openapi.body(openapi.PREVIEW)]) -> PreviewResponse:
        try:
            fires = upcoming_fires(data.schedule, data.after or utcnow(), data.count)
        except InvalidScheduleError:
            raise
        except (OverflowError, OSError, ValueError):  # fires beyond year 9999 (a datetime ends there)
            raise InvalidScheduleError("the schedule's fires leave the years 1-9999", "after") from None
        return PreviewResponse(fires)
