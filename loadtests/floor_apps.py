"""Minimal Litestar apps for ``loadtests/bench_floor.py``: ``GET /hello`` plus the least I/O a request that
reads the database can do, and nothing else (no middleware, no metrics, no cache logic).

granian runs one of them through the factory ``floor_apps:create_app``, chosen by ``FLOOR_APP``:

- ``redis``: one Redis round trip per request, an EVALSHA of a small script (count the request, read one
  key), the shape of the service's one-round-trip admission;
- ``mongo``: one pymongo ``find_one`` by ``_id``, with the service's own client options
  (:func:`schedsvc.store.connect`);
- ``both``: the Redis round trip, then the ``find_one``;
- ``full``: the service's bearer-header check against an in-process cache of validated keys (what its
  authentication does for a known key), then the Redis round trip, then the ``find_one``: the least an
  authenticated, uncached read can do.

The bare ``GET /hello`` is ``run_load.HELLO_APP``, unchanged. Configuration comes from the environment:
``FLOOR_MONGODB_URI``, ``FLOOR_DATABASE``, ``FLOOR_REDIS_URL``, ``FLOOR_PREFIX`` (Redis keys) and
``FLOOR_KEY`` (the one valid API key).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, get
from litestar.exceptions import NotAuthorizedException
from redis.asyncio import Redis

from schedsvc.api.auth import bearer_key
from schedsvc.config import Settings
from schedsvc.store import connect, database

KINDS = ("redis", "mongo", "both", "full")
COLLECTION = "floor_docs"
SEED_DOCS = 20

# KEYS[1] = this minute's request counter, KEYS[2] = a cache entry; ARGV[1] = the window in ms.
_ADMIT_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('GET', KEYS[2])}
"""


def seed_doc(i: int) -> dict[str, Any]:
    """A document about the size and shape of a job's, so that decoding it costs what a job's does."""
    return {
        "_id": f"doc-{i:03d}",
        "tenant": "floor",
        "name": f"seed-{i:03d}",
        "status": "active",
        "schedule": {"kind": "cron", "expression": "0 3 * * *", "timezone": "Europe/Berlin"},
        "target": {"kind": "http", "url": "https://hooks.example.com/x", "method": "POST", "headers": {}},
        "tags": ["team-a"],
        "metadata": {"owner": "floor", "rev": "00000000"},
        "version": 1,
    }


async def seed(mongodb_uri: str, database_name: str) -> None:
    """Write the documents the ``mongo`` and ``full`` apps read (replacing any from an earlier run)."""
    settings = Settings(mongodb_uri=mongodb_uri, database=database_name)
    client = connect(settings)
    try:
        docs = database(client, settings).get_collection(COLLECTION)
        await docs.delete_many({})
        await docs.insert_many([seed_doc(i) for i in range(SEED_DOCS)])
    finally:
        await client.close()


def create_app() -> Litestar:
    """The app named by ``FLOOR_APP`` (one of :data:`KINDS`)."""
    kind = os.environ["FLOOR_APP"]
    if kind not in KINDS:
        raise ValueError(f"FLOOR_APP={kind!r}: expected one of {', '.join(KINDS)}")
    settings = Settings(mongodb_uri=os.environ.get("FLOOR_MONGODB_URI", ""), database=os.environ["FLOOR_DATABASE"])
    prefix = os.environ["FLOOR_PREFIX"]
    valid_keys = {os.environ["FLOOR_KEY"]: "floor"}
    mongo = connect(settings) if kind in ("mongo", "both", "full") else None
    redis = Redis.from_url(os.environ["FLOOR_REDIS_URL"]) if kind in ("redis", "both", "full") else None
    # Built once, as the service's adapters hold theirs: a request only sends.
    docs = database(mongo, settings).get_collection(COLLECTION) if mongo is not None else None
    admit_script = redis.register_script(_ADMIT_SCRIPT) if redis is not None else None
    ids = itertools.cycle([seed_doc(i)["_id"] for i in range(SEED_DOCS)])

    async def admit() -> None:
        assert admit_script is not None
        window = int(time.time() // 60)
        await admit_script(keys=[f"{prefix}rl:{window}", f"{prefix}entry"], args=[60_000])

    async def read_doc() -> str:
        assert docs is not None
        doc = await docs.find_one({"_id": next(ids)})
        if doc is None:
            raise LookupError("the floor documents were not seeded")
        return str(doc["name"])

    @get("/hello")
    async def hello_redis() -> dict[str, str]:
        await admit()
        return {"hello": "world"}

    @get("/hello")
    async def hello_mongo() -> dict[str, str]:
        return {"hello": await read_doc()}

    @get("/hello")
    async def hello_both() -> dict[str, str]:
        await admit()
        return {"hello": await read_doc()}

    @get("/hello")
    async def hello_full(request: Request[Any, Any, Any]) -> dict[str, str]:
        key = bearer_key(request)
        if key is None or key not in valid_keys:
            raise NotAuthorizedException("unknown API key")
        await admit()
        return {"hello": await read_doc()}

    @asynccontextmanager
    async def clients(app: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if mongo is not None:
                await mongo.close()
            if redis is not None:
                await redis.aclose()

    handler = {"redis": hello_redis, "mongo": hello_mongo, "both": hello_both, "full": hello_full}[kind]
    return Litestar([handler], lifespan=[clients])
