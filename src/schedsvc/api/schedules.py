"""``POST /schedules/preview``: check a schedule before creating a job."""

from __future__ import annotations

from litestar import Controller, post
from litestar.params import JSONBody

from schedsvc.api.errors import problem_responses
from schedsvc.domain.wire import PreviewRequest, PreviewResponse
from schedsvc.store.jobs import utcnow
from schedsvc.timing import upcoming_fires


class SchedulesController(Controller):
    path = "/schedules"
    tags = ["schedules"]

    @post("/preview", status_code=200, summary="Preview the next fires of a schedule", responses=problem_responses(422))
    async def preview(self, data: JSONBody[PreviewRequest]) -> PreviewResponse:
        return PreviewResponse(upcoming_fires(data.schedule, data.after or utcnow(), data.count))
