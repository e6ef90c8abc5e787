"""An index of the runs reopened for a retry on demand and still waiting for their attempt (``reopenedAt``),
so execution's sweeper (``execution/sweeper.py``) reads only those few.

A reopen marks its run with ``reopenedAt``; the attempt's claim, a final outcome or an undone reopen clears
it. The index is sparse: every other run (a success, a failure, a run waiting for an automatic retry) has
no ``reopenedAt`` and no entry, so the index stays as small as the set of pending reopens, and a run write
that does not touch the field costs it nothing.
"""

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from schedsvc import names
from schedsvc.config import Settings

VERSION = 4
DESCRIPTION = "runs reopened for a retry on demand, waiting for their attempt (the sweeper's)"


async def apply(db: AsyncDatabase[dict[str, object]], settings: Settings) -> None:
    await db[names.RUNS].create_indexes([IndexModel([("reopenedAt", ASCENDING)], name="reopened_waiting", sparse=True)])
