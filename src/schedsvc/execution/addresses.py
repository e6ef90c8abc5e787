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
is refused. An address inside ``Settings.target_allow_networks`` is always permitted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import httpcore
import httpx

from schedsvc.domain import SchedsvcError
from schedsvc.observability.metrics import TARGET_REFUSALS

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
    }
)
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class AddressRefusedError(SchedsvcError, PermissionError):
    """An outbound connection was refused by the address policy; ``reason`` names the address class."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"refused to connect to {host} ({address}): {reason} address")
        self.host = host
        self.address = address
        self.reason = reason


def refusal_reason(address: IPAddress | str, allow: Iterable[IPNetwork] = ()) -> str | None:
    """Why the policy refuses a connection to ``address``, or None when it is permitted.

    The reason is a short label (``loopback``, ``private``, ``link_local``, ``metadata``, ``multicast``,
    ``unspecified``, ``reserved``, ``shared``, ``non_global``), also used as the metric label.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    allow = tuple(allow)
    if _allowed(ip, allow):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return refusal_reason(ip.ipv4_mapped, allow)
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            # NAT64 and 6to4 reach the embedded IPv4 address: it alone decides.
            return refusal_reason(embedded, allow)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE:
        return "shared"
    if ip.is_private or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local):
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non_global"
    return None


def _allowed(ip: IPAddress, allow: Sequence[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in allow)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


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
