"""Standard Webhooks signatures, checked against an independent implementation written here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from schedsvc.domain.signing import decode_secret, signature, signature_headers, verify


def reference_verify(shared_secrets: list[str], headers: dict[str, str], body: bytes) -> bool:
    """A receiver following the Standard Webhooks spec, from its text alone."""
    msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
    content = msg_id.encode() + b"." + ts.encode() + b"." + body
    for shared in shared_secrets:
        key = base64.b64decode(shared.removeprefix("whsec_"))
        expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        for entry in headers["webhook-signature"].split():
            version, _, sig = entry.partition(",")
            if version == "v1" and hmac.compare_digest(sig, expected):
                return True
    return False


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def test_known_vector() -> None:
    # Computed by hand with the spec's construction: HMAC-SHA256(key, "id.timestamp.body"), base64.
    key = bytes(range(32))
    body = b'{"hello":"world"}'
    sig = signature(key, "job1:1700000000000", 1700000000, body)
    expected = base64.b64encode(
        hmac.new(key, b'job1:1700000000000.1700000000.{"hello":"world"}', hashlib.sha256).digest()
    ).decode()
    assert sig == f"v1,{expected}"


def test_headers_verify_with_the_reference_receiver() -> None:
    shared = new_secret()
    body = b'{"a":1}'
    headers = signature_headers([decode_secret(shared)], "j:1", 1_700_000_123, body)
    assert headers["webhook-id"] == "j:1"
    assert headers["webhook-timestamp"] == "1700000123"
    assert reference_verify([shared], headers, body)
    assert verify([decode_secret(shared)], headers, body)


def test_tampering_is_detected() -> None:
    shared = new_secret()
    headers = signature_headers([decode_secret(shared)], "j:1", 1_700_000_123, b"body")
    assert not reference_verify([shared], headers, b"bodx")
    assert not reference_verify([shared], {**headers, "webhook-timestamp": "1700000124"}, b"body")
    assert not reference_verify([shared], {**headers, "webhook-id": "j:2"}, b"body")
    assert not reference_verify([new_secret()], headers, b"body")
    assert not verify([decode_secret(shared)], {**headers, "webhook-id": "j:2"}, b"body")


def test_rotation_signs_with_every_current_secret() -> None:
    old, new = new_secret(), new_secret()
    headers = signature_headers([decode_secret(new), decode_secret(old)], "j:9", 1_700_000_000, b"")
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2 and all(e.startswith("v1,") for e in entries)
    # A receiver that knows only the old secret, only the new one, or both, accepts the message.
    assert reference_verify([old], headers, b"")
    assert reference_verify([new], headers, b"")
    assert reference_verify([old, new], headers, b"")


def test_without_secrets_the_call_is_unsigned() -> None:
    headers = signature_headers([], "j:1", 1, b"x")
    assert "webhook-signature" not in headers
    assert not verify([], headers, b"x")


def test_secret_forms() -> None:
    raw = secrets.token_bytes(32)
    text = base64.b64encode(raw).decode()
    assert decode_secret(text) == raw
    assert decode_secret("whsec_" + text) == raw
