"""The client's pure parts: what it sends, when it waits, and that it imports nothing of the server."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import msgspec
import pytest
from tests.unit.samples import a_job

from schedsvc.client import AsyncClient, Client, RequestRetry, RunListFilters
from schedsvc.client import _protocol as protocol
from schedsvc.client._retry import retry_after_seconds
from schedsvc.client.errors import ApiError, NotFoundError, PreconditionFailedError
from schedsvc.domain.models import CronSchedule, JobCreate, JobPatch, NatsTarget
from schedsvc.domain.wire import JobList

SERVER_PACKAGES = ("litestar", "pymongo", "nats", "redis", "granian", "prometheus_client", "schedsvc._timing")


def test_the_client_imports_none_of_the_servers_dependencies() -> None:
    blocker = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name in {SERVER_PACKAGES!r} or name.split(".")[0] in {SERVER_PACKAGES!r}:
                    raise ImportError("server dependency imported: " + name)
        sys.meta_path.insert(0, Block())
        import schedsvc.client, schedsvc.client.cli, schedsvc.client.webhooks
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr


def test_if_match_comes_from_the_job_held_or_an_explicit_version() -> None:
    held = a_job(id="j/1", version=4)
    assert protocol.update_job(held, JobPatch(tags=[]), None).headers == {"If-Match": '"4"'}
    assert protocol.update_job(held, JobPatch(), 7).headers == {"If-Match": '"7"'}
    assert protocol.delete_job("j/1", None).headers == {}
    assert protocol.pause_job("j/1", 2).headers == {"If-Match": '"2"'}
    assert protocol.get_job("j/1").path == "/jobs/j%2F1"  # an id is one path segment, whatever it holds


def test_creates_carry_a_fresh_idempotency_key_unless_given() -> None:
    body = JobCreate(name="n", schedule=CronSchedule(expression="* * * * *"), target=NatsTarget(subject="tenant.a.b"))
    first, second = protocol.create_job(body, None), protocol.create_job(body, None)
    assert first.headers["Idempotency-Key"] != second.headers["Idempotency-Key"]
    assert protocol.create_job(body, "mine").headers["Idempotency-Key"] == "mine"


@pytest.mark.parametrize(
    ("status", "headers", "done", "expected"),
    [
        (429, {"Retry-After": "2"}, 0, 2.0),
        (503, {}, 0, 0.5),
        (503, {}, 2, 2.0),
        (503, {"Retry-After": "120"}, 0, None),  # longer than the bound: the caller decides
        (429, {"Retry-After": "1"}, 3, None),  # retries spent
        (500, {"Retry-After": "1"}, 0, None),  # not a "come back later"
        (412, {}, 0, None),
    ],
)
def test_retry_delay(status: int, headers: dict[str, str], done: int, expected: float | None) -> None:
    assert RequestRetry(max_retries=3, max_wait_seconds=30).delay(status, headers, done) == expected


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)
    header = {"Retry-After": format_datetime(now + timedelta(seconds=7), usegmt=True)}
    assert retry_after_seconds(header, now=now.timestamp()) == pytest.approx(7)
    assert retry_after_seconds({"Retry-After": "soon"}) is None


def test_problems_become_typed_errors_even_when_a_proxy_answered() -> None:
    body = b'{"type":"t","title":"Not found","status":404,"detail":"no such job"}'
    error = protocol.problem_error(404, {"X-Request-Id": "r1"}, body)
    assert isinstance(error, NotFoundError) and isinstance(error, LookupError)
    assert (error.request_id, str(error)) == ("r1", "404 Not found: no such job")
    proxy = protocol.problem_error(502, {}, b"<html>Bad Gateway</html>")
    assert type(proxy) is ApiError and proxy.status == 502 and "Bad Gateway" in str(proxy)
    fields = b'{"type":"t","title":"Precondition failed","status":412,"errors":[{"field":"If-Match","message":"x"}]}'
    conflict = protocol.problem_error(412, {}, fields)
    assert isinstance(conflict, PreconditionFailedError) and conflict.fields == ["If-Match"]


def test_the_next_page_is_the_same_query_from_the_cursor() -> None:
    first = protocol.list_jobs({"status": "active", "tag": "t", "metadata": {"team": "a"}}, 2, None)
    following = protocol.next_page(first, JobList([a_job()], "c2"))
    assert following is not None and following.params == {**first.params, "cursor": "c2"}
    assert protocol.next_page(first, JobList([a_job()], None)) is None


def test_run_filters_become_the_query_and_the_retry_body() -> None:
    since = datetime(2026, 11, 1, tzinfo=UTC)
    filters: RunListFilters = {"status": "failed", "job": a_job(id="j1"), "trigger": "manual", "scheduled_from": since}
    listed = protocol.list_tenant_runs(filters, 5, None)
    assert listed.params == {
        "status": "failed",
        "job": "j1",
        "trigger": "manual",
        "limit": "5",
        "from": since.isoformat(),
    }
    retried = protocol.retry_runs({"job": "j1", "scheduled_to": since}, 20, None, "k")
    assert retried.content is not None
    body = msgspec.json.decode(retried.content)
    assert (body["job"], body["to"], body["trigger"], body["limit"]) == ("j1", "2026-11-01T00:00:00Z", None, 20)


def test_a_misspelt_filter_raises_before_anything_is_sent() -> None:
    """``**filters`` would take any keyword: a typo must not widen a listing (or a retry batch) to everything."""
    sent: list[httpx.Request] = []
    with httpx.Client(base_url="http://svc", transport=_paged_service(sent)) as http, Client(http=http) as client:
        with pytest.raises(TypeError, match="'stauts'"):
            client.list_jobs(stauts="paused")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="'status'"):
            client.retry_runs(status="failed")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="'tags'"):
            client.iter_jobs(tags="t")  # type: ignore[call-arg]  # at the call, not at the first item
    with pytest.raises(TypeError, match="'tags'"):
        AsyncClient(http=httpx.AsyncClient(base_url="http://svc")).iter_jobs(tags="t")  # type: ignore[call-arg]
    assert sent == []


def _paged_service(sent: list[httpx.Request]) -> httpx.MockTransport:
    """Two pages of jobs, the first after a 503 asking to come back at once."""
    pages = {None: JobList([a_job(id="a")], "c2"), "c2": JobList([a_job(id="b")], None)}

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if len(sent) == 1:
            return httpx.Response(503, headers={"Retry-After": "0"})
        return httpx.Response(200, content=msgspec.json.encode(pages[request.url.params.get("cursor")]))

    return httpx.MockTransport(answer)


def test_the_sync_client_retries_and_follows_the_pages() -> None:
    sent: list[httpx.Request] = []
    http = httpx.Client(base_url="http://svc", transport=_paged_service(sent))
    with Client(api_key="k", http=http, retry=RequestRetry(backoff_seconds=0)) as client:
        assert [job.id for job in client.iter_jobs(tag="t", page_size=1)] == ["a", "b"]
    assert [r.url.params.get("cursor") for r in sent] == [None, None, "c2"]
    assert {r.headers["Authorization"] for r in sent} == {"Bearer k"}
    assert not http.is_closed  # the caller's own client stays open
    http.close()


async def test_the_async_client_retries_and_follows_the_pages() -> None:
    sent: list[httpx.Request] = []
    http = httpx.AsyncClient(base_url="http://svc", transport=_paged_service(sent))
    async with AsyncClient(api_key="k", http=http, retry=RequestRetry(backoff_seconds=0)) as client:
        assert [job.id async for job in client.iter_jobs(tag="t", page_size=1)] == ["a", "b"]
    assert [r.url.params.get("cursor") for r in sent] == [None, None, "c2"]
    assert not http.is_closed
    await http.aclose()


def test_the_sync_and_async_clients_offer_the_same_calls() -> None:
    def calls(cls: type) -> set[str]:
        return {name for name in vars(cls) if not name.startswith("_")} - {"close", "aclose"}

    assert calls(Client) == calls(AsyncClient)
    assert {"create_job", "iter_jobs", "iter_runs", "preview_schedule", "run_job_now"} <= calls(Client)


@pytest.mark.parametrize("name", sorted({n for n in vars(Client) if not n.startswith("_")} - {"close"}))
def test_each_async_call_is_its_sync_twin_awaited(name: str) -> None:
    """The twins each declare the public calls (typed Python cannot derive one from the other); this keeps
    the two declarations one contract: the same parameters, the same documentation, the same answer."""
    blocking, awaited = getattr(Client, name), getattr(AsyncClient, name)
    assert inspect.signature(blocking).parameters == inspect.signature(awaited).parameters
    assert blocking.__doc__ == awaited.__doc__
    answer = inspect.signature(blocking).return_annotation
    assert inspect.signature(awaited).return_annotation == answer.replace("Iterator[", "AsyncIterator[")
    # A call is awaited; a listing is iterated with ``async for`` (built at the call, so its arguments are
    # checked there, as the blocking twin's are).
    assert inspect.iscoroutinefunction(awaited) or answer.startswith("Iterator[")
