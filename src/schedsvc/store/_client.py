"""Creating the pymongo async client, with the options every adapter relies on."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any, ParamSpec, TypeVar

from bson.codec_options import CodecOptions
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError

from schedsvc.config import Settings
from schedsvc.domain.errors import StoreUnavailableError

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def connect(settings: Settings, **options: Any) -> AsyncMongoClient[dict[str, object]]:
    """A client that returns aware UTC datetimes, retries writes once on failover and bounds every operation
    (``options`` win: ``timeoutMS=None`` for work that may legitimately take long, such as building an index)."""
    settings_options: dict[str, Any] = {
        "tz_aware": True,
        "tzinfo": UTC,
        "retryWrites": True,
        "serverSelectionTimeoutMS": 5000,
        "timeoutMS": int(settings.mongodb_timeout_seconds * 1000),
        "appname": "schedsvc",
    }
    return AsyncMongoClient(settings.mongodb_uri, **(settings_options | options))


def database(client: AsyncMongoClient[dict[str, object]], settings: Settings) -> AsyncDatabase[dict[str, object]]:
    """The service's database, with UTC-aware codec options."""
    return client.get_database(settings.database, codec_options=CodecOptions(tz_aware=True, tzinfo=UTC))


def translate_errors(cls: type[T]) -> type[T]:
    """Class decorator: a lost database connection leaves an adapter as :class:`StoreUnavailableError`.

    Only connection failures and timeouts are translated; any other driver error is a bug and stays loud.
    """
    for name, fn in list(vars(cls).items()):
        if inspect.iscoroutinefunction(fn) and not name.startswith("__"):
            setattr(cls, name, _translating(fn))
    return cls


def _translating(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except PyMongoError as exc:
            # exc.timeout: the operation ran out of its timeoutMS budget (any error class can carry it).
            if isinstance(exc, ConnectionFailure | ExecutionTimeout) or exc.timeout:
                raise StoreUnavailableError(f"database unavailable: {type(exc).__name__}") from exc
            raise

    return wrapper
