"""Outbound address policy for HTTP targets (SSRF protection), enforced where connections are made.

Approach: the check lives in an ``httpcore`` network backend, the layer that opens TCP connections. For
every new connection it resolves the host itself, checks **every** resolved address against the policy
and then connects to one of those checked IP addresses, never to the name. So:

- DNS rebinding cannot get around it: there is no second resolution between the check and the connect.
- Redirects are re-checked for free: each hop to a new origin needs a new connection, which goes through
  the same backend (and hops are limited by the caller).
- The URL is untouched, so the ``Host`` header, TLS SNI and certificate verification still use the
  hostname (httpcore passes the origin's host as ``server_hostname`` to ``start_tls``).
- Connection pooling still works: pooled connections were checked when they were opened.
- Any resolution that includes a refused address refuses the whole name: a mix of public and private
  answers is a sign of rebinding or of split-horizon DNS, and either way the call should not go out.
- Unix sockets are refused; the client is built with ``trust_env=False`` so no proxy from the environment
  (which would resolve names itself) is used.

Refused: loopback, private (RFC 1918, ULA, site-local), link-local (including the cloud metadata addresses
169.254.169.254 and fd00:ec2::254), multicast, unspecified, reserved, shared address space (CGNAT,
100.64.0.0/10), and every other non-global range, including IPv4 addresses embedded in IPv6
(IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) when the embedded address
is refused. An address inside ``Settings.target_allow_networks`` is always permitted. The address rules
themselves are the target policy's (:func:`schedsvc.domain.targets.refusal_reason`), the same the API
applies to IP literals when a job is stored.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import httpcore
import httpx

from schedsvc.domain.errors import SchedsvcError
from schedsvc.domain.targets import IPNetwork, refusal_reason
from schedsvc.observability.metrics import TARGET_REFUSALS


class AddressRefusedError(SchedsvcError, PermissionError):
    """An outbound connection was refused by the address policy; ``reason`` names the address class."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"refused to connect to {host} ({address}): {reason} address")
        self.host = host
        self.address = address
        self.reason = reason


async def resolve_checked(host: str, port: int, allow: Sequence[IPNetwork]) -> list[str]:
    """Resolve ``host`` and return its addresses, all permitted, or raise :class:`AddressRefusedError`."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror}") from exc
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone index
        reason = refusal_reason(text, allow)
        if reason is not None:
            TARGET_REFUSALS.labels(reason=reason).inc()
            raise AddressRefusedError(host, text, reason)
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise httpcore.ConnectError(f"cannot resolve {host}: no addresses")
    return addresses


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the policy permits (see module doc)."""

    def __init__(self, allow: Sequence[IPNetwork], inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._allow = tuple(allow)
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                addresses = await resolve_checked(host, port, self._allow)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        last_error: Exception | None = None
        for address in addresses:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                return await self._inner.connect_tcp(address, port, remaining, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        TARGET_REFUSALS.labels(reason="unix_socket").inc()
        raise AddressRefusedError(path, path, "unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport over a connection pool whose connections go through the address policy.

    httpx does not let callers choose the pool's network backend, so this builds the pool itself instead
    of calling ``super().__init__`` (which would build one without the guard); everything else —
    request mapping, exception mapping, streaming — is httpx's code. No proxy is ever configured.
    """

    def __init__(self, allow: Sequence[IPNetwork], limits: httpx.Limits, verify: bool = True) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetworkBackend(allow),
        )


__all__ = ["AddressRefusedError", "GuardedNetworkBackend", "GuardedTransport", "refusal_reason", "resolve_checked"]
