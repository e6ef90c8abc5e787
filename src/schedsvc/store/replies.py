"""Answers kept under a client's ``Idempotency-Key``, so a repeated request is answered, not performed again.

The one owner of the idempotency collection (``POST /jobs`` and ``POST /runs/retry`` both keep their
answers here). One document per (tenant, operation, key), its ``_id`` a small document
``{tenant, op, key}``. The first request claims the key, performs the operation and keeps its answer; a
repeat with the same body gets that answer. A claim whose request died before answering may be taken over
once :data:`PENDING_FOR` has passed.

An operation whose answer is known before it is performed (creating a job: its id is chosen first) keeps
it with the claim (``claim(..., answer=...)``), so a repeat after a crash between the write and
:meth:`MongoReplies.keep` finds the job instead of creating a second one.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import msgspec
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from schedsvc import names
from schedsvc.domain.errors import IdempotencyConflictError, IdempotencyInProgressError
from schedsvc.store._client import translate_errors

KEPT_FOR = timedelta(hours=24)
"""How long an answer is kept."""
PENDING_FOR = timedelta(seconds=60)
"""How long a claimed key waits for its answer before a repeat may perform the operation itself."""


def request_hash(request: object) -> str:
    """The fingerprint of a request body (a msgspec Struct or plain data) that a repeat must match."""
    return hashlib.sha256(msgspec.json.encode(request)).hexdigest()


def _key(tenant: str, operation: str, key: str) -> dict[str, str]:
    return {"tenant": tenant, "op": operation, "key": key}


@translate_errors
class MongoReplies:
    """The ``ReplyStore`` port over MongoDB."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._replies = db[names.IDEMPOTENCY]

    async def claim(
        self, tenant: str, operation: str, key: str, request: object, now: datetime, *, answer: bytes | None = None
    ) -> bytes | None:
        """None when this request is to perform the operation; the kept answer of the first one otherwise.

        ``answer``, when given, is kept with the claim (an answer known before the operation is performed).
        Raises :class:`IdempotencyConflictError` when the key came with another body, and
        :class:`IdempotencyInProgressError` when its first request is still being performed.
        """
        _id = _key(tenant, operation, key)
        fingerprint = request_hash(request)
        claim = {"requestHash": fingerprint, "reply": answer, "pendingUntil": now + PENDING_FOR}
        try:
            await self._replies.insert_one({"_id": _id, **claim, "expireAt": now + KEPT_FOR})
            return None
        except DuplicateKeyError:
            pass
        existing = await self._replies.find_one({"_id": _id})
        if existing is None:  # expired between the two calls
            return await self.claim(tenant, operation, key, request, now, answer=answer)
        if existing.get("requestHash") != fingerprint:
            raise IdempotencyConflictError("Idempotency-Key was already used with a different request body")
        if existing.get("reply") is not None:
            return bytes(existing["reply"])
        taken = await self._replies.update_one(
            {"_id": _id, "reply": None, "requestHash": fingerprint, "pendingUntil": {"$lt": now}},
            {"$set": claim},
        )
        if taken.modified_count:
            return None
        raise IdempotencyInProgressError("a request with this Idempotency-Key is still in progress; repeat it later")

    async def keep(self, tenant: str, operation: str, key: str, reply: bytes) -> None:
        """Keep the answer of the request that claimed the key."""
        await self._replies.update_one({"_id": _key(tenant, operation, key)}, {"$set": {"reply": reply}})

    async def release(self, tenant: str, operation: str, key: str, *, answer: bytes | None = None) -> None:
        """The claiming request failed without an answer: the key is free for a repeat. ``answer``: the one
        given to :meth:`claim` (only that claim is released, not a later request's)."""
        await self._replies.delete_one({"_id": _key(tenant, operation, key), "reply": answer})
