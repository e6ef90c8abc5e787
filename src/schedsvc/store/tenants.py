"""MongoDB adapter for tenants, their API keys (stored hashed), webhook signing secrets and own settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from schedsvc import names
from schedsvc.domain.errors import AuthenticationError, TenantExistsError
from schedsvc.domain.tenants import TenantPreferences, TenantSettingsPatch
from schedsvc.store._client import translate_errors

Doc = dict[str, Any]
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_KEY = re.compile(r"^sk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
# The tenant document's fields holding the tenant's own settings (TenantPreferences).
_NOTIFY = "notify"
_RUN_RETENTION_DAYS = "runRetentionDays"
_PREFERENCES_PROJECTION = {_NOTIFY: 1, _RUN_RETENTION_DAYS: 1}


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    key: str
    """The plaintext key: shown once, never stored."""


def new_api_key() -> str:
    """A fresh API key: ``sk_<key id>_<secret>``; only its hash is ever stored."""
    return f"sk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


def is_api_key(text: str) -> bool:
    """Whether ``text`` has the shape of an API key (says nothing about whether it is valid)."""
    return _KEY.match(text) is not None


def key_id_of(text: str) -> str | None:
    """The key id in a full API key or a bare key id; None for anything else (e.g. a tenant name)."""
    match = _KEY.match(text)
    if match:
        return match.group(1)
    return text if re.fullmatch(r"[0-9a-f]{16}", text) else None


def _hash(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def _new_secret() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def webhook_secret_text(secret: str) -> str:
    """The Standard Webhooks form a receiver configures: ``whsec_<base64>``."""
    return f"whsec_{secret}"


@translate_errors
class MongoTenantStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self._tenants = db[names.TENANTS]
        self._keys = db[names.API_KEYS]

    async def create_tenant(self, name: str) -> tuple[NewKey, str]:
        """Create a tenant with one API key and one signing secret; returns both in plaintext."""
        if not TENANT_NAME.match(name):
            raise ValueError("tenant name must be 1-63 lowercase letters, digits, '-' or '_'")
        secret = _new_secret()
        try:
            await self._tenants.insert_one(
                {
                    "_id": name,
                    "createdAt": datetime.now(UTC),
                    "signingSecrets": [{"id": secrets.token_hex(4), "secret": secret, "createdAt": datetime.now(UTC)}],
                }
            )
        except DuplicateKeyError:
            raise TenantExistsError(f"tenant {name!r} already exists") from None
        return await self.create_key(name), webhook_secret_text(secret)

    async def ensure_tenant(self, name: str) -> None:
        await self._tenants.update_one(
            {"_id": name},
            {
                "$setOnInsert": {
                    "createdAt": datetime.now(UTC),
                    "signingSecrets": [
                        {"id": secrets.token_hex(4), "secret": _new_secret(), "createdAt": datetime.now(UTC)}
                    ],
                }
            },
            upsert=True,
        )

    async def create_key(self, tenant: str, key: str | None = None) -> NewKey:
        """A new API key for an existing tenant (``key`` lets development mode choose its own)."""
        if await self._tenants.count_documents({"_id": tenant}, limit=1) == 0:
            raise LookupError(f"no tenant {tenant!r}")
        if key is None:
            key = new_api_key()
        match = _KEY.match(key)
        if match is None:
            raise ValueError("an API key must look like sk_<16 hex>_<43 url-safe characters>")
        key_id = match.group(1)
        await self._keys.update_one(
            {"_id": key_id},
            {
                "$set": {"tenant": tenant, "hash": _hash(key), "revokedAt": None},
                "$setOnInsert": {"createdAt": datetime.now(UTC)},
            },
            upsert=True,
        )
        return NewKey(key_id, key)

    async def revoke_key(self, key_id: str) -> bool:
        result = await self._keys.update_one(
            {"_id": key_id, "revokedAt": None}, {"$set": {"revokedAt": datetime.now(UTC)}}
        )
        return result.modified_count == 1

    async def revoke_tenant_keys(self, tenant: str) -> int:
        result = await self._keys.update_many(
            {"tenant": tenant, "revokedAt": None}, {"$set": {"revokedAt": datetime.now(UTC)}}
        )
        return result.modified_count

    async def list_tenants(self) -> list[Doc]:
        tenants = await self._tenants.find({}, projection={"signingSecrets": 0}).sort("_id", 1).to_list()
        keys = await self._keys.find({}, projection={"hash": 0}).to_list()
        for t in tenants:
            t["keys"] = [k for k in keys if k["tenant"] == t["_id"]]
        return tenants

    async def authenticate(self, key: str) -> str:
        """The tenant owning ``key``; :class:`AuthenticationError` when unknown or revoked.

        Reads the database every time: callers cache (``schedsvc.api.auth``) and are told of revocations.
        """
        match = _KEY.match(key)
        if match is None:
            raise AuthenticationError("malformed API key")
        doc = await self._keys.find_one({"_id": match.group(1)}, projection={"tenant": 1, "hash": 1, "revokedAt": 1})
        if doc is None or doc.get("revokedAt") is not None or not hmac.compare_digest(doc["hash"], _hash(key)):
            raise AuthenticationError("unknown or revoked API key")
        return str(doc["tenant"])

    async def rotate_secret(self, tenant: str, keep_previous: bool = True) -> str:
        """Add a new signing secret (keeping the newest old one for a rotation window); returns it."""
        secret = _new_secret()
        entry = {"id": secrets.token_hex(4), "secret": secret, "createdAt": datetime.now(UTC)}
        result = await self._tenants.update_one(
            {"_id": tenant},
            {"$push": {"signingSecrets": {"$each": [entry], "$position": 0, "$slice": 2 if keep_previous else 1}}},
        )
        if result.matched_count == 0:
            raise LookupError(f"no tenant {tenant!r}")
        return webhook_secret_text(secret)

    async def delivery_settings(self, tenant: str, default_pattern: str) -> tuple[list[bytes], list[str]]:
        """What a run of the tenant needs, in one read: its signing secrets (newest first) and subject grants."""
        doc = await self._tenants.find_one({"_id": tenant}, projection={"signingSecrets": 1, "natsSubjects": 1}) or {}
        secrets_ = [base64.b64decode(s["secret"]) for s in doc.get("signingSecrets", [])]
        custom = doc.get("natsSubjects")
        return secrets_, list(custom) if custom else [default_pattern.format(tenant=tenant)]

    async def preferences(self, tenant: str) -> TenantPreferences:
        """What the tenant chose for its notifications and run retention (defaults when nothing)."""
        doc = await self._tenants.find_one({"_id": tenant}, projection=_PREFERENCES_PROJECTION) or {}
        return _read_preferences(doc)

    async def update_preferences(self, tenant: str, patch: TenantSettingsPatch) -> TenantPreferences:
        """Apply the fields present in ``patch`` (null clears one); :class:`LookupError` for no such tenant."""
        changed: Doc = {}
        if patch.notify is not msgspec.UNSET:
            changed[_NOTIFY] = msgspec.to_builtins(patch.notify)
        if patch.run_retention_days is not msgspec.UNSET:
            changed[_RUN_RETENTION_DAYS] = patch.run_retention_days
        if not changed:
            return await self.preferences(tenant)
        doc = await self._tenants.find_one_and_update(
            {"_id": tenant},
            {"$set": changed},
            projection=_PREFERENCES_PROJECTION,
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise LookupError(f"no tenant {tenant!r}")
        return _read_preferences(doc)

    async def subject_grants(self, tenant: str, default_pattern: str) -> list[str]:
        """NATS subject patterns the tenant may publish under."""
        doc = await self._tenants.find_one({"_id": tenant}, projection={"natsSubjects": 1})
        custom = (doc or {}).get("natsSubjects")
        return list(custom) if custom else [default_pattern.format(tenant=tenant)]


def _read_preferences(doc: Doc) -> TenantPreferences:
    return msgspec.convert(
        {"notify": doc.get(_NOTIFY), "run_retention_days": doc.get(_RUN_RETENTION_DAYS)},
        TenantPreferences,
        strict=False,
    )
