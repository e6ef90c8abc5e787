"""An index for a job's runs by status, newest first (``GET /runs?job=J&status=failed``, ``POST /runs/retry``
with ``job``), replacing its prefix ``job_status``.

The tenant-wide lists (the console's failures, ``GET /runs?status=...``) are served by m0002's
``tenant_status_history``: MongoDB's planner reads a few statuses of it as one index scan per status,
merged in ``scheduledAt`` order ("explode for sort"), with no blocking sort. A job's failures had no such
index: ``tenant_status_history`` walks every failure of the tenant to find one job's, ``job_history``
walks the job's successes, and ``job_status`` ({jobId, status}) finds them but sorts them all in memory.
"""

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from schedsvc import names
from schedsvc.config import Settings

VERSION = 3
DESCRIPTION = "a job's run history by status (replaces job_status)"
INDEX_NOT_FOUND = 27


async def apply(db: AsyncDatabase[dict[str, object]], settings: Settings) -> None:
    runs = db[names.RUNS]
    await runs.create_indexes(
        [
            IndexModel(
                [("jobId", ASCENDING), ("status", ASCENDING), ("scheduledAt", DESCENDING), ("_id", DESCENDING)],
                name="job_status_history",
            ),
        ]
    )
    # Its prefix answers nothing the new index does not (no query sorts {jobId, status} otherwise), and
    # every run write would keep both up to date.
    try:
        await runs.drop_index("job_status")
    except OperationFailure as exc:
        if exc.code != INDEX_NOT_FOUND:
            raise
