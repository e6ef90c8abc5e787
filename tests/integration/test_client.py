"""``schedsvc.client`` against the real service over HTTP (``schedsvc serve``, every module), checked
against the service's own OpenAPI document; and the docs page, which must load nothing from elsewhere."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import ipaddress
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from tests.conftest import DEV_KEY, create_tenant, running_service
from tests.support import servers

from schedsvc.api import openapi
from schedsvc.client import (
    OPERATIONS,
    ApiError,
    AsyncClient,
    Client,
    ConflictError,
    CronSchedule,
    Delivery,
    HttpTarget,
    IntervalSchedule,
    InvalidDeliveryError,
    Job,
    JobCreate,
    JobPatch,
    JobStatus,
    NatsTarget,
    NotFoundError,
    PreconditionFailedError,
    RateLimitedError,
    RequestRetry,
    RunStatus,
    RunTrigger,
    ServiceUnavailableError,
    UnauthorizedError,
    UnprocessableError,
    verify_delivery,
)
from schedsvc.config import Settings
from schedsvc.store import MongoTenantStore, connect, database
from schedsvc.testing import Reply, WebhookReceiver

LIMITED = "limited"
LIMIT_PER_MINUTE = 3


@dataclasses.dataclass
class Service:
    url: str
    key: str
    limited_key: str
    settings: Settings


@pytest.fixture(scope="module")
async def service(
    service_settings: Callable[..., Settings], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    settings = service_settings(
        "client",  # each module using this fixture has its own
        partitions=8,
        rate_limit_overrides={LIMITED: LIMIT_PER_MINUTE},
        target_allow_networks=(ipaddress.ip_network("127.0.0.0/8"),),
    )
    with running_service(settings, tmp_path_factory.mktemp("client") / "service.log") as server:
        yield Service(server.url, DEV_KEY, await create_tenant(settings, LIMITED), settings)


@pytest.fixture
async def client(service: Service) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(service.url, service.key) as c:
        yield c


def new_job(name: str, **overrides: Any) -> JobCreate:
    fields: dict[str, Any] = {
        "name": name,
        "schedule": CronSchedule(expression="0 9 * * MON-FRI", timezone="Europe/Berlin"),
        "target": NatsTarget(subject="tenant.dev.client-tests"),
    }
    fields.update(overrides)
    return JobCreate(**fields)


async def test_every_job_operation_round_trips(client: AsyncClient, unique: str) -> None:
    job = await client.create_job(new_job(f"{unique}-crud", tags=["client"]))
    assert isinstance(job, Job)
    assert (job.status, job.version, job.tags) == (JobStatus.ACTIVE, 1, ["client"])
    assert await client.get_job(job.id) == job

    changed = await client.update_job(job, JobPatch(tags=["client", "changed"]))
    assert (changed.version, changed.tags) == (2, ["client", "changed"])
    with pytest.raises(PreconditionFailedError):  # `job` holds version 1: a lost update is refused
        await client.update_job(job, JobPatch(tags=["stale"]))

    paused = await client.pause_job(changed)
    assert (paused.status, paused.version) == (JobStatus.PAUSED, 3)
    resumed = await client.resume_job(paused)
    assert resumed.status == JobStatus.ACTIVE

    with pytest.raises(PreconditionFailedError):
        await client.delete_job(paused)  # stale version
    await client.delete_job(resumed)
    with pytest.raises(NotFoundError) as missing:
        await client.get_job(job.id)
    assert isinstance(missing.value, LookupError)


async def test_iterators_follow_next_cursor(client: AsyncClient, unique: str) -> None:
    created = [(await client.create_job(new_job(f"{unique}-page-{i}", tags=[unique]))).id for i in range(5)]
    seen = [job.id async for job in client.iter_jobs(tag=unique, page_size=2)]
    assert seen == created
    first = await client.list_jobs(tag=unique, limit=2)
    assert len(first.items) == 2 and first.next_cursor is not None
    assert [j.id async for j in client.iter_jobs(name=f"{unique}-page-3")] == [created[3]]


def test_sync_client_creates_once_per_idempotency_key_and_runs_now(service: Service, unique: str) -> None:
    with Client(service.url, service.key) as client:
        body = new_job(f"{unique}-sync")
        job = client.create_job(body, idempotency_key=f"{unique}-key")
        again = client.create_job(body, idempotency_key=f"{unique}-key")
        assert again.id == job.id
        with pytest.raises(UnprocessableError) as reused:  # same key, different body
            client.create_job(new_job(f"{unique}-other"), idempotency_key=f"{unique}-key")
        assert reused.value.fields == ["Idempotency-Key"]

        accepted = client.run_job_now(job)
        assert (accepted.job_id, accepted.trigger) == (job.id, RunTrigger.MANUAL)
        deadline = time.monotonic() + 30
        while True:
            runs = list(client.iter_runs(job, page_size=1))
            if runs and runs[0].status == RunStatus.SUCCEEDED:
                break
            assert time.monotonic() < deadline, f"the manual run never succeeded: {runs}"
            time.sleep(0.3)
        assert [r.id for r in runs] == [accepted.run_id]
        assert client.list_runs(job).items == runs

        # Backfill the working week of 2026-11-23 (09:00 Berlin, Monday to Friday): five fires, queued once.
        week = (datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 27, 23, tzinfo=UTC))
        backfill = client.backfill_job(job, *week)
        assert (backfill.job_id, backfill.fires, backfill.queued) == (job.id, 5, 5)
        assert client.backfill_job(job, *week).queued == 0
        with pytest.raises(UnprocessableError) as reversed_range:
            client.backfill_job(job, week[1], week[0])
        assert reversed_range.value.fields == ["to"]


async def test_problems_are_typed_and_name_every_field(client: AsyncClient, service: Service, unique: str) -> None:
    with pytest.raises(UnprocessableError) as bad:
        await client.create_job(new_job(f"{unique}-bad", schedule=IntervalSchedule(seconds=0)))
    assert bad.value.status == 422
    assert bad.value.fields == ["schedule.seconds"]
    assert "schedule.seconds" in str(bad.value) and "\n" not in str(bad.value)
    assert isinstance(bad.value, ValueError)

    with pytest.raises(UnprocessableError) as refused:
        await client.create_job(new_job(f"{unique}-ssrf", target=HttpTarget(url="http://10.0.0.1/hook")))
    assert refused.value.fields == ["target.url"]

    await client.create_job(new_job(f"{unique}-dup"))
    with pytest.raises(ConflictError) as dup:
        await client.create_job(new_job(f"{unique}-dup"))
    assert dup.value.fields == ["name"]

    async with AsyncClient(service.url, "sk_0000000000000000_" + "x" * 43) as stranger:
        with pytest.raises(UnauthorizedError) as denied:
            await stranger.list_jobs()
    assert isinstance(denied.value, PermissionError)


async def test_rate_limit_is_retried_within_bounds_then_raised(service: Service) -> None:
    # Retry-After here is the rest of the rate-limit minute: longer than this client's bound, so the
    # 429 reaches the caller at once, with the wait the service asked for.
    retry = RequestRetry(max_retries=3, max_wait_seconds=0.5)
    async with AsyncClient(service.url, service.limited_key, retry=retry) as limited:
        for _ in range(LIMIT_PER_MINUTE):
            await limited.list_jobs()
        started = time.monotonic()
        with pytest.raises(RateLimitedError) as limited_error:
            await limited.list_jobs()
        assert time.monotonic() - started < 5
    assert limited_error.value.retry_after is not None and 0 < limited_error.value.retry_after <= 60


async def test_preview_needs_no_key(service: Service) -> None:
    async with AsyncClient(service.url) as anonymous:
        berlin = CronSchedule(expression="0 2 * * *", timezone="Europe/Berlin")
        fires = await anonymous.preview_schedule(berlin, count=3)
    assert len(fires) == 3
    assert all(f.utcoffset() is not None and f.hour == 2 for f in fires)


# --- the client against the service's OpenAPI document ---------------------------------------------------


def _ref_name(schema: dict[str, Any]) -> str | None:
    """The component a schema points at (Litestar may wrap a $ref in allOf)."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[1]
    for key in ("allOf", "oneOf", "anyOf"):
        for part in schema.get(key, []):
            if name := _ref_name(part):
                return name
    return None


def _shape(schema: dict[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    return frozenset(schema.get("properties", {})), frozenset(schema.get("required", []))


def _components_of(types: list[type[Any]]) -> dict[str, dict[str, Any]]:
    _, components = msgspec.json.schema_components(types)
    return components


def test_the_client_covers_and_matches_the_openapi_document(service: Service) -> None:
    document = httpx.get(f"{service.url}/schema/openapi.json").json()
    served: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "health" not in operation.get("tags", []):  # probes: not a client's
                served[operation["operationId"]] = (method.upper(), path, operation)
    assert set(served) == set(OPERATIONS), "every operation has a client method, and no client method is stale"

    ours = _components_of([t for op in OPERATIONS.values() for t in (op.body, op.response) if t is not None])
    theirs = document["components"]["schemas"]
    for operation_id, op in OPERATIONS.items():
        method, path, operation = served[operation_id]
        assert (op.method, op.path) == (method, path), operation_id
        assert str(op.success) in operation["responses"], operation_id
        parameters = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
        assert {n for i, n in parameters if i == "query"} == set(op.query), operation_id
        assert {n for i, n in parameters if i == "header"} == set(op.headers), operation_id
        if op.body is not None:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert _ref_name(schema) == op.body.__name__, operation_id
        response = operation["responses"][str(op.success)]
        if op.response is None:
            assert "content" not in response, operation_id
        else:
            assert _ref_name(response["content"]["application/json"]["schema"]) == op.response.__name__
    # Every object the client decodes or sends has the document's fields, and the same required ones.
    compared = 0
    for name, schema in ours.items():
        if name in theirs and "properties" in schema:
            assert _shape(theirs[name]) == _shape(schema), name
            compared += 1
    assert compared >= 12, sorted(ours)


def test_every_protected_operation_declares_the_bearer_scheme(service: Service) -> None:
    document = httpx.get(f"{service.url}/schema/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
    (scheme,) = schemes
    for path, item in document["paths"].items():
        for operation in (o for o in item.values() if isinstance(o, dict)):
            if path.startswith("/jobs"):
                assert operation["security"] == [{scheme: []}], path
                assert re.fullmatch(r"[a-z]+[A-Z][A-Za-z]*", operation["operationId"]), operation["operationId"]
            if "requestBody" in operation:
                assert operation["requestBody"]["content"]["application/json"]["schema"]["examples"], path


# --- the docs page ------------------------------------------------------------------------------------------


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
def test_docs_page_loads_only_assets_the_service_serves(service: Service, page: str) -> None:
    with httpx.Client(base_url=service.url) as http:
        html = http.get(page)
        assert html.status_code == 200 and "SwaggerUIBundle" in html.text
        parser = _Assets()
        parser.feed(html.text)
        assert len(parser.urls) >= 4, parser.urls  # stylesheet, two scripts, icon
        for url in parser.urls:
            assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
            asset = http.get(url)
            assert asset.status_code == 200 and len(asset.content) > 500, url
        assert "/schema/openapi.json" in html.text or '"openapi"' in html.text


# --- receiving a real delivery --------------------------------------------------------------------------------


def receiver_app(secrets: list[str], received: list[Delivery]) -> Any:
    """The plain ASGI receiver of docs/client.md."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            delivery = verify_delivery(scope["headers"], body, secrets)
        except InvalidDeliveryError:
            status = 401
        else:
            received.append(delivery)  # do the work, keyed on delivery.run_id
            status = 204
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """An ASGI app on a loopback port, in this event loop (uvicorn); yields its base URL."""
    port = servers.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def receiver(service: Service) -> AsyncIterator[tuple[str, list[Delivery]]]:
    mongo = connect(service.settings)
    try:
        store = MongoTenantStore(database(mongo, service.settings))
        keys, _grants = await store.delivery_settings("dev", service.settings.nats_subject_grant)
    finally:
        await mongo.close()
    received: list[Delivery] = []
    secrets = ["whsec_" + base64.b64encode(k).decode() for k in keys]
    async with serving(receiver_app(secrets, received)) as url:
        yield f"{url}/hook", received


async def test_receiver_verifies_a_real_delivery(client: AsyncClient, receiver: tuple[str, list[Delivery]]) -> None:
    url, received = receiver
    job = await client.create_job(new_job("receiver", target=HttpTarget(url=url, body={"hello": "world"})))
    accepted = await client.run_job_now(job)
    deadline = time.monotonic() + 30
    while not received:
        assert time.monotonic() < deadline, "no verified delivery arrived"
        await asyncio.sleep(0.2)
    (delivery,) = received
    assert (delivery.run_id, delivery.job_id, delivery.attempt) == (accepted.run_id, job.id, 1)
    assert delivery.scheduled_at == accepted.scheduled_at
    runs = [r async for r in client.iter_runs(job)]
    assert runs[0].id == accepted.run_id


def test_receiver_refuses_tampered_stale_and_unsigned_requests() -> None:
    from schedsvc.domain.signing import signature_headers

    key = b"k" * 32
    secret = "whsec_" + base64.b64encode(key).decode()
    body = json.dumps({"hello": "world"}).encode()
    sent = int(time.time())
    headers = signature_headers([key], "job1:1795741200000", sent, body) | {"X-Schedsvc-Attempt": "2"}
    delivery = verify_delivery(headers, body, [secret])
    assert (delivery.job_id, delivery.attempt, delivery.scheduled_at.isoformat()) == (
        "job1",
        2,
        "2026-11-27T01:00:00+00:00",
    )
    upper = {k.upper(): v for k, v in headers.items()}
    assert verify_delivery(upper, body, ["whsec_" + base64.b64encode(b"o" * 32).decode(), secret]) == delivery
    for bad_headers, bad_body in [
        (headers, body + b" "),
        ({k: v for k, v in headers.items() if k != "webhook-signature"}, body),
        (signature_headers([key], "job1:1795741200000", sent - 3600, body), body),
        (signature_headers([key], "not-a-run-id", sent, body), body),
    ]:
        with pytest.raises(InvalidDeliveryError):
            verify_delivery(bad_headers, bad_body, [secret])
    assert issubclass(InvalidDeliveryError, PermissionError) and not issubclass(InvalidDeliveryError, ApiError)


# --- retries -------------------------------------------------------------------------------------------------


def refuse_then_create(refusals: list[Reply]) -> Any:
    """Answers ``POST /jobs`` with ``refusals`` first, then like the service (its documented example job).
    A stand-in, because the real service cannot be made to answer 503 or a short ``Retry-After`` on demand."""
    created = Reply(201, msgspec.json.encode(openapi.JOB.value), {"Content-Type": "application/json"})
    return lambda call, before: refusals[before] if before < len(refusals) else created


def busy(status: int, retry_after: str | None = None) -> Reply:
    body = msgspec.json.encode({"type": "about:blank", "title": "Busy", "status": status})
    headers = {"Content-Type": "application/problem+json"} | ({"Retry-After": retry_after} if retry_after else {})
    return Reply(status, body, headers)


async def test_429_and_503_are_retried_after_retry_after_with_one_idempotency_key() -> None:
    async with WebhookReceiver() as stand_in:
        stand_in.routes["/jobs"] = refuse_then_create([busy(429, "1"), busy(503), busy(503, "0")])
        async with AsyncClient(stand_in.url(""), DEV_KEY) as client:
            job = await client.create_job(new_job("retried"))
    assert job.name == "nightly-report"
    calls = stand_in.calls_to("/jobs")
    assert len(calls) == 4
    assert calls[1].at - calls[0].at >= 0.95, "Retry-After: 1 was not honoured"
    assert len({c.idempotency_key for c in calls}) == 1, "every retry must reuse the key"


async def test_retries_are_bounded() -> None:
    async with WebhookReceiver() as stand_in:
        stand_in.routes["/jobs"] = refuse_then_create([busy(503, "0")] * 10)
        async with AsyncClient(stand_in.url(""), retry=RequestRetry(max_retries=2)) as client:
            with pytest.raises(ServiceUnavailableError) as unavailable:
                await client.create_job(new_job("bounded"))
    assert len(stand_in.calls) == 3
    assert isinstance(unavailable.value, ConnectionError) and unavailable.value.retry_after == 0


def test_the_litestar_receiver_example() -> None:
    from litestar import Litestar, Request, post
    from litestar.exceptions import NotAuthorizedException
    from litestar.testing import TestClient

    from schedsvc.domain.signing import signature_headers

    key = b"s" * 32
    secrets = ["whsec_" + base64.b64encode(key).decode()]
    done: list[Delivery] = []

    @post("/hooks/report", status_code=204)
    async def report(request: Request[Any, Any, Any]) -> None:  # as in docs/client.md
        try:
            delivery = verify_delivery(request.headers, await request.body(), secrets)
        except InvalidDeliveryError:
            raise NotAuthorizedException("not a schedsvc delivery") from None
        done.append(delivery)

    body = b'{"report":"nightly"}'
    signed = signature_headers([key], "job9:1795741200000", int(time.time()), body) | {"X-Schedsvc-Attempt": "1"}
    with TestClient(Litestar([report])) as http:
        assert http.post("/hooks/report", content=body, headers=signed).status_code == 204
        assert http.post("/hooks/report", content=body + b"x", headers=signed).status_code == 401
    assert [(d.job_id, d.attempt) for d in done] == [("job9", 1)]
