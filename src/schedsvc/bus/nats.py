"""NATS JetStream adapter: the run stream from timing to execution, dead letters, notifications,
job-change notices."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from schedsvc.bus.consumers import JetStreamNotificationSubscription, JetStreamRunSubscription
from schedsvc.config import Settings
from schedsvc.domain.errors import BusUnavailableError
from schedsvc.domain.jobs import JobNotice
from schedsvc.domain.lifecycle import MAX_DELIVERIES
from schedsvc.domain.models import RunMessage, run_id
from schedsvc.domain.notifications import NotificationMessage
from schedsvc.domain.tenants import TENANT_CHANGE_KINDS, TenantChangeKind
from schedsvc.names import Names

log = logging.getLogger(__name__)

# How long JetStream remembers a message id: a fire re-published within this window (a replica that
# crashed after publishing but before advancing nextRun) is dropped as a duplicate. Execution's run
# record is the second guard beyond it.
DEDUP_WINDOW_SECONDS = 15 * 60
RUN_RETENTION_SECONDS = 24 * 3600
"""The run stream's default age limit (``Settings.run_stream_max_age_seconds``)."""
ERROR_LOG_INTERVAL_SECONDS = 30.0
PUBLISH_TIMEOUT_SECONDS = 10.0
"""How long a batch of run messages may wait for its acks (plus 2 ms per message)."""

_encode_run = msgspec.msgpack.Encoder().encode
_encode_notice = msgspec.msgpack.Encoder().encode
_decode_notice = msgspec.msgpack.Decoder(JobNotice).decode
_encode_notification = msgspec.json.Encoder().encode
NOTIFICATION_RETENTION_SECONDS = 24 * 3600
DEAD_LETTER_RETENTION_SECONDS = 14 * 24 * 3600


def _stream(
    name: str,
    subjects: list[str],
    max_age: int,
    replicas: int,
    retention: RetentionPolicy = RetentionPolicy.LIMITS,
) -> StreamConfig:
    """One of the service's streams: on disk, and deduplicating message ids over ``DEDUP_WINDOW_SECONDS``
    (or its whole age, when shorter: JetStream refuses a longer window)."""
    return StreamConfig(
        name=name,
        subjects=subjects,
        retention=retention,
        storage=StorageType.FILE,
        max_age=max_age,
        duplicate_window=min(DEDUP_WINDOW_SECONDS, max_age),
        num_replicas=replicas,
    )


def _consumer(ack_wait_seconds: float, max_deliver: int, max_ack_pending: int | None = None) -> ConsumerConfig:
    """A durable pull consumer of the service: every message from the stream's first, acknowledged one by one."""
    return ConsumerConfig(
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_seconds,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
    )


class BusError(BusUnavailableError):
    """NATS or JetStream could not take a message."""


class _ErrorLog:
    """nats-py's error callback: one line per error, naming the server, without a traceback.

    The library's default logs a full traceback for every failed reconnect attempt, several a second
    while NATS is down; here an identical error is repeated at most every
    :data:`ERROR_LOG_INTERVAL_SECONDS`. Failures of the first connection are left to the caller, which
    logs one line per attempt.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.armed = False
        self._last: tuple[str, float] = ("", 0.0)

    async def log(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if self.armed and (text != self._last[0] or now - self._last[1] > ERROR_LOG_INTERVAL_SECONDS):
            self._last = (text, now)
            log.warning("NATS at %s: %s", self.url, text)


class NatsRunBus:
    """Publishes fires to the run stream and hands them to workers."""

    def __init__(self, nc: Client, names: Names, run_max_age_seconds: int = RUN_RETENTION_SECONDS) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.names = names
        self._run_max_age = run_max_age_seconds

    @classmethod
    async def connect(cls, settings: Settings, names: Names | None = None) -> NatsRunBus:
        """Connect once; :class:`BusError` (a :class:`BusUnavailableError`) when NATS cannot be reached.

        After the first connection the client reconnects by itself, for ever.
        """
        errors = _ErrorLog(settings.nats_url)
        try:
            # With unlimited reconnects, nats-py retries a failed *first* connection for ever inside
            # connect(), so a process started while NATS is down would never finish starting. The first
            # connection tries each server at most twice (the caller retries with backoff); reconnects
            # are unlimited once connected (the client reads the option whenever the connection drops).
            nc = await nats.connect(
                servers=[s.strip() for s in settings.nats_url.split(",")],
                name=f"schedsvc-{','.join(sorted(settings.roles))}",
                max_reconnect_attempts=1,
                reconnect_time_wait=0.5,
                connect_timeout=5,
                allow_reconnect=True,
                error_cb=errors.log,
            )
        except Exception as exc:  # nats raises OSError, NoServersError, TimeoutError, ...
            raise BusError(f"cannot connect: {type(exc).__name__}: {exc}") from None
        nc.options["max_reconnect_attempts"] = -1
        errors.armed = True
        return cls(nc, names or Names(settings.prefix), settings.run_stream_max_age_seconds)

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def close(self) -> None:
        if not self._nc.is_closed:
            await self._nc.drain()

    async def ensure_streams(self, replicas: int = 1) -> None:
        """Create or update the run and dead-letter streams (idempotent)."""
        n = self.names
        runs = _stream(n.run_stream, [f"{n.run_subject_root}.>"], self._run_max_age, replicas)
        # A run's dead letter has the id `<runId>:dead`: a retry on demand that fails again within the
        # deduplication window publishes no second one (JetStream's default window is only 2 minutes).
        dlq = _stream(n.dead_letter_stream, [n.dead_letter_subject], DEAD_LETTER_RETENTION_SECONDS, replicas)
        notifications = _stream(
            n.notification_stream,
            [n.notification_subject],
            NOTIFICATION_RETENTION_SECONDS,
            replicas,
            retention=RetentionPolicy.WORK_QUEUE,
        )
        try:
            for config in (runs, dlq, notifications):
                try:
                    await self._js.stream_info(config.name)  # type: ignore[arg-type]
                    await self._js.update_stream(config)
                except NotFoundError:
                    await self._js.add_stream(config)
        except Exception as exc:  # JetStream disabled or unavailable, a timeout, a lost connection
            raise BusError(f"cannot create the JetStream streams: {type(exc).__name__}: {exc}") from None

    async def publish_runs(
        self, messages: Sequence[RunMessage], partitions: Sequence[int], message_ids: Sequence[str] | None = None
    ) -> int:
        """Publish fires with message id ``jobId:scheduledMs``; return how many were new (not duplicates).

        ``message_ids`` replaces those ids.

        Raises :class:`BusError` if any publish was not acknowledged; the caller must not advance
        ``nextRun`` for a batch that failed (re-publishing is safe: duplicates are dropped).
        """
        outcomes = await self._publish(messages, partitions, message_ids)
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if errors:
            raise BusError(f"publishing runs failed ({len(errors)} of {len(outcomes)}): {errors[0]!r}") from errors[0]
        return sum(not ack.duplicate for ack in outcomes if isinstance(ack, PubAck))

    async def publish_each(
        self, messages: Sequence[RunMessage], partitions: Sequence[int], message_ids: Sequence[str]
    ) -> list[bool]:
        """Publish messages and say, for each, whether this call stored it (True) or not (False: refused,
        not acknowledged in time, or a duplicate of a message already in the stream).

        Never raises for a message: a batch can fail part way (JetStream stores each message on its own),
        and a caller that undoes what was not published must know which ones were.
        """
        try:
            outcomes = await self._publish(messages, partitions, message_ids)
        except BusError:
            return [False] * len(messages)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                log.warning("a run message was not published: %r", outcome)
        return [isinstance(outcome, PubAck) and not outcome.duplicate for outcome in outcomes]

    async def _publish(
        self, messages: Sequence[RunMessage], partitions: Sequence[int], message_ids: Sequence[str] | None
    ) -> list[PubAck | BaseException]:
        """Each message's ack, or why it has none; :class:`BusError` when none could even be sent."""
        # JetStream's asynchronous publish: every message goes out at once and the acks resolve futures
        # as they arrive, instead of a task and a timer per message (about 40 % less CPU per fire, and
        # the rate of a 100,000-fire burst follows; docs/benchmarks.md).
        names = self.names
        pending: list[asyncio.Future[PubAck]] = []
        try:
            for i, (msg, partition) in enumerate(zip(messages, partitions, strict=True)):
                msg_id = message_ids[i] if message_ids is not None else run_id(msg.job_id, msg.scheduled_ms)
                pending.append(
                    await self._js.publish_async(
                        names.run_subject(partition), _encode_run(msg), headers={"Nats-Msg-Id": msg_id}
                    )
                )
            if pending:
                await asyncio.wait(pending, timeout=PUBLISH_TIMEOUT_SECONDS + len(pending) / 500)
        except Exception as exc:  # nats raises several unrelated types; callers need one
            for future in pending:
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # retrieved, so asyncio does not log it as never retrieved
            raise BusError(f"publishing runs failed: {exc!r}") from exc
        outcomes: list[PubAck | BaseException] = []
        for future in pending:
            if not future.done():
                future.cancel()
                outcomes.append(TimeoutError("not acknowledged in time"))
            elif (error := future.exception()) is not None:
                outcomes.append(error)
            else:
                outcomes.append(future.result())
        outcomes += [BusError("not sent")] * (len(messages) - len(outcomes))
        return outcomes

    async def run_subscription(self, ack_wait_seconds: float, max_ack_pending: int) -> JetStreamRunSubscription:
        psub = await self._js.pull_subscribe(
            f"{self.names.run_subject_root}.>",
            durable=self.names.worker_consumer,
            stream=self.names.run_stream,
            # The worker gives up on a run after MAX_DELIVERIES (failed, dead-lettered); max_deliver is the
            # backstop for a worker that cannot even record that (JetStream then stops redelivering).
            config=_consumer(ack_wait_seconds, MAX_DELIVERIES + 10, max_ack_pending=max_ack_pending),
        )
        return JetStreamRunSubscription(psub, self._renew_run, self._run_max_age)

    async def _renew_run(self, msg: Msg) -> None:
        """Store a fresh copy of a run message (same subject and body, a message id of its own), with the
        stream's whole age ahead of it: for a run that must wait longer than its message would live."""
        original = (msg.headers or {}).get("Nats-Msg-Id", "")
        copy_id = f"{original}:renewed:{time.time_ns() // 1_000_000}"
        try:
            await self._js.publish(msg.subject, msg.data, headers={"Nats-Msg-Id": copy_id})
        except Exception as exc:
            raise BusError(f"renewing a run message failed: {exc!r}") from exc

    async def publish_dead_letter(self, payload: bytes, headers: dict[str, str]) -> None:
        try:
            await self._js.publish(self.names.dead_letter_subject, payload, headers=headers)
        except Exception as exc:
            raise BusError(f"dead-lettering failed: {exc!r}") from exc

    async def publish_notification(self, message: NotificationMessage) -> None:
        """Queue a notification for the senders; its id is the message id, so a repeated report of one
        event within the duplicate window is dropped by JetStream."""
        try:
            await self._js.publish(
                self.names.notification_subject,
                _encode_notification(message),
                headers={"Nats-Msg-Id": message.notification.id},
                timeout=PUBLISH_TIMEOUT_SECONDS,
            )
        except Exception as exc:
            raise BusError(f"publishing a notification failed: {exc!r}") from exc

    async def notification_subscription(
        self, ack_wait_seconds: float, max_deliver: int
    ) -> JetStreamNotificationSubscription:
        psub = await self._js.pull_subscribe(
            self.names.notification_subject,
            durable=self.names.notifier_consumer,
            stream=self.names.notification_stream,
            config=_consumer(ack_wait_seconds, max_deliver),
        )
        return JetStreamNotificationSubscription(psub)

    async def publish_job_change(self, notice: JobNotice) -> None:
        """Tell timing replicas a job changed (best effort: timing also rescans periodically)."""
        try:
            await self._nc.publish(self.names.job_changes_subject, _encode_notice(notice))
        except Exception:
            log.warning("could not announce a job change; timing will see it on its next scan")

    async def job_changes(self, handler: Callable[[JobNotice], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        async def on_msg(msg: Msg) -> None:
            try:
                await handler(_decode_notice(msg.data))
            except Exception:
                log.exception("job change notice could not be handled")

        sub = await self._nc.subscribe(self.names.job_changes_subject, cb=on_msg)
        return sub.unsubscribe

    @property
    def reconnects(self) -> int:
        """How often the connection was re-established: core NATS notices sent meanwhile were missed."""
        return int(self._nc.stats["reconnects"])

    async def publish_tenant_change(self, kind: TenantChangeKind, value: str) -> None:
        """Tell every replica that cached tenant data changed (see :func:`announce_tenant_change`)."""
        await self._nc.publish(self.names.tenant_changes_subject, f"{kind} {value}".encode())
        await self._nc.flush(timeout=2)

    async def tenant_changes(self, handler: Callable[[TenantChangeKind, str], None]) -> Callable[[], Awaitable[None]]:
        """Call ``handler(kind, value)`` for every tenant change notice; returns an unsubscribe."""

        async def on_msg(msg: Msg) -> None:
            kind, _, value = msg.data.decode(errors="replace").partition(" ")
            if kind in TENANT_CHANGE_KINDS and value:
                handler(kind, value)
            else:
                log.warning("ignoring a malformed tenant change notice")

        sub = await self._nc.subscribe(self.names.tenant_changes_subject, cb=on_msg)
        return sub.unsubscribe

    async def publish_raw(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> None:
        """Core NATS publish with a flush, for tenant NATS targets."""
        await self._nc.publish(subject, payload, headers=headers)
        await self._nc.flush(timeout=5)

    async def stream_message_ids(self, stream: str | None = None) -> AsyncIterator[str]:
        """Every ``Nats-Msg-Id`` in a stream (tests and verification tools count fires with it)."""
        name = stream or self.names.run_stream
        info = await self._js.stream_info(name)
        first, last = info.state.first_seq, info.state.last_seq
        for seq in range(first, last + 1):
            try:
                raw = await self._js.get_msg(name, seq)
            except NotFoundError:
                continue
            if raw.headers and "Nats-Msg-Id" in raw.headers:
                yield raw.headers["Nats-Msg-Id"]


async def announce_tenant_change(settings: Settings, kind: TenantChangeKind, value: str) -> bool:
    """Tell every running replica that an API key was revoked (``key``, key id), every key of a tenant was
    (``tenant``, name) or its settings or signing secrets changed (``data``, name), so they drop what they
    cached within about a second (see :data:`TenantChangeKind`).

    For the command line, which does not hold a bus. False when NATS could not be reached: replicas then
    notice within their cache lifetime.
    """
    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers=[s.strip() for s in settings.nats_url.split(",")],
                name="schedsvc-cli",
                allow_reconnect=False,
                connect_timeout=2,
            ),
            timeout=5,
        )
    except Exception:  # nats raises several unrelated types; the caller says what it means
        return False
    try:
        await NatsRunBus(nc, Names(settings.prefix)).publish_tenant_change(kind, value)
        return True
    except Exception:
        return False
    finally:
        await nc.close()
