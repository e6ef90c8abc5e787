"""Answers kept under a client's ``Idempotency-Key``, so a repeated request is answered, not performed again.

One document per (tenant, operation, key) in the idempotency collection, its ``_id`` a small document
``{tenant, op, key}`` (the job store's keys there are strings, so the two never meet). The first request
claims the key, performs the operation and keeps its answer; a repeat with the same body gets that answer.
A claim whose request died before answering may be taken over once :data:`PENDING_FOR` has passed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from schedsvc import names
from schedsvc.domain import IdempotencyConflictError
from schedsvc.store._client import translate_errors

KEPT_FOR = timedelta(hours=24)
"""How long an answer is kept (as for ``POST /jobs``)."""
PENDING_FOR = timedelta(seconds=60)
"""How long a claimed key waits for its answer before a repeat may perform the operation itself."""


def _key(tenant: str, operation: str, key: str) -> dict[str, str]:
    return {"tenant": tenant, "op": operation, "key": key}


@translate_errors
class MongoReplies:
    """The ``ReplyStore`` port over MongoDB."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._replies = db[names.IDEMPOTENCY]

    async def claim(self, tenant: str, operation: str, key: str, request_hash: str, now: datetime) -> bytes | None:
        """None when this request is to perform the operation; the kept answer of the first one otherwise.

        Raises :class:`IdempotencyConflictError` when the key came with another body, or its first request
        is still being performed.
        """
        _id = _key(tenant, operation, key)
        claim = {"requestHash": request_hash, "reply": None, "pendingUntil": now + PENDING_FOR}
        try:
            await self._replies.insert_one({"_id": _id, **claim, "expireAt": now + KEPT_FOR})
            return None
        except DuplicateKeyError:
            pass
        existing = await self._replies.find_one({"_id": _id})
        if existing is None:  # expired between the two calls
            return await self.claim(tenant, operation, key, request_hash, now)
        if existing.get("requestHash") != request_hash:
            raise IdempotencyConflictError("Idempotency-Key was already used with a different request body")
        if existing.get("reply") is not None:
            return bytes(existing["reply"])
        taken = await self._replies.update_one(
            {"_id": _id, "reply": None, "requestHash": request_hash, "pendingUntil": {"$lt": now}},
            {"$set": claim},
        )
        if taken.modified_count:
            return None
        raise IdempotencyConflictError("a request with this Idempotency-Key is still in progress")

    async def keep(self, tenant: str, operation: str, key: str, reply: bytes) -> None:
        """Keep the answer of the request that claimed the key."""
        await self._replies.update_one({"_id": _key(tenant, operation, key)}, {"$set": {"reply": reply}})

    async def release(self, tenant: str, operation: str, key: str) -> None:
        """The claiming request failed without an answer: the key is free for a repeat."""
        await self._replies.delete_one({"_id": _key(tenant, operation, key), "reply": None})
