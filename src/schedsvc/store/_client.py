"""Creating the pymongo async client, with the options every adapter relies on."""

from __future__ import annotations

from datetime import UTC

from bson.codec_options import CodecOptions
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from schedsvc.config import Settings


def connect(settings: Settings, **options: object) -> AsyncMongoClient[dict[str, object]]:
    """A client that returns aware UTC datetimes and retries writes once on failover."""
    return AsyncMongoClient(
        settings.mongodb_uri,
        tz_aware=True,
        tzinfo=UTC,
        retryWrites=True,
        serverSelectionTimeoutMS=5000,
        appname="schedsvc",
        **options,
    )


def database(client: AsyncMongoClient[dict[str, object]], settings: Settings) -> AsyncDatabase[dict[str, object]]:
    """The service's database, with UTC-aware codec options."""
    return client.get_database(settings.database, codec_options=CodecOptions(tz_aware=True, tzinfo=UTC))
