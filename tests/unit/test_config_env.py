"""Settings travel to child processes as ``SCHEDSVC_*`` variables and come back unchanged."""

from __future__ import annotations

import ipaddress

import pytest

from schedsvc import embedded
from schedsvc.config import Settings
from schedsvc.domain.rules import describe_partitions


def test_settings_survive_the_environment() -> None:
    settings = Settings(
        database="db",
        roles=frozenset({"api", "timing"}),
        target_allow_networks=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
        rate_limit_overrides={"acme": 10, "globex": 20},
        dev_mode=True,
        lease_ttl_seconds=4.0,
        heartbeat_seconds=1.0,
        redis_url="redis://127.0.0.1:1/0",
    )
    env = settings.to_env()
    assert Settings.from_env(env) == settings
    assert "SCHEDSVC_PORT" not in env, "defaults are left to the default"
    assert Settings.from_env(Settings().to_env()) == Settings()


def test_partitions_are_logged_as_ranges() -> None:
    assert describe_partitions(range(256)) == "256: 0-255"
    assert describe_partitions([9, 1, 2, 3, 7, 10, 3]) == "6: 1-3,7,9-10"
    assert describe_partitions([]) == "none"


def test_the_embedded_server_kind_is_checked() -> None:
    assert embedded.mongodb_server_kind({}) == "rust"
    assert embedded.mongodb_server_kind({embedded.MONGODB_SERVER_ENV: "Python"}) == "python"
    with pytest.raises(embedded.MissingServerError, match="rust, python"):
        embedded.mongodb_server_kind({embedded.MONGODB_SERVER_ENV: "mongod"})
