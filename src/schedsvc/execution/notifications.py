"""Notifications: reporting events (a run failed for good, a job recovered, fires missed) and sending them.

Why through JetStream rather than an asyncio task in the process that saw the event: events are seen by
execution (failures, recoveries) and by timing (missed fires), on any replica. Publishing a small message
on the notification stream, with the event's id as message id, gives what "once per event" needs across
replicas and restarts: a repeated report of one event (a redelivered run failing again, a worker that
crashed between reporting and recording) is dropped as a duplicate; a report survives a restart of the
process that made it; and the durable consumer hands each event to one sender among the execution
replicas. Timing needs neither an HTTP client nor tenant secrets for it.

Notifications never affect runs: reporting is bounded by :data:`REPORT_TIMEOUT_SECONDS`, logged and
swallowed on failure; sending runs in its own tasks (at most :data:`MAX_CONCURRENT_SENDS`), with its
own HTTP client, a short timeout and :data:`SEND_ATTEMPTS` attempts, and is logged with the job id when
it gives up. Sends are at least once (a sender that dies after the call but before its ack sends again);
``webhook-id`` is the event id, so a receiver can drop a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import msgspec

from schedsvc.config import Settings
from schedsvc.domain.models import NotificationTarget, RunMessage
from schedsvc.domain.notifications import Notification, NotificationMessage, fires_missed, job_recovered, run_failed
from schedsvc.domain.signing import signature_headers
from schedsvc.domain.targets import notification_problems
from schedsvc.domain.time import from_ms
from schedsvc.domain.timing import MissedFire
from schedsvc.execution._pump import DeliveryPump
from schedsvc.execution._tenants import TenantDirectory
from schedsvc.execution.addresses import AddressRefusedError, GuardedTransport
from schedsvc.execution.targets import USER_AGENT
from schedsvc.observability.logging import job_id_var
from schedsvc.observability.metrics import NOTIFICATIONS
from schedsvc.store.base import Delivery, RunBus, RunLedger, Subscription

log = logging.getLogger(__name__)

REPORT_TIMEOUT_SECONDS = 2.0
"""Longest a run (or the timing pipeline) waits to hand an event to the stream."""
SEND_TIMEOUT_SECONDS = 5.0
"""Longest one notification call may take, connection included."""
SEND_ATTEMPTS = 3
"""Calls of one notification before it is given up (logged)."""
RETRY_DELAYS_SECONDS = (2.0, 10.0)
"""Wait before the second and the third call."""
MAX_CONCURRENT_SENDS = 8
ACK_WAIT_SECONDS = 30.0
FETCH_TIMEOUT_SECONDS = 1.0
FETCH_ERROR_PAUSE_SECONDS = 1.0
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class _Failure:
    """Why one call of a notification did not succeed, and whether calling again could change that."""

    reason: str
    retryable: bool = True


class NotificationReporter:
    """Hands events to the notification stream; never raises (a run's outcome does not depend on it)."""

    def __init__(self, bus: RunBus) -> None:
        self._bus = bus

    async def report(self, message: NotificationMessage) -> None:
        await self.report_many([message])

    async def report_many(self, messages: list[NotificationMessage]) -> None:
        """Publish the events at once, waiting at most :data:`REPORT_TIMEOUT_SECONDS` for them all."""
        if not messages:
            return
        publishing = asyncio.gather(*(self._bus.publish_notification(m) for m in messages), return_exceptions=True)
        try:
            outcomes = await asyncio.wait_for(publishing, REPORT_TIMEOUT_SECONDS)
        except TimeoutError:
            outcomes = [TimeoutError(f"not acknowledged within {REPORT_TIMEOUT_SECONDS:g}s")] * len(messages)
        lost = [(m, o) for m, o in zip(messages, outcomes, strict=True) if isinstance(o, BaseException)]
        for message, _ in lost:
            NOTIFICATIONS.labels(type=message.notification.type, outcome="unreported").inc()
        for message, error in lost[:10]:  # the event is lost, the run (or the timing pipeline) goes on
            event = message.notification
            log.warning("could not report %s of job %s: %s", event.type, event.job_id, error)
        if len(lost) > 10:
            log.warning("could not report %d more notification(s)", len(lost) - 10)

    async def missed(self, fires: list[MissedFire]) -> None:
        """Report fires a recording stored as missed: one event per job (the timing store calls this)."""
        await self.report_many(fires_missed(fires, datetime.now(UTC)))


class JobHealth:
    """What a run's final outcome means for notifications: a failure is reported and marks the job as
    failing; the first success after it clears the mark and reports the recovery. Never raises."""

    def __init__(self, reporter: NotificationReporter, runs: RunLedger) -> None:
        self._reporter = reporter
        self._runs = runs

    async def failed(self, msg: RunMessage, attempts: int, error: str | None, http_status: int | None) -> None:
        """Call before the failure is recorded (as the dead letter is published): a crash in between repeats
        the report, which the stream drops as a duplicate (same event id), and the mark (``$max``)."""
        now = datetime.now(UTC)
        event = run_failed(
            msg.tenant, msg.job_id, msg.scheduled_ms, attempts=attempts, error=error, http_status=http_status, now=now
        )
        await self._reporter.report(event)
        try:
            await self._runs.mark_job_failing(msg.job_id, from_ms(msg.scheduled_ms))
        except Exception as exc:
            log.warning("could not mark job %s as failing: %s: %s", msg.job_id, type(exc).__name__, exc)

    async def succeeded(self, msg: RunMessage, *, repeat: bool = False) -> None:
        """Call once the success is recorded, and again (``repeat``) for a redelivery of it. Clearing the mark
        is one conditional write (``job_codec.recovery_write``), so of several successes exactly one reports
        the recovery; a repeat of that success reports it again, in case its worker died before reporting.
        The stream drops a repeat within its 15-minute duplicate window (same event id); a later one reaches
        the receiver, which deduplicates on ``webhook-id`` (docs/webhooks.md)."""
        try:
            recovered = await self._runs.clear_job_failing(msg.job_id, from_ms(msg.scheduled_ms), repeat=repeat)
        except Exception as exc:
            log.warning("could not clear the failing mark of job %s: %s: %s", msg.job_id, type(exc).__name__, exc)
            return
        if recovered:
            await self._reporter.report(job_recovered(msg.tenant, msg.job_id, msg.scheduled_ms, datetime.now(UTC)))


class NotificationSender:
    """Consumes the notification stream and calls each event's target: the job's ``notify``, else the
    tenant's default. Start with :meth:`start`, stop with :meth:`stop`."""

    def __init__(self, settings: Settings, bus: RunBus, runs: RunLedger, tenants: TenantDirectory) -> None:
        self._settings = settings
        self._bus = bus
        self._runs = runs
        self._tenants = tenants
        self._subscription: Subscription[Delivery[NotificationMessage]] | None = None
        self._client: httpx.AsyncClient | None = None
        self._pump: DeliveryPump[Delivery[NotificationMessage]] | None = None

    async def start(self) -> None:
        self._subscription = await self._bus.notification_subscription(ACK_WAIT_SECONDS, SEND_ATTEMPTS)
        limits = httpx.Limits(max_connections=MAX_CONCURRENT_SENDS, keepalive_expiry=30.0)
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(self._settings.target_allow_networks, limits),
            follow_redirects=False,  # a notification target answers, it does not redirect
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
        )
        self._pump = DeliveryPump(
            self._subscription,
            self._send_and_settle,
            capacity=MAX_CONCURRENT_SENDS,
            batch_max=MAX_CONCURRENT_SENDS,
            fetch_timeout=FETCH_TIMEOUT_SECONDS,
            error_pause=FETCH_ERROR_PAUSE_SECONDS,
            what="notifications",
        )
        self._pump.start("schedsvc-notifications")

    async def stop(self) -> None:
        """Stop fetching and give the sends in flight their timeout; unacked events are sent again later."""
        if self._pump is not None:
            await self._pump.stop_fetching()
            await self._pump.drain(SEND_TIMEOUT_SECONDS + 1)
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.close()
        if self._client is not None:
            await self._client.aclose()

    async def _send_and_settle(self, delivery: Delivery[NotificationMessage]) -> None:
        event = delivery.message.notification
        token = job_id_var.set(event.job_id)  # every line logged here names the job
        try:
            tenant = await self._tenants.delivery(delivery.message.tenant)
            target = await self._target(delivery.message, tenant.notify)
            if target is None:  # neither the job nor its tenant asked to be told
                await delivery.ack()
                return
            failure = await self._send(event, target, tenant.signing_keys)
            if failure is None:
                await delivery.ack()
                NOTIFICATIONS.labels(type=event.type, outcome="sent").inc()
            elif not failure.retryable or delivery.num_delivered >= SEND_ATTEMPTS:
                NOTIFICATIONS.labels(type=event.type, outcome="given_up").inc()
                log.warning(
                    "notification %s (%s) of job %s not delivered after %d attempt(s): %s",
                    event.id,
                    event.type,
                    event.job_id,
                    delivery.num_delivered,
                    failure.reason,
                )
                await delivery.ack()
            else:
                await delivery.nak(RETRY_DELAYS_SECONDS[min(delivery.num_delivered, len(RETRY_DELAYS_SECONDS)) - 1])
        except Exception:
            log.warning("notification %s of job %s could not be handled", event.id, event.job_id, exc_info=True)
        finally:
            job_id_var.reset(token)

    async def _send(
        self, event: Notification, target: NotificationTarget, signing_keys: Sequence[bytes]
    ) -> _Failure | None:
        """Call the target once; None when it answered 2xx, else why not."""
        assert self._client is not None
        # The policy the API applied when the target was stored, applied again (the allowed networks may
        # have changed since); the address a name resolves to is checked at connect time.
        problems = notification_problems(target, allow=self._settings.target_allow_networks)
        if problems:
            reason = "; ".join(f"{field}: {message}" for field, message in problems)
            return _Failure(f"target refused: {reason}", retryable=False)
        body = _encode(event)
        headers = {**target.headers, "Content-Type": "application/json"}
        headers.update(signature_headers(signing_keys, event.id, int(time.time()), body))
        try:
            async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
                response = await self._client.post(target.url, content=body, headers=headers)
        except AddressRefusedError as exc:
            return _Failure(str(exc), retryable=False)
        except TimeoutError:
            return _Failure(f"timed out after {SEND_TIMEOUT_SECONDS:g}s")
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError, TypeError) as exc:
            return _Failure(f"invalid request: {type(exc).__name__}: {exc}", retryable=False)
        except httpx.HTTPError as exc:
            return _Failure(f"{type(exc).__name__}: {exc}")
        if 200 <= response.status_code < 300:
            return None
        return _Failure(f"HTTP {response.status_code}")

    async def _target(
        self, message: NotificationMessage, default: NotificationTarget | None
    ) -> NotificationTarget | None:
        """The job's own target, else the tenant's default (also for a job deleted since the event)."""
        try:
            job = await self._runs.job_for_run(message.notification.job_id)
        except msgspec.ValidationError:
            job = None
        if job is not None and job.tenant == message.tenant and job.notify is not None:
            return job.notify
        return default
