"""A webhook receiver for tests, benchmarks, load and fault runs (and for trying deliveries by hand); jobs
such runs write straight into MongoDB; the clean-up of what they left in MongoDB and JetStream.

One small HTTP/1.1 server over asyncio streams, with keep-alive, that records every request and answers
what a test tells it to (a status, a delay, a hang, a body longer than the service will read). Written by
hand rather than on an HTTP framework because tests need to misbehave in ways frameworks prevent (hang
forever, announce more bytes than they send) and because load runs need a receiver that costs almost no CPU.

``python -m schedsvc.testing [--delay SECONDS]`` runs one in the foreground and prints its port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from schedsvc.names import Names

if TYPE_CHECKING:
    from schedsvc.config import Settings
    from schedsvc.domain.models import JobStatus
    from schedsvc.store.job_codec import JobDocument


@dataclass(frozen=True, slots=True)
class Call:
    """One request the receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    at: float
    """``time.monotonic()`` on arrival."""
    received_ms: int
    """Wall-clock arrival, milliseconds since the epoch (to compare with scheduled fire times)."""

    @property
    def route(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def idempotency_key(self) -> str:
        return self.headers.get("idempotency-key", "")


@dataclass
class Reply:
    """What the receiver answers."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    """Never answer (until the receiver is closed or :attr:`WebhookReceiver.release` is set)."""
    stream_bytes: int = 0
    """Announce and start sending this many body bytes (for the service's read cap)."""
    delay: float = 0.0
    """Answer after this many seconds."""


Behaviour = Callable[[Call, int], Reply]
"""What to answer for a call: given the call and how many calls its route had before it."""


class WebhookReceiver:
    """Records every request; answers by route (``routes``), else with ``default``."""

    def __init__(self, host: str = "127.0.0.1", default: Reply | None = None, keep_bodies: bool = True) -> None:
        self.host = host
        self.port = 0
        self.default = default or Reply()
        self.keep_bodies = keep_bodies
        self.calls: list[Call] = []
        self.routes: dict[str, Behaviour] = {}
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()
        self.streamed = 0
        self._per_route: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> WebhookReceiver:
        self._server = await asyncio.start_server(self._connection, self.host, 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.release.set()
        if self._server is None:
            return
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()

    async def __aenter__(self) -> WebhookReceiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def calls_to(self, route: str) -> list[Call]:
        return [c for c in self.calls if c.route == route]

    def calls_per_key(self) -> Counter[str]:
        """How often each ``Idempotency-Key`` (one per fire) was delivered."""
        return Counter(c.idempotency_key for c in self.calls)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                call = Call(
                    method,
                    path,
                    headers,
                    body if self.keep_bodies else b"",
                    time.monotonic(),
                    time.time_ns() // 1_000_000,
                )
                before = self._per_route[call.route]
                self._per_route[call.route] += 1
                self.calls.append(call)
                self.arrived.set()
                behaviour = self.routes.get(call.route)
                reply = behaviour(call, before) if behaviour else self.default
                if reply.hang:
                    await self.release.wait()
                    reply = Reply()
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                if reply.stream_bytes:
                    await self._stream(writer, reply)
                    return
                extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                writer.write(
                    f"HTTP/1.1 {reply.status} X\r\nContent-Length: {len(reply.body)}\r\n{extra}\r\n".encode()
                    + reply.body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # the receiver is closing; ending quietly spares asyncio's stream callback a traceback
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        writer.write(f"HTTP/1.1 {reply.status} X\r\nContent-Length: {reply.stream_bytes}\r\n\r\n".encode())
        chunk = b"a" * 16_384
        while self.streamed < reply.stream_bytes:
            writer.write(chunk)
            self.streamed += len(chunk)
            await writer.drain()


def job_document(
    tenant: str,
    partitions: int,
    *,
    next_run: datetime | None,
    status: JobStatus | None = None,
    now: datetime | None = None,
    **fields: Any,
) -> JobDocument:
    """A new job's document as ``POST /jobs`` stores it (store it with ``job_codec.encode``): a fresh id, the
    partition of ``partitions`` that id falls in, active unless ``status`` says otherwise, created ``now``.

    ``fields`` are :class:`~schedsvc.domain.JobCreate`'s; ``name`` defaults to ``job-<id>``. The job codec
    builds it, so a test or benchmark never spells the document's layout itself.
    """
    # The store (and with it the MongoDB driver) only when a caller writes jobs: the receiver needs neither.
    from bson import ObjectId

    from schedsvc.domain.models import JobCreate, JobStatus
    from schedsvc.domain.rules import partition_of
    from schedsvc.store import job_codec

    job_id = str(ObjectId())
    return job_codec.new_document(
        job_id,
        tenant,
        JobCreate(**{"name": f"job-{job_id}", **fields}),
        status=status or JobStatus.ACTIVE,
        next_run=next_run,
        partition=partition_of(job_id, partitions),
        now=now or datetime.now(UTC),
    )


async def drop_database(settings: Settings) -> None:
    """Drop ``settings.database``: a test's or benchmark's own database, at its end."""
    from schedsvc.store import connect

    client = connect(settings)
    try:
        await client.drop_database(settings.database)
    finally:
        await client.close()


async def delete_run_streams(settings: Settings) -> None:
    """Delete every JetStream stream of ``settings.prefix`` (``Names.streams``) where it exists.

    The service never deletes a stream (the bus adapter has no such operation, on purpose), so this
    harness talks to JetStream itself; imported here, not at the top, so the receiver alone needs no driver.
    """
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        for stream in Names(settings.prefix).streams:
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
    finally:
        await nc.close()


async def _serve(delay: float) -> None:
    receiver = await WebhookReceiver(default=Reply(delay=delay), keep_bodies=False).start()
    print(receiver.port, flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m schedsvc.testing", description=__doc__)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.delay))


if __name__ == "__main__":
    main()
