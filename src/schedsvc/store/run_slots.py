"""The job slot of overlaps ``skip`` and ``bufferOne``: at most one fire of a job runs at a time.

The slot is one small document per job in the runs collection (``_id`` = ``<jobId>:running``, no
``jobId`` or ``tenant`` field, so no history listing returns it): claiming it is one atomic conditional
upsert, so of several fires delivered together exactly one gets it. Its lease follows the run's, so a
worker that dies does not block the job for longer than an ack deadline; a TTL index removes a slot
some time after its lease.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from schedsvc import names
from schedsvc.domain.models import RunMessage, run_id
from schedsvc.domain.runs import BufferedFire
from schedsvc.store._client import translate_errors

# A job slot outlives its lease by this much before the TTL index removes it.
_SLOT_EXPIRY = timedelta(days=1)


def slot_id(job_id: str) -> str:
    return f"{job_id}:running"


@translate_errors
class MongoJobSlots:
    """Each job's single running slot, held by one run id under a lease."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._runs = db[names.RUNS]

    async def acquire(self, job_id: str, rid: str, now: datetime, lease_until: datetime) -> bool:
        """Take the job's slot for run ``rid``; False if another run of the job holds it under a live lease."""
        slot = slot_id(job_id)
        fields = {"holder": rid, "leaseUntil": lease_until, "expireAt": lease_until + _SLOT_EXPIRY}
        try:
            await self._runs.update_one(
                {"_id": slot, "leaseUntil": {"$not": {"$gt": now}}}, {"$set": fields}, upsert=True
            )
            return True
        except DuplicateKeyError:
            # Held under a live lease: by this very run (a redelivery) or by another one.
            result = await self._runs.update_one({"_id": slot, "holder": rid}, {"$set": fields})
            return bool(result.matched_count)

    async def extend(self, job_id: str, rid: str, lease_until: datetime) -> None:
        """Extend the lease of the slot ``rid`` holds (a no-op if another run holds it)."""
        await self._runs.update_one(
            {"_id": slot_id(job_id), "holder": rid},
            {"$set": {"leaseUntil": lease_until, "expireAt": lease_until + _SLOT_EXPIRY}},
        )

    async def release(self, job_id: str, rid: str) -> None:
        """Free the slot if ``rid`` holds it."""
        await self._runs.delete_one({"_id": slot_id(job_id), "holder": rid})

    # Overlap ``bufferOne`` (docs/design/run-history.md, "One fire waits"): the slot document also holds
    # the one fire waiting behind its holder (``buffered``: the fire's message and partition). Waiting is
    # one conditional write on the slot; a holder's final outcome hands the slot straight to the waiting
    # fire (one conditional write), and the worker then publishes a wake-up for it.

    async def buffer_behind(
        self, message: RunMessage, partition: int, now: datetime
    ) -> Literal["buffered", "full", "free"]:
        """Wait behind the run holding the job's slot: ``buffered`` (this fire waits, or already did),
        ``full`` (another fire waits: this one is skipped) or ``free`` (the slot was released meanwhile)."""
        slot, rid = slot_id(message.job_id), run_id(message.job_id, message.scheduled_ms)
        entry = {
            "runId": rid,
            "tenant": message.tenant,
            "scheduledMs": message.scheduled_ms,
            "dueMs": message.due_ms,
            "trigger": message.trigger,
            "partition": partition,
        }
        result = await self._runs.update_one(
            {"_id": slot, "holder": {"$ne": rid}, "leaseUntil": {"$gt": now}, "buffered": None},
            {"$set": {"buffered": entry}},
        )
        if result.matched_count:
            return "buffered"
        doc = await self._runs.find_one({"_id": slot}, {"holder": 1, "leaseUntil": 1, "buffered": 1})
        if doc is None or doc.get("holder") == rid or not (doc.get("leaseUntil") and doc["leaseUntil"] > now):
            return "free"
        return "buffered" if (doc.get("buffered") or {}).get("runId") == rid else "full"

    async def unbuffer(self, job_id: str, rid: str) -> None:
        """The fire holding the slot no longer waits behind it (it took a lapsed slot while buffered)."""
        await self._runs.update_one(
            {"_id": slot_id(job_id), "holder": rid, "buffered.runId": rid}, {"$unset": {"buffered": ""}}
        )

    async def hand_over(self, job_id: str, rid: str, lease_until: datetime) -> BufferedFire | None:
        """Run ``rid`` is final: free its job's slot, or give it to the fire waiting behind it (under a lease
        until ``lease_until``) and return that fire, for the caller to wake. A no-op for a non-holder."""
        slot = slot_id(job_id)
        for _ in range(3):  # each round loses only to a fire buffering meanwhile
            doc = await self._runs.find_one({"_id": slot, "holder": rid}, {"buffered": 1})
            if doc is None:
                return None
            waiting = doc.get("buffered")
            if not waiting or waiting.get("runId") == rid:  # nobody waits (but perhaps this run, still marked)
                unchanged = {"buffered": None} if not waiting else {"buffered.runId": rid}
                deleted = await self._runs.delete_one({"_id": slot, "holder": rid, **unchanged})
                if deleted.deleted_count:
                    return None
                continue
            handed = await self._runs.update_one(
                {"_id": slot, "holder": rid, "buffered.runId": waiting["runId"]},
                {
                    "$set": {
                        "holder": waiting["runId"],
                        "leaseUntil": lease_until,
                        "expireAt": lease_until + _SLOT_EXPIRY,
                    },
                    "$unset": {"buffered": ""},
                },
            )
            if handed.matched_count:
                # int(): a BSON int64 may come back as bson.Int64, which msgpack does not encode.
                scheduled_ms, due_ms = int(waiting["scheduledMs"]), int(waiting["dueMs"])
                message = RunMessage(job_id, str(waiting["tenant"]), scheduled_ms, due_ms, str(waiting["trigger"]), 0)
                return BufferedFire(message, int(waiting["partition"]))
        return None
