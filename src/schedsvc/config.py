"""Service configuration: one frozen :class:`Settings`, built once from the environment and passed on."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from schedsvc.domain.errors import ConfigurationError

ROLES = frozenset({"api", "timing", "execution"})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service reads from its environment (``SCHEDSVC_<FIELD>`` in upper case)."""

    mongodb_uri: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    """MongoDB connection string (a replica set or Atlas URI in production)."""
    database: str = "schedsvc"
    """MongoDB database holding every collection of the service."""
    mongodb_timeout_seconds: float = 10.0
    """Longest any one MongoDB operation may take, retries included (the driver's ``timeoutMS``): a server
    that stops answering must fail the operation, never hang a run or a lease renewal forever.
    ``schedsvc migrate`` has no such deadline (building an index on a large collection takes minutes)."""
    nats_url: str = "nats://127.0.0.1:4222"
    """NATS server(s), comma-separated; JetStream must be enabled."""
    redis_url: str | None = None
    """Redis for the response cache and shared rate limits; unset means in-process stores."""
    prefix: str = "schedsvc"
    """Prefix of every NATS subject, stream and Redis key (see ``schedsvc.names``)."""
    roles: frozenset[str] = ROLES
    """Modules this process runs: any of ``api``, ``timing``, ``execution`` (comma-separated)."""
    host: str = "127.0.0.1"
    """Interface the HTTP server binds."""
    port: int = 8000
    """Port of the HTTP server."""
    metrics_port: int = 0
    """Port of a separate server that serves only the Prometheus metrics, so that whatever exposes the API
    port (load balancer, network policies) never exposes ``/metrics``; the image sets 9090. 0 serves
    ``/metrics`` on the API port instead (development and in-process tests)."""
    workers: int = 1
    """granian worker processes serving the API."""
    log_level: str = "INFO"
    """Python log level name."""
    partitions: int = 256
    """Number of timing partitions, recorded in the database on first start; all replicas must agree."""
    lease_ttl_seconds: float = 15.0
    """How long a partition lease lasts without renewal (judged by the database clock)."""
    heartbeat_seconds: float = 3.0
    """How often a timing replica renews its membership and leases."""
    horizon_seconds: float = 30.0
    """How far ahead the timing module loads due jobs into its wheel."""
    max_concurrent_runs: int = 64
    """Runs one execution process performs at once."""
    run_ack_wait_seconds: float = 30.0
    """JetStream ack deadline of a run message; long runs extend it while they work."""
    run_stream_max_age_seconds: int = 86_400
    """How long the run stream keeps a message. A run that waits longer (a retry due later, a fire waiting
    behind its job's running fire) is handed back as a fresh copy before the stream would drop it."""
    stream_replicas: int = 1
    """Replicas of the JetStream run and dead-letter streams (3 on a production NATS cluster)."""
    run_retention_days: int = 30
    """Run history is deleted this many days after a run ends (TTL index), unless the tenant chose otherwise."""
    run_retention_max_days: int = 90
    """The most days a tenant may keep its runs (``PATCH /tenant/settings`` ``runRetentionDays``)."""
    cache_ttl_seconds: int = 60
    """Lifetime of cached ``GET /jobs`` responses."""
    rate_limit_per_minute: int = 1200
    """Default requests per minute per API key."""
    rate_limit_overrides: Mapping[str, int] = field(default_factory=dict)
    """Per-tenant requests per minute, as ``tenant=N,tenant2=M``."""
    failed_auth_per_minute: int = 30
    """Failed authentications a client address may make per minute; then 429 without a database lookup."""
    target_allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """CIDRs that HTTP targets may reach even though they are private, loopback or link-local."""
    nats_subject_grant: str = "tenant.{tenant}.>"
    """Subject pattern a tenant's NATS targets may publish under; ``{tenant}`` is the tenant name."""
    max_request_bytes: int = 1_048_576
    """Largest accepted request body."""
    response_snippet_bytes: int = 1024
    """How much of a target's response body is kept in the run record."""
    response_read_cap_bytes: int = 65_536
    """Most bytes read from a target's response before the connection is dropped."""
    dev_api_key: str | None = None
    """Development only: API key of the ``dev`` tenant created by ``schedsvc dev``."""
    dev_mode: bool = False
    """Set by ``schedsvc dev``: apply migrations at start-up and create the ``dev`` tenant."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``SCHEDSVC_*`` variables; ``overrides`` win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"SCHEDSVC_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _parse(f.name, raw)
            except ValueError as exc:
                raise ConfigurationError(f"SCHEDSVC_{f.name.upper()}: {exc}") from exc
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def to_env(self) -> dict[str, str]:
        """The ``SCHEDSVC_*`` variables that make :meth:`from_env` build these settings again (for child
        processes); fields at their default are left out."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == _default_of(f):
                continue
            env[f"SCHEDSVC_{f.name.upper()}"] = _format(value)
        return env

    def validate(self) -> None:
        """Reject inconsistent settings with a message naming the variable."""
        if not self.roles or not self.roles <= ROLES:
            raise ConfigurationError(f"SCHEDSVC_ROLES: expected a subset of {sorted(ROLES)}")
        if not 0 <= self.metrics_port <= 65_535 or (self.metrics_port and self.metrics_port == self.port):
            raise ConfigurationError("SCHEDSVC_METRICS_PORT: must be 0 or a port other than SCHEDSVC_PORT")
        if not 1 <= self.partitions <= 65_536:
            raise ConfigurationError("SCHEDSVC_PARTITIONS: must be between 1 and 65536")
        if self.heartbeat_seconds * 2 >= self.lease_ttl_seconds:
            raise ConfigurationError("SCHEDSVC_HEARTBEAT_SECONDS: must be under half the lease TTL")
        if not 1 <= self.cache_ttl_seconds <= 3600:
            raise ConfigurationError("SCHEDSVC_CACHE_TTL_SECONDS: must be between 1 and 3600")
        if not 1 <= self.run_retention_days <= self.run_retention_max_days:
            raise ConfigurationError(
                "SCHEDSVC_RUN_RETENTION_DAYS: must be between 1 and SCHEDSVC_RUN_RETENTION_MAX_DAYS"
            )
        if not 10 <= self.run_stream_max_age_seconds <= 30 * 86_400:
            raise ConfigurationError("SCHEDSVC_RUN_STREAM_MAX_AGE_SECONDS: must be between 10 and 2592000 (30 days)")
        if "{tenant}" not in self.nats_subject_grant:
            raise ConfigurationError("SCHEDSVC_NATS_SUBJECT_GRANT: must contain {tenant}")


def _default_of(f: Any) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _format(value: Any) -> str:
    """The inverse of :func:`_parse` for one value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, frozenset):
        return ",".join(sorted(value))
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _parse(name: str, raw: str) -> Any:
    kind = Settings.__dataclass_fields__[name].type
    if name == "roles":
        return frozenset(r.strip() for r in raw.split(",") if r.strip())
    if name == "rate_limit_overrides":
        pairs = (item.split("=", 1) for item in raw.split(",") if item.strip())
        return {k.strip(): int(v) for k, v in pairs}
    if name == "target_allow_networks":
        return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in raw.split(",") if c.strip())
    if kind in ("bool", "bool | None"):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {raw!r}")
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    return raw
