"""Revocations and secret rotations reach every replica through NATS within about a second, and failed
authentications are limited per client address before the database is asked.

Two real app instances (each with its own NATS subscription and caches) share MongoDB, NATS and Redis;
revocations and rotations go through the real command line in a subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from tests.conftest import DEV_KEY, api_settings
from tests.support import servers

from schedsvc.api import create_app
from schedsvc.bus import NatsRunBus
from schedsvc.config import Settings
from schedsvc.execution._tenants import TenantDirectory
from schedsvc.store import MongoTenantStore, connect, database
from schedsvc.store.tenants import new_api_key

# Far below the caches' lifetime (300 s): only the pushed notice can make a replica refuse this fast.
PUSH_DEADLINE_SECONDS = 2.0


def cli(settings: Settings, *args: str) -> str:
    env = {
        **os.environ,
        "SCHEDSVC_MONGODB_URI": settings.mongodb_uri,
        "SCHEDSVC_DATABASE": settings.database,
        "SCHEDSVC_NATS_URL": settings.nats_url,
        "SCHEDSVC_PREFIX": settings.prefix,
    }
    result = subprocess.run(
        [sys.executable, "-m", "schedsvc.cli", "tenants", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def refused_everywhere(clients: list[AsyncTestClient[Any]], headers: dict[str, str]) -> float:
    """Seconds until every client answers 401 for ``headers`` (fails after the deadline)."""
    started = time.monotonic()
    while True:
        statuses = [(await c.get("/jobs", headers=headers)).status_code for c in clients]
        if all(s == 401 for s in statuses):
            return time.monotonic() - started
        assert time.monotonic() - started < PUSH_DEADLINE_SECONDS, f"still accepted: {statuses}"
        await asyncio.sleep(0.05)


async def test_a_revoked_key_is_refused_by_every_replica_at_once(settings: Settings, drop_database: None) -> None:
    own = api_settings(settings)
    async with AsyncTestClient(create_app(own)) as a, AsyncTestClient(create_app(own)) as b:
        mongo = connect(settings)
        store = MongoTenantStore(database(mongo, settings))
        await store.create_tenant("acme")
        one, two = await store.create_key("acme"), await store.create_key("acme")
        await mongo.close()
        headers = {"Authorization": f"Bearer {one.key}"}
        others = {"Authorization": f"Bearer {two.key}"}
        for client in (a, b):  # both replicas now hold both keys in their caches
            assert (await client.get("/jobs", headers=headers)).status_code == 200
            assert (await client.get("/jobs", headers=others)).status_code == 200

        assert f"revoked key {one.key_id}" in cli(settings, "revoke", one.key_id)
        await refused_everywhere([a, b], headers)
        for client in (a, b):  # only the revoked key went
            assert (await client.get("/jobs", headers=others)).status_code == 200

        cli(settings, "revoke", "--tenant", "acme")
        await refused_everywhere([a, b], others)


async def test_a_rotated_signing_secret_is_used_at_once(settings: Settings, mongo_db: Any) -> None:
    store = MongoTenantStore(mongo_db)
    await store.create_tenant("acme")
    bus = await NatsRunBus.connect(settings)
    try:
        directory = TenantDirectory(store, settings, bus)
        unfollow = await directory.follow(bus)
        before = (await directory.delivery("acme")).signing_keys
        assert (await directory.delivery("acme")).signing_keys == before  # cached
        printed = cli(settings, "rotate-secret", "acme").strip().rsplit("whsec_", 1)[1]
        new_key = base64.b64decode(printed)
        started = time.monotonic()
        while (await directory.delivery("acme")).signing_keys[0] != new_key:
            assert time.monotonic() - started < PUSH_DEADLINE_SECONDS, "the rotated secret is not used yet"
            await asyncio.sleep(0.05)
        assert (await directory.delivery("acme")).signing_keys == (new_key, before[0])
        await unfollow()
    finally:
        await bus.close()


async def _fail(client: AsyncTestClient[Any], times: int) -> list[int]:
    return [
        (await client.get("/jobs", headers={"Authorization": f"Bearer {new_api_key()}"})).status_code
        for _ in range(times)
    ]


@pytest.mark.filterwarnings("ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning")
async def test_failed_authentication_is_limited_before_the_database_is_asked(
    settings: Settings, tmp_path: Path
) -> None:
    for attempt in range(2):  # a fixed window may roll over mid-test; then try once more
        mongo = servers.secantus(tmp_path / f"mongo-{attempt}")
        mongo.start()
        try:
            own = api_settings(
                settings,
                mongodb_uri=f"mongodb://127.0.0.1:{mongo.port}/?directConnection=true",
                failed_auth_per_minute=3,
            )
            async with AsyncTestClient(create_app(own)) as client:
                window = int(time.time() // 60)
                assert (await client.get("/jobs", headers={"Authorization": f"Bearer {DEV_KEY}"})).status_code == 200
                statuses = await _fail(client, 3)
                # The database is gone: only an answer that never asks it can be a clean 429.
                mongo.stop()
                r = await client.get("/jobs", headers={"Authorization": f"Bearer {new_api_key()}"})
                if int(time.time() // 60) != window:
                    continue
                assert statuses == [401] * 3
                assert r.status_code == 429, r.text
                assert r.headers["content-type"].startswith("application/problem+json")
                assert 1 <= int(r.headers["retry-after"]) <= 60
                return
        finally:
            mongo.stop()
    pytest.fail("the window rolled over twice")


async def test_failed_authentication_limit_is_shared_through_redis(
    settings: Settings, redis_url: str, drop_database: None
) -> None:
    own = api_settings(settings, redis_url, failed_auth_per_minute=4)
    for _attempt in range(2):  # a fixed window may roll over mid-test; then try once more
        window = int(time.time() // 60)
        async with AsyncTestClient(create_app(own)) as a, AsyncTestClient(create_app(own)) as b:
            statuses = await _fail(a, 2) + await _fail(b, 2) + await _fail(a, 1) + await _fail(b, 1)
        if int(time.time() // 60) != window:
            continue
        assert statuses == [401] * 4 + [429, 429]
        return
    pytest.fail("the window rolled over twice")
