"""JetStream pull consumers as execution uses them: the run stream's and the notification stream's, and the
deliveries they hand out with their acknowledgement operations (``bus/nats.py`` creates them)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

from schedsvc.domain.models import RunMessage
from schedsvc.domain.notifications import NotificationMessage

log = logging.getLogger(__name__)

M = TypeVar("M")
D = TypeVar("D", bound="JetStreamDelivery[Any]")

_decode_run = msgspec.msgpack.Decoder(RunMessage).decode
_decode_notification = msgspec.json.Decoder(NotificationMessage).decode


@dataclass(slots=True)
class JetStreamDelivery(Generic[M]):
    """One message handed out by a pull consumer, decoded, with its JetStream acknowledgement operations."""

    message: M
    num_delivered: int
    _msg: Msg

    async def ack(self) -> None:
        await self._msg.ack()

    async def nak(self, delay_seconds: float | None = None) -> None:
        await self._msg.nak(delay=delay_seconds)


RENEW_MARGIN_SECONDS = 600.0
"""How long before the run stream would drop a waiting message it is handed back (at most a tenth of the
stream's age): a fresh copy needs that long to be stored whatever the load."""


@dataclass(slots=True)
class JetStreamRunDelivery(JetStreamDelivery[RunMessage]):
    """One run message handed to a worker.

    The run stream drops a message at its age limit, delivered or not. A run can wait longer than that (a
    retry policy's backoff and event age allow days; a fire waits behind its job's running fire): so a
    ``nak`` whose delay would outlive the message comes back shortly before the drop instead, and then
    hands the run back as a fresh copy (``renew``) with the stream's whole age ahead of it.
    """

    renew: Callable[[Msg], Awaitable[None]] | None = None
    max_age_seconds: float = 0.0

    async def ack(self) -> None:
        await self._msg.ack_sync()  # waits for the server's confirmation

    async def nak(self, delay_seconds: float | None = None) -> None:
        if delay_seconds and self.renew is not None and self.max_age_seconds > 0:
            margin = min(RENEW_MARGIN_SECONDS, self.max_age_seconds / 10)
            stored = self._msg.metadata.timestamp.timestamp()  # when the stream stored the message
            life_left = stored + self.max_age_seconds - time.time()
            if delay_seconds + margin > life_left:
                if life_left > 2 * margin:
                    delay_seconds = life_left - margin  # back before the drop, to be renewed then
                else:
                    await self.renew(self._msg)
                    await self.ack()
                    return
        await self._msg.nak(delay=delay_seconds)

    async def in_progress(self) -> None:
        """Extend the ack deadline of a long run."""
        await self._msg.in_progress()


class JetStreamNotificationDelivery(JetStreamDelivery[NotificationMessage]):
    """One notification handed to a sender."""

    __slots__ = ()


class JetStreamSubscription(Generic[M, D]):
    """A durable pull consumer: fetches batches, decodes them, and terminates what does not decode."""

    def __init__(
        self, psub: object, decode: Callable[[bytes], M], deliver: Callable[[M, int, Msg], D], what: str
    ) -> None:
        self._psub = psub
        self._decode = decode
        self._deliver = deliver
        self._what = what
        """What one message is, for the log."""

    async def fetch(self, batch: int, timeout: float) -> list[D]:
        try:
            msgs: list[Msg] = await self._psub.fetch(batch, timeout=timeout)  # type: ignore[attr-defined]
        except (NatsTimeoutError, TimeoutError):  # a batch fetch raises the builtin one
            return []
        deliveries = []
        for m in msgs:
            try:
                message = self._decode(m.data)
            except msgspec.DecodeError:
                log.error("dropping an undecodable %s on %s", self._what, m.subject)
                await m.term()
                continue
            deliveries.append(self._deliver(message, m.metadata.num_delivered, m))
        return deliveries

    async def close(self) -> None:
        await self._psub.unsubscribe()  # type: ignore[attr-defined]


class JetStreamRunSubscription(JetStreamSubscription[RunMessage, JetStreamRunDelivery]):
    """The durable pull consumer of the run stream, shared by all execution workers."""

    def __init__(
        self, psub: object, renew: Callable[[Msg], Awaitable[None]] | None = None, max_age_seconds: float = 0.0
    ) -> None:
        def deliver(message: RunMessage, num_delivered: int, msg: Msg) -> JetStreamRunDelivery:
            return JetStreamRunDelivery(message, num_delivered, msg, renew, max_age_seconds)

        super().__init__(psub, _decode_run, deliver, "run message")

    async def pending(self) -> int:
        info = await self._psub.consumer_info()  # type: ignore[attr-defined]
        return int(info.num_pending) + int(info.num_ack_pending)

    async def hand_back_unfetched(self, linger: float) -> int:
        """Put back at once (nak, no delay) every message delivered to this subscription but not returned
        by :meth:`fetch`; return how many. For a graceful stop, before :meth:`close`.

        A pull request can outlive the fetch that made it (nats-py leaves a late batch in the client's
        queue, and the server may still fill a request whose client gave up). Unsubscribing would drop
        those messages, and they would come back only after their ack deadline (30 s by default): the
        fire due at a rolling restart would be that late. So for ``linger`` seconds (the longest a pull
        request lives) whatever arrives goes straight back to the stream, for another replica to take.
        nats-py exposes no public way to read that queue; ``_sub`` is the pull subscription's underlying
        ``Subscription`` (whose ``next_msg`` is public).
        """
        sub = getattr(self._psub, "_sub", None)
        if sub is None:
            return 0
        handed = 0
        deadline = time.monotonic() + linger
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=remaining)
            except (NatsTimeoutError, TimeoutError):
                break
            if msg.headers and msg.headers.get("Status"):  # "no messages", "request timeout": not a run
                continue
            with contextlib.suppress(Exception):
                await msg.nak()
                handed += 1
        return handed


class JetStreamNotificationSubscription(JetStreamSubscription[NotificationMessage, JetStreamNotificationDelivery]):
    """The durable pull consumer of the notification stream, shared by every sender."""

    def __init__(self, psub: object) -> None:
        super().__init__(psub, _decode_notification, JetStreamNotificationDelivery, "notification")
