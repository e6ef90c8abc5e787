"""Performing a job's target once: an HTTP call or a NATS publish, with the run's identity headers.

One shared ``httpx.AsyncClient`` (connection pooling, keep-alive) serves every run of the process. Its
connections go through :class:`~schedsvc.execution.addresses.GuardedTransport`, which checks the resolved
address of every connection; redirects are followed here, by hand, at most :data:`MAX_REDIRECTS` hops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import msgspec

from schedsvc.config import Settings
from schedsvc.domain.models import AttemptErrorClass, HttpTarget, JsonBody, NatsTarget, Target
from schedsvc.domain.signing import signature_headers
from schedsvc.domain.targets import target_problems
from schedsvc.execution.addresses import AddressRefusedError, GuardedTransport
from schedsvc.store.base import RunBus

MAX_REDIRECTS = 5
CONNECT_TIMEOUT_SECONDS = 10.0
NATS_PUBLISH_TIMEOUT_SECONDS = 10.0
USER_AGENT = "schedsvc-webhooks/1"
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Dropped when a redirect leaves the job's origin, as browsers and httpx do.
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling: the run's identity and the tenant's credentials for this attempt."""

    run_id: str
    job_id: str
    tenant: str
    scheduled_at: datetime
    attempt: int
    signing_keys: Sequence[bytes] = ()
    subject_grants: Sequence[str] = ()

    def identity_headers(self) -> dict[str, str]:
        """Sent with every call, HTTP and NATS alike."""
        return {
            "Idempotency-Key": self.run_id,
            "X-Schedsvc-Job-Id": self.job_id,
            "X-Schedsvc-Scheduled-Time": rfc3339(self.scheduled_at),
            "X-Schedsvc-Attempt": str(self.attempt),
        }


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """The result of one attempt. ``retryable`` is False for failures another attempt cannot fix."""

    succeeded: bool
    started_at: datetime
    finished_at: datetime
    http_status: int | None = None
    error: str | None = None
    response_snippet: str | None = None
    retryable: bool = True
    refusal: str | None = None
    """The address-policy reason when the call was refused."""
    error_class: AttemptErrorClass | None = None
    """Why it failed, for the run history (None when it succeeded)."""


def rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_body(body: JsonBody) -> tuple[bytes, str | None]:
    """The bytes sent and their default content type: strings as they are, objects and arrays as JSON."""
    if body is None:
        return b"", None
    if isinstance(body, str):
        return body.encode(), None
    return msgspec.json.encode(body), "application/json"


class TargetCaller:
    """Calls targets; owns the shared HTTP client (close it with :meth:`aclose`)."""

    def __init__(self, settings: Settings, bus: RunBus, *, verify_tls: bool = True) -> None:
        self._settings = settings
        self._bus = bus
        limits = httpx.Limits(
            max_connections=max(1, settings.max_concurrent_runs),
            max_keepalive_connections=max(1, settings.max_concurrent_runs),
            keepalive_expiry=30.0,
        )
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(settings.target_allow_networks, limits, verify=verify_tls),
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(self, target: Target, ctx: CallContext) -> CallOutcome:
        # The target policy the API applied when the job was stored, applied again: the tenant's grants
        # or the deployment's allowed networks may have changed since, or the document been edited.
        problems = target_problems(
            target,
            allow=self._settings.target_allow_networks,
            grants=ctx.subject_grants,
            reserved_roots=self._bus.names.reserved_subject_roots,
        )
        if problems:
            reason = "; ".join(f"{field}: {message}" for field, message in problems)
            return self._failed(
                datetime.now(UTC), f"target refused: {reason}", "refused", retryable=False, refusal="policy"
            )
        if isinstance(target, HttpTarget):
            return await self._call_http(target, ctx)
        return await self._call_nats(target, ctx)

    # -- HTTP -------------------------------------------------------------------------------------

    async def _call_http(self, target: HttpTarget, ctx: CallContext) -> CallOutcome:
        started = datetime.now(UTC)
        try:
            async with asyncio.timeout(target.timeout_seconds):
                status, snippet, error = await self._exchange(target, ctx)
        except TimeoutError:
            return self._failed(started, f"timed out after {target.timeout_seconds:g}s", "timeout")
        except AddressRefusedError as exc:
            return self._failed(started, str(exc), "refused", retryable=False, refusal=exc.reason)
        except httpx.TimeoutException as exc:
            return self._failed(started, f"{_phase(exc)} timed out", "timeout")
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError, TypeError) as exc:
            # A URL or header the request cannot be built from: another attempt would fail the same way.
            return self._failed(
                started, f"invalid request: {type(exc).__name__}: {exc}", "invalid_request", retryable=False
            )
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return self._failed(started, error, "connection")
        finished = datetime.now(UTC)
        if error is not None:
            return CallOutcome(
                False, started, finished, status, error, snippet, retryable=False, error_class="invalid_request"
            )
        allowed = target.success_statuses
        ok = status in allowed if allowed else 200 <= status < 300
        return CallOutcome(
            ok,
            started,
            finished,
            status,
            None if ok else f"HTTP {status}",
            snippet,
            error_class=None if ok else "http_status",
        )

    async def _exchange(self, target: HttpTarget, ctx: CallContext) -> tuple[int, str | None, str | None]:
        """Send the request, following redirects; returns (status, snippet, non-retryable error)."""
        body, default_type = encode_body(target.body)
        job_headers = dict(target.headers)  # the target policy has refused every header the service owns
        if default_type and not any(k.lower() == "content-type" for k in job_headers):
            job_headers["Content-Type"] = default_type
        timestamp = int(time.time())
        method: str = target.method
        url = httpx.URL(target.url)
        origin = (url.scheme, url.host, url.port)
        timeout = httpx.Timeout(target.timeout_seconds, connect=min(CONNECT_TIMEOUT_SECONDS, target.timeout_seconds))
        for hop in range(MAX_REDIRECTS + 1):
            if url.scheme not in ("http", "https"):
                return 0, None, f"refused to follow a redirect to a {url.scheme!r} URL"
            headers = httpx.Headers(job_headers)
            for name, value in ctx.identity_headers().items():
                headers[name] = value
            for name, value in signature_headers(ctx.signing_keys, ctx.run_id, timestamp, body).items():
                headers[name] = value
            headers["Accept-Encoding"] = "identity"  # the read cap counts bytes on the wire, not inflated ones
            request = self._client.build_request(method, url, headers=headers, content=body, timeout=timeout)
            response = await self._client.send(request, stream=True)
            try:
                status = response.status_code
                location = response.headers.get("location")
                explicit = target.success_statuses is not None and status in target.success_statuses
                if status in _REDIRECT_STATUSES and location and not explicit:
                    if hop == MAX_REDIRECTS:
                        return status, None, f"too many redirects (more than {MAX_REDIRECTS})"
                    url = url.join(location)
                    if status == 303 or (status in (301, 302) and method == "POST"):
                        method, body = "GET", b""
                        job_headers = {k: v for k, v in job_headers.items() if k.lower() != "content-type"}
                    if (url.scheme, url.host, url.port) != origin:
                        job_headers = {k: v for k, v in job_headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
                    continue
                snippet = await self._read_capped(response)
                return status, snippet, None
            finally:
                await response.aclose()
        raise AssertionError("unreachable")

    async def _read_capped(self, response: httpx.Response) -> str | None:
        cap = self._settings.response_read_cap_bytes
        keep = min(cap, self._settings.response_snippet_bytes)
        received = bytearray()
        # Raw bytes: reading stops at the cap, and closing the response then drops the connection
        # instead of draining an unbounded body.
        async for chunk in response.aiter_raw():
            received += chunk[: cap - len(received)]
            if len(received) >= cap:
                break
        if not received or keep <= 0:
            return None
        return bytes(received[:keep]).decode("utf-8", errors="replace")

    # -- NATS -------------------------------------------------------------------------------------

    async def _call_nats(self, target: NatsTarget, ctx: CallContext) -> CallOutcome:
        started = datetime.now(UTC)
        payload, default_type = encode_body(target.payload)
        headers = dict(target.headers)
        if default_type and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = default_type
        headers.update(ctx.identity_headers())
        try:
            async with asyncio.timeout(NATS_PUBLISH_TIMEOUT_SECONDS):
                await self._bus.publish_raw(target.subject, payload, headers)
        except TimeoutError:
            return self._failed(started, "NATS publish timed out", "timeout")
        except Exception as exc:  # nats-py raises several unrelated types
            return self._failed(started, f"NATS publish failed: {type(exc).__name__}: {exc}", "nats")
        return CallOutcome(True, started, datetime.now(UTC))

    @staticmethod
    def _failed(
        started: datetime,
        error: str,
        error_class: AttemptErrorClass,
        retryable: bool = True,
        refusal: str | None = None,
    ) -> CallOutcome:
        return CallOutcome(
            False,
            started,
            datetime.now(UTC),
            error=error,
            retryable=retryable,
            refusal=refusal,
            error_class=error_class,
        )


def _phase(exc: httpx.TimeoutException) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connecting"
    if isinstance(exc, httpx.ReadTimeout):
        return "reading the response"
    if isinstance(exc, httpx.WriteTimeout):
        return "sending the request"
    return "waiting for a connection"
