"""What ``Client`` and ``AsyncClient`` share around the protocol: whom they speak for, how they retry, and
the httpx client they send through. Each of them adds only its I/O: sending, waiting, closing.
"""

from __future__ import annotations

import os
from typing import Any, Generic, Self, TypeVar

import httpx

from schedsvc.client import _protocol as protocol
from schedsvc.client._protocol import DEFAULT_URL, USER_AGENT, Call
from schedsvc.client._retry import RequestRetry

HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)


class BaseClient(Generic[HttpT]):
    """The jobs API of one tenant (the owner of ``api_key``), over an ``HttpT``."""

    _http_type: type[HttpT]
    """The httpx client a client builds for itself when not given one."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retry: RequestRetry | None = None,
        http: HttpT | None = None,
    ) -> None:
        """``http``: a client of your own (proxies, TLS, transports) with its ``base_url`` set; ``base_url`` and
        ``timeout`` are then its own, and closing this client leaves it open."""
        self.api_key = api_key
        self.retry = retry or RequestRetry()
        self._owns_http = http is None
        self._http: HttpT = http or self._http_type(
            base_url=base_url.rstrip("/"), timeout=timeout, headers={"User-Agent": USER_AGENT}
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> Self:
        """Where and who from ``SCHEDSVC_URL`` and ``SCHEDSVC_API_KEY`` (as ``schedsvc dev`` prints them)."""
        return cls(os.environ.get("SCHEDSVC_URL", DEFAULT_URL), os.environ.get("SCHEDSVC_API_KEY"), **kwargs)

    def _request(self, call: Call[Any]) -> httpx.Request:
        """The HTTP request of one attempt at ``call``."""
        headers = protocol.request_headers(call, self.api_key)
        return self._http.build_request(
            call.operation.method, call.path, params=call.params, headers=headers, content=call.content
        )
