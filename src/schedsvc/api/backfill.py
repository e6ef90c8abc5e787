"""``POST /jobs/{id}/backfill``: run the past fires of a job's schedule in a range, on request.

Each fire is published as the scheduled fire would have been (run id ``<jobId>:<scheduledMs>``, message id
the same), with trigger ``backfill``, and then goes through execution like any fire: the job's overlap
policy, retries and run history apply. The run id makes a backfill idempotent: a fire that already has a
run is not published again, and one published twice within the stream's duplicate window is dropped by
JetStream (and, beyond it, finds its run in the ledger). Fires recorded ``missed`` are what a backfill is
for: their runs reopen and run.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.spec import Example
from litestar.params import FromPath

from schedsvc.api import openapi
from schedsvc.api.errors import problem_responses
from schedsvc.domain.errors import InvalidRequestError
from schedsvc.domain.models import RunMessage, RunTrigger
from schedsvc.domain.time import utcnow
from schedsvc.domain.wire import MAX_BACKFILL_FIRES, BackfillAccepted, BackfillRequest
from schedsvc.store.base import JobRepository, RunHistory, RunPublisher
from schedsvc.timing import fires_in_range, to_ms

_EXAMPLE = Example(
    summary="The fires of one November day",
    value={"from": "2026-11-27T00:00:00Z", "to": "2026-11-27T23:59:59Z"},
)


class BackfillController(Controller):
    path = "/jobs"
    tags = ["jobs"]

    @post(
        "/{job_id:str}/backfill",
        summary=f"Run the job's fires in a past range (at most {MAX_BACKFILL_FIRES}), recorded as backfill runs",
        operation_id="backfillJob",
        status_code=202,
        responses={**problem_responses(404, 422), 202: openapi.success(BackfillAccepted, "Queued")},
    )
    async def backfill_job(
        self,
        request: Request[str, str, State],
        jobs: NamedDependency[JobRepository],
        runs: NamedDependency[RunHistory],
        run_queue: NamedDependency[RunPublisher],
        job_id: FromPath[str],
        data: Annotated[BackfillRequest, openapi.body(_EXAMPLE)],
    ) -> BackfillAccepted:
        tenant = request.user
        job = await jobs.get(tenant, job_id)  # 404 for another tenant's job, as for a missing one
        now = utcnow()
        if data.to > now:
            raise InvalidRequestError([("to", "must not be in the future: a backfill runs past fires")])
        fires = fires_in_range(job.schedule, job.created_at, data.from_, data.to, MAX_BACKFILL_FIRES + 1)
        if len(fires) > MAX_BACKFILL_FIRES:
            raise InvalidRequestError(
                [("to", f"the range holds more than {MAX_BACKFILL_FIRES} fires; backfill it in several requests")]
            )
        due_ms = to_ms(now)
        pending = await runs.open_backfill(tenant, job.id, fires, now)
        messages = [RunMessage(job.id, tenant, ms, due_ms, RunTrigger.BACKFILL.value, 0) for ms in pending]
        queued = await run_queue.publish_runs(messages, [jobs.partition_of(job.id)] * len(messages)) if messages else 0
        return BackfillAccepted(job.id, len(fires), queued)
