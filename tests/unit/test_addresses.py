"""The address policy itself (pure): no connection is opened here to any address."""

from __future__ import annotations

import ipaddress

import pytest

from schedsvc.execution.addresses import refusal_reason

ALLOW_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "private"),  # deprecated site-local
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("169.254.1.1", "link_local"),
        ("fe80::1", "link_local"),
        ("100.64.0.1", "shared"),
        ("100.127.255.254", "shared"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "private"),  # class E: reserved, and private in Python's table
        ("255.255.255.255", "private"),
    ],
)
def test_refused_ranges(address: str, reason: str) -> None:
    assert refusal_reason(address) == reason


@pytest.mark.parametrize(
    "address",
    [
        "192.0.2.10",  # documentation
        "198.18.0.1",  # benchmarking
        "0.1.2.3",  # "this network"
        "2001:db8::1",  # documentation
        "100::1",  # discard-only
        "2001::1",  # Teredo
        "::0.0.0.2",  # IPv4-compatible (deprecated)
    ],
)
def test_other_non_global_ranges_are_refused(address: str) -> None:
    assert refusal_reason(address) is not None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:100.64.0.1", "shared"),
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("2002:7f00:0001::1", "loopback"),  # 6to4 embedding 127.0.0.1
        ("2002:c0a8:0101::1", "private"),  # 6to4 embedding 192.168.1.1
    ],
)
def test_ipv4_embedded_in_ipv6_is_judged_by_the_ipv4_address(address: str, reason: str) -> None:
    assert refusal_reason(address) == reason


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_are_permitted(address: str) -> None:
    assert refusal_reason(address) is None


def test_allow_list_permits_exactly_its_networks() -> None:
    assert refusal_reason("127.0.0.1", ALLOW_LOOPBACK) is None
    assert refusal_reason("127.9.9.9", ALLOW_LOOPBACK) is None
    assert refusal_reason("::ffff:127.0.0.1", ALLOW_LOOPBACK) is None  # the mapped form of an allowed address
    assert refusal_reason("::1", ALLOW_LOOPBACK) == "loopback"  # IPv4 networks do not cover IPv6
    assert refusal_reason("10.0.0.1", ALLOW_LOOPBACK) == "private"
    narrow = (ipaddress.ip_network("10.1.0.0/16"),)
    assert refusal_reason("10.1.200.3", narrow) is None
    assert refusal_reason("10.2.0.1", narrow) == "private"
    assert refusal_reason("169.254.169.254", narrow) == "metadata"


def test_allow_list_of_an_ipv6_network() -> None:
    allow = (ipaddress.ip_network("fd00:1234::/32"),)
    assert refusal_reason("fd00:1234::5", allow) is None
    assert refusal_reason("fd00:ec2::254", allow) == "metadata"


def test_accepts_address_objects() -> None:
    assert refusal_reason(ipaddress.ip_address("10.0.0.1")) == "private"
