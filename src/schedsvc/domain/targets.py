"""The target policy: which URLs, addresses, header names and values, and NATS subjects a job may use.

One set of rules, applied twice: by the API when a job is created or changed (so a target that can never
be called is refused with 422 at once) and by execution before every call (so a job stored under older
rules, or edited in the database, is still held to them). The socket-level half of the SSRF guard —
checking every address a *name* resolves to, at connect time — lives in ``execution/addresses.py`` and
takes its address rules (:func:`refusal_reason`) from here.

Pure: ``ipaddress`` and ``urllib.parse`` only, no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from schedsvc.domain.models import HttpTarget, NatsTarget, NotificationTarget, Target

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Problem = tuple[str, str]
"""``(field, message)``: the field as the API names it (``target.url``, ``target.headers.X-Key``)."""

METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
    }
)
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))

# RFC 9110 section 5.1: a field name is a token.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# RFC 9110 section 5.5: a field value is visible characters, spaces and tabs; CR, LF and NUL (and every
# other control character) could split or truncate the header on the wire.
_FIELD_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\uffff]*$")
# WHATWG URL: a host whose last label is a number is parsed as IPv4 in any of its legacy spellings
# (``127.1``, ``2130706433``, ``0x7f.0.0.1``, ``0177.0.0.1``), and resolvers accept them too.
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)

HOP_BY_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
"""RFC 9110 section 7.6.1: they describe one connection, never a message."""
SERVICE_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "accept-encoding",
        "proxy-authorization",
        "idempotency-key",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-schedsvc-job-id",
        "x-schedsvc-scheduled-time",
        "x-schedsvc-attempt",
    }
)
"""Set by the service (or its HTTP client) on every delivery; a job may not send its own."""
NATS_RESERVED_PREFIX = "nats-"
"""``Nats-Msg-Id``, ``Nats-Expected-*`` and the like steer JetStream itself."""


def refusal_reason(address: IPAddress | str, allow: Iterable[IPNetwork] = ()) -> str | None:
    """Why the policy refuses a connection to ``address``, or None when it is permitted.

    The reason is a short label (``loopback``, ``private``, ``link_local``, ``metadata``, ``multicast``,
    ``unspecified``, ``reserved``, ``shared``, ``non_global``), also used as the metric label. An
    address inside ``allow`` is always permitted.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    allow = tuple(allow)
    if any(ip.version == net.version and ip in net for net in allow):
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


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def host_problem(host: str, allow: Iterable[IPNetwork] = ()) -> str | None:
    """Why a URL's host is refused before any name resolution, or None.

    Refused: a trailing dot, IP literals in any but their canonical spelling (a resolver would read
    ``127.1`` as 127.0.0.1, so a non-canonical literal could slip past a check that reads it differently),
    and literals or ``localhost`` names the address policy refuses. Other names are checked against every
    address they resolve to, at connect time.
    """
    if host.endswith("."):
        return "the host must not end with a dot"
    lowered = host.lower()
    if lowered == "localhost" or lowered.endswith(".localhost"):
        address: IPAddress = ipaddress.IPv4Address("127.0.0.1")
    elif ":" in host:
        # Every IPv6 spelling means one address to every parser (unlike IPv4's legacy forms), so any
        # valid one is accepted and judged by the address it names.
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return "the host is not a valid IPv6 address"
    elif _NUMERIC_LABEL.match(host.rsplit(".", 1)[-1]):
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            return "IPv4 addresses must be written as four decimal numbers without leading zeros"
        if str(address) != host:
            return f"IPv4 addresses must be written canonically ({address})"
    else:
        return None
    reason = refusal_reason(address, allow)
    if reason is None:
        return None
    return (
        f"the URL's host {host} is a {reason.replace('_', '-')} address ({address}), which targets may not "
        "reach (SCHEDSVC_TARGET_ALLOW_NETWORKS can permit it)"
    )


def url_problems(url: str, allow: Iterable[IPNetwork] = (), field: str = "target.url") -> list[Problem]:
    """Problems of a webhook URL: absolute http(s), no credentials, an acceptable host."""
    if any(c in url for c in "\r\n\t\x00 ") or not url.isprintable():
        return [(field, "the URL must not contain spaces or control characters")]
    try:
        parts = urlsplit(url)
        port = parts.port
        hostname = parts.hostname
    except ValueError as exc:
        return [(field, f"the URL is not valid: {exc}")]
    if parts.scheme not in ("http", "https") or not hostname:
        return [(field, "the URL must be an absolute http or https URL")]
    if parts.username is not None or parts.password is not None:
        return [(field, "the URL must not contain credentials; use headers")]
    if port == 0:
        return [(field, "the URL's port must be between 1 and 65535")]
    if "%" in hostname:
        return [(field, "the host must not carry an IPv6 zone index")]
    problem = host_problem(hostname, allow)
    return [(field, problem)] if problem else []


def header_problems(headers: Mapping[str, str], field: str, *, nats: bool = False) -> list[Problem]:
    """Problems of a job's own headers, each named ``<field>.<header name>``.

    Names are RFC 9110 tokens, unique regardless of case; values hold no CR, LF, NUL or other control
    character; hop-by-hop headers and the ones the service sets are refused case-insensitively (for NATS
    also every ``Nats-`` header, which steer JetStream).
    """
    problems: list[Problem] = []
    seen: set[str] = set()
    for name, value in headers.items():
        where = f"{field}.{name}" if _TOKEN.match(name) else field
        lowered = name.lower()
        if not _TOKEN.match(name):
            problems.append((where, f"header name {name!r} is not an RFC 9110 token"))
        elif lowered in seen:
            problems.append((where, f"header {name!r} is given twice (names are case-insensitive)"))
        elif lowered in HOP_BY_HOP_HEADERS:
            problems.append((where, f"{name!r} is a hop-by-hop header"))
        elif lowered in SERVICE_HEADERS or (nats and lowered.startswith(NATS_RESERVED_PREFIX)):
            problems.append((where, f"header {name!r} is set by the service"))
        if not _FIELD_VALUE.match(value):
            problems.append((where, "header values must not contain CR, LF, NUL or other control characters"))
        seen.add(lowered)
    return problems


def subject_problem(subject: str) -> str | None:
    """Why a NATS subject is not a plain publish subject: dot-separated printable tokens, no wildcards."""
    for token in subject.split("."):
        if not token:
            return "the subject must be dot-separated non-empty tokens"
        if any(c in "*>" or c.isspace() or not c.isprintable() for c in token):
            return "subject tokens must be printable, without spaces, control characters or wildcards"
    return None


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` matches one token, a final ``>`` one or more."""
    p_tokens, s_tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(p_tokens):
        if token == ">":
            return i == len(p_tokens) - 1 and len(s_tokens) > i
        if i >= len(s_tokens) or (token != "*" and token != s_tokens[i]):
            return False
    return len(p_tokens) == len(s_tokens)


def subject_allowed(subject: str, grants: Sequence[str], reserved_roots: Sequence[str]) -> str | None:
    """Why a tenant may not publish to ``subject``, or None when it may."""
    problem = subject_problem(subject)
    if problem:
        return problem
    if any(subject.startswith(root) or subject == root.rstrip(".") for root in reserved_roots):
        return "subject is reserved for the service"
    if not any(subject_matches(g, subject) for g in grants):
        return f"subject is outside the subjects granted to this tenant ({', '.join(grants)})"
    return None


def target_problems(
    target: Target,
    *,
    allow: Iterable[IPNetwork],
    grants: Sequence[str],
    reserved_roots: Sequence[str],
    field: str = "target",
) -> list[Problem]:
    """Every problem of a target under this policy (empty: the target may be stored and called)."""
    match target:
        case HttpTarget():
            return url_problems(target.url, allow, f"{field}.url") + header_problems(target.headers, f"{field}.headers")
        case NatsTarget():
            problems = header_problems(target.headers, f"{field}.headers", nats=True)
            reason = subject_allowed(target.subject, grants, reserved_roots)
            return ([(f"{field}.subject", reason)] if reason else []) + problems
    return [(field, f"unknown target kind {type(target).__name__}")]


def notification_problems(
    target: NotificationTarget, *, allow: Iterable[IPNetwork], field: str = "notify"
) -> list[Problem]:
    """Every problem of a notification target: the rules of an HTTP target's URL and headers."""
    return url_problems(target.url, allow, f"{field}.url") + header_problems(target.headers, f"{field}.headers")
