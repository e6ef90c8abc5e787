"""Receiving deliveries: check a request's Standard Webhooks signature and learn which run it is.

The signature itself is checked by ``schedsvc.domain.signing``, the same code that signs deliveries.
The run's identity is read from ``webhook-id`` (the run id ``<jobId>:<scheduledMs>``) because that
header is part of the signed content; the ``X-Schedsvc-Job-Id``/``-Scheduled-Time`` headers say the same
but are not signed. Only the attempt number, which is for logs, comes from an unsigned header.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from schedsvc.domain.errors import SchedsvcError
from schedsvc.domain.notifications import Notification
from schedsvc.domain.signing import ID_HEADER, TIMESTAMP_HEADER, decode_secret, verify

ATTEMPT_HEADER = "x-schedsvc-attempt"
DEFAULT_TOLERANCE_SECONDS = 5 * 60

Headers = Mapping[str, str] | Iterable[tuple[bytes, bytes]]
"""A request's headers as a receiver has them: any mapping (names in any case), or ASGI ``scope["headers"]``."""


class InvalidDeliveryError(SchedsvcError, PermissionError):
    """The request is not a recent delivery signed with one of your secrets: answer 401 and drop it."""


@dataclass(frozen=True)
class Delivery:
    """The run a verified request delivers."""

    run_id: str
    """``<jobId>:<scheduledMs>``: the same for every attempt of one fire; your idempotency key."""
    job_id: str
    scheduled_at: datetime
    """The fire's nominal instant (UTC), before jitter and queueing."""
    attempt: int
    """1 for the first attempt, 2 for the first retry, ... (0 when the header is missing)."""
    sent_at: datetime
    """When this attempt was signed and sent."""


def verify_delivery(
    headers: Headers,
    body: bytes,
    secrets: Iterable[str],
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> Delivery:
    """The run a delivery belongs to, once its signature and timestamp check out.

    ``headers``: the request's headers as any mapping (names in any case) or as ASGI ``scope["headers"]``;
    ``body``: the raw bytes as received, before any JSON parsing; ``secrets``: your tenant's current
    secrets (``whsec_...``); several during a rotation. Raises ``InvalidDeliveryError`` otherwise.
    """
    signed = _verified(headers, body, secrets, tolerance_seconds, now)
    run_id = signed.headers[ID_HEADER]
    job_id, _, scheduled_ms = run_id.rpartition(":")
    if not job_id or not scheduled_ms.isdigit():
        raise InvalidDeliveryError("webhook-id is not a schedsvc run id")
    attempt = signed.headers.get(ATTEMPT_HEADER, "0")
    return Delivery(
        run_id=run_id,
        job_id=job_id,
        scheduled_at=datetime.fromtimestamp(int(scheduled_ms) / 1000, UTC),
        attempt=int(attempt) if attempt.isdigit() else 0,
        sent_at=datetime.fromtimestamp(signed.sent, UTC),
    )


def verify_notification(
    headers: Headers,
    body: bytes,
    secrets: Iterable[str],
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> Notification:
    """A notification (a run failed for good, a job recovered, fires missed), once its signature and
    timestamp check out; the same arguments and errors as :func:`verify_delivery`. Its ``id`` (also the
    signed ``webhook-id``) is unique per event: drop a notification whose id you have seen."""
    signed = _verified(headers, body, secrets, tolerance_seconds, now)
    try:
        notification = msgspec.json.decode(body, type=Notification)
    except msgspec.DecodeError as exc:
        raise InvalidDeliveryError(f"the body is not a schedsvc notification: {exc}") from None
    if notification.id != signed.headers[ID_HEADER]:
        raise InvalidDeliveryError("webhook-id does not match the notification's id")
    return notification


@dataclass(frozen=True)
class _SignedRequest:
    """A request whose signature and timestamp checked out: what every verifier reads a delivery from."""

    headers: dict[str, str]
    """Names lowercased."""
    sent: int
    """``webhook-timestamp``: when it was signed and sent (Unix seconds)."""


def _verified(
    headers: Headers, body: bytes, secrets: Iterable[str], tolerance_seconds: float, now: float | None
) -> _SignedRequest:
    """The request, once signed with one of ``secrets`` and sent within ``tolerance_seconds`` of ``now``."""
    lowered = _lowercase(headers)
    keys = [decode_secret(secret) for secret in secrets]
    if not verify(keys, lowered, body):
        raise InvalidDeliveryError("the webhook signature does not match any of the secrets")
    sent = int(lowered[TIMESTAMP_HEADER])  # verify() accepted it: digits only
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_seconds:
        # Each attempt is signed when it is sent, so only a replayed capture is this old (or from the future).
        raise InvalidDeliveryError(f"the webhook timestamp is more than {tolerance_seconds:g}s away from now")
    return _SignedRequest(lowered, sent)


def _lowercase(headers: Headers) -> dict[str, str]:
    if isinstance(headers, Mapping):
        return {str(k).lower(): str(v) for k, v in headers.items()}
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
