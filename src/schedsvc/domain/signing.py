"""Standard Webhooks signatures (https://www.standardwebhooks.com): HMAC-SHA256 over ``id.timestamp.body``.

A tenant's signing secret is 32 random bytes, stored base64-encoded; its shared form, shown to the tenant,
is ``whsec_<base64>``. During a rotation a tenant has several current secrets and every one of them signs:
``webhook-signature`` then carries one space-separated ``v1,<base64>`` entry per secret, and a receiver
accepts the message if any entry verifies with a secret it knows. See ``docs/webhooks.md``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping

SECRET_PREFIX = "whsec_"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a secret given as base64 or in its shared form ``whsec_<base64>``."""
    if secret.startswith(SECRET_PREFIX):
        secret = secret[len(SECRET_PREFIX) :]
    return base64.b64decode(secret, validate=True)


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature entry."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers; without keys, only id and timestamp (the call is unsigned)."""
    headers = {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(timestamp)}
    entries = [signature(key, msg_id, timestamp, body) for key in keys]
    if entries:
        headers[SIGNATURE_HEADER] = " ".join(entries)
    return headers


def verify(keys: Iterable[bytes], headers: Mapping[str, str], body: bytes) -> bool:
    """Whether any ``v1`` entry of ``webhook-signature`` matches any key (constant-time comparison)."""
    msg_id, timestamp = headers.get(ID_HEADER), headers.get(TIMESTAMP_HEADER)
    if msg_id is None or timestamp is None or not timestamp.isdigit():
        return False
    offered = [e for e in headers.get(SIGNATURE_HEADER, "").split(" ") if e.startswith("v1,")]
    for key in keys:
        expected = signature(key, msg_id, int(timestamp), body)
        if any(hmac.compare_digest(expected, entry) for entry in offered):
            return True
    return False
