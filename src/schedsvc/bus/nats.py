"""NATS JetStream adapter: the run stream from timing to execution, dead letters, job-change notices."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from schedsvc.config import Settings
from schedsvc.domain import BusUnavailableError, RunMessage, run_id
from schedsvc.domain.lifecycle import MAX_DELIVERIES
from schedsvc.names import Names

log = logging.getLogger(__name__)

# How long JetStream remembers a message id: a fire re-published within this window (a replica that
# crashed after publishing but before advancing nextRun) is dropped as a duplicate. Execution's run
# record is the second guard beyond it.
DEDUP_WINDOW_SECONDS = 15 * 60
RUN_RETENTION_SECONDS = 24 * 3600
PUBLISH_CONCURRENCY = 512
ERROR_LOG_INTERVAL_SECONDS = 30.0

_encode_run = msgspec.msgpack.Encoder().encode
_decode_run = msgspec.msgpack.Decoder(RunMessage).decode


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


@dataclass(slots=True)
class RunDelivery:
    """One run message handed to a worker, with the JetStream acknowledgement operations."""

    message: RunMessage
    num_delivered: int
    _msg: Msg

    async def ack(self) -> None:
        await self._msg.ack_sync()

    async def nak(self, delay_seconds: float | None = None) -> None:
        await self._msg.nak(delay=delay_seconds)

    async def in_progress(self) -> None:
        """Extend the ack deadline of a long run."""
        await self._msg.in_progress()

    async def term(self) -> None:
        await self._msg.term()


class RunSubscription:
    """A durable pull consumer shared by all execution workers."""

    def __init__(self, psub: object) -> None:
        self._psub = psub

    async def fetch(self, batch: int, timeout: float) -> list[RunDelivery]:
        try:
            msgs: list[Msg] = await self._psub.fetch(batch, timeout=timeout)  # type: ignore[attr-defined]
        except (NatsTimeoutError, TimeoutError):  # a batch fetch raises the builtin one
            return []
        deliveries = []
        for m in msgs:
            try:
                message = _decode_run(m.data)
            except msgspec.DecodeError:
                log.error("dropping undecodable run message on %s", m.subject)
                await m.term()
                continue
            deliveries.append(RunDelivery(message, m.metadata.num_delivered, m))
        return deliveries

    async def pending(self) -> int:
        info = await self._psub.consumer_info()  # type: ignore[attr-defined]
        return int(info.num_pending) + int(info.num_ack_pending)

    async def close(self) -> None:
        await self._psub.unsubscribe()  # type: ignore[attr-defined]


class NatsRunBus:
    """Publishes fires to the run stream and hands them to workers."""

    def __init__(self, nc: Client, names: Names) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.names = names

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
        return cls(nc, names or Names(settings.prefix))

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def close(self) -> None:
        if not self._nc.is_closed:
            await self._nc.drain()

    async def ensure_streams(self, replicas: int = 1) -> None:
        """Create or update the run and dead-letter streams (idempotent)."""
        n = self.names
        runs = StreamConfig(
            name=n.run_stream,
            subjects=[f"{n.run_subject_root}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=RUN_RETENTION_SECONDS,
            duplicate_window=DEDUP_WINDOW_SECONDS,
            num_replicas=replicas,
        )
        dlq = StreamConfig(
            name=n.dead_letter_stream,
            subjects=[n.dead_letter_subject],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=14 * 24 * 3600,
            num_replicas=replicas,
        )
        try:
            for config in (runs, dlq):
                try:
                    await self._js.stream_info(config.name)  # type: ignore[arg-type]
                    await self._js.update_stream(config)
                except NotFoundError:
                    await self._js.add_stream(config)
        except Exception as exc:  # JetStream disabled or unavailable, a timeout, a lost connection
            raise BusError(f"cannot create the JetStream streams: {type(exc).__name__}: {exc}") from None

    async def publish_runs(self, messages: Sequence[RunMessage], partitions: Sequence[int]) -> int:
        """Publish fires with message id ``jobId:scheduledMs``; return how many were new (not duplicates).

        Raises :class:`BusError` if any publish was not acknowledged; the caller must not advance
        ``nextRun`` for a batch that failed (re-publishing is safe: duplicates are dropped).
        """
        sem = asyncio.Semaphore(PUBLISH_CONCURRENCY)
        names = self.names

        async def one(msg: RunMessage, partition: int) -> bool:
            async with sem:
                ack = await self._js.publish(
                    names.run_subject(partition),
                    _encode_run(msg),
                    headers={"Nats-Msg-Id": run_id(msg.job_id, msg.scheduled_ms)},
                )
                return not ack.duplicate

        try:
            results = await asyncio.gather(*(one(m, p) for m, p in zip(messages, partitions, strict=True)))
        except Exception as exc:  # nats raises several unrelated types; callers need one
            raise BusError(f"publishing runs failed: {exc!r}") from exc
        return sum(results)

    async def run_subscription(self, ack_wait_seconds: float, max_ack_pending: int) -> RunSubscription:
        psub = await self._js.pull_subscribe(
            f"{self.names.run_subject_root}.>",
            durable=self.names.worker_consumer,
            stream=self.names.run_stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ack_wait_seconds,
                # The worker gives up on a run after MAX_DELIVERIES (failed, dead-lettered); this is the
                # backstop for a worker that cannot even record that (JetStream then stops redelivering).
                max_deliver=MAX_DELIVERIES + 10,
                max_ack_pending=max_ack_pending,
            ),
        )
        return RunSubscription(psub)

    async def publish_dead_letter(self, payload: bytes, headers: dict[str, str]) -> None:
        try:
            await self._js.publish(self.names.dead_letter_subject, payload, headers=headers)
        except Exception as exc:
            raise BusError(f"dead-lettering failed: {exc!r}") from exc

    async def publish_job_change(self, job_id: str, partition: int) -> None:
        """Tell timing replicas a job changed (best effort: timing also rescans periodically)."""
        try:
            await self._nc.publish(self.names.job_changes_subject, f"{job_id} {partition}".encode())
        except Exception:
            log.warning("could not announce a job change; timing will see it on its next scan")

    async def job_changes(self, handler: Callable[[str, int], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """Call ``handler(job_id, partition)`` for every announced change; returns an unsubscribe."""

        async def on_msg(msg: Msg) -> None:
            try:
                job_id, partition = msg.data.decode().split(" ", 1)
                await handler(job_id, int(partition))
            except Exception:
                log.exception("job change notice could not be handled")

        sub = await self._nc.subscribe(self.names.job_changes_subject, cb=on_msg)
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
