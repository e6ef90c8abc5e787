"""The target policy (domain/targets.py): the rules the API applies when a job is stored and execution
applies before every call. Pure: nothing here opens a connection."""

from __future__ import annotations

import ipaddress

import pytest

from schedsvc.domain.models import HttpTarget, NatsTarget
from schedsvc.domain.targets import header_problems, host_problem, subject_problem, target_problems, url_problems

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.mark.parametrize(
    "host",
    [
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "0x7f000001",
        "127.0.0.01",
        "1.2.3.4.",
        "example.com.",
        "8.8.8",
        "1.2.3.999",
    ],
)
def test_non_canonical_ip_literals_and_trailing_dots_are_refused(host: str) -> None:
    # Refused even where loopback is allowed: the spelling, not the address, is the problem.
    assert host_problem(host, LOOPBACK) is not None


@pytest.mark.parametrize(
    "host", ["8.8.8.8", "hooks.example.com", "2001:4860:4860::8888", "a1.example.com", "1a.example"]
)
def test_canonical_literals_and_names_pass(host: str) -> None:
    assert host_problem(host) is None


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("x.localhost", "loopback"),
        ("10.0.0.1", "private"),
        ("169.254.169.254", "metadata"),
        ("::ffff:192.168.0.1", "private"),
    ],
)
def test_refused_literals_name_the_reason_unless_allowed(host: str, reason: str) -> None:
    assert reason in (host_problem(host) or "")
    if reason == "loopback":
        assert host_problem(host, LOOPBACK) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "http:///x",
        "http://user:pw@example.com/",
        "http://example.com:0/",
        "http://exa mple.com/",
        "http://example.com/\r\n",
        "http://[fe80::1%25eth0]/",
        "http://example.com:99999/",
    ],
)
def test_bad_urls(url: str) -> None:
    assert url_problems(url)


@pytest.mark.parametrize(
    "headers",
    [
        {"Bad Name": "1"},
        {"X-A": "a\r\nb"},
        {"X-A": "a\x00"},
        {"idempotency-key": "x"},
        {"Connection": "close"},
        {"TE": "trailers"},
        {"Host": "x"},
        {"Webhook-Signature": "v1,x"},
        {"X-A": "1", "x-a": "2"},
    ],
)
def test_bad_headers_are_refused_case_insensitively(headers: dict[str, str]) -> None:
    assert header_problems(headers, "target.headers")
    assert header_problems(headers, "target.headers", nats=True)


def test_nats_reserves_its_own_headers_and_subjects_are_printable_tokens() -> None:
    assert header_problems({"Nats-Msg-Id": "1"}, "h", nats=True) and not header_problems({"Nats-Msg-Id": "1"}, "h")
    assert header_problems({"X-Mine": "1", "Content-Type": "text/plain"}, "h", nats=True) == []
    for subject in ("a..b", "a.*", "a.>", "a b", "a.\x07", "a.\u200bb\n", ""):
        assert subject_problem(subject) is not None, subject
    assert subject_problem("tenant.acme.orders-created") is None


def test_target_problems_name_each_field() -> None:
    http = HttpTarget(url="http://127.1/", headers={"Upgrade": "h2c", "X-Ok": "1"})
    fields = [f for f, _ in target_problems(http, allow=(), grants=[], reserved_roots=[])]
    assert fields == ["target.url", "target.headers.Upgrade"]
    nats = NatsTarget(subject="orders.created", headers={"Nats-Expected-Stream": "x"})
    fields = [f for f, _ in target_problems(nats, allow=(), grants=["tenant.acme.>"], reserved_roots=["schedsvc."])]
    assert fields == ["target.subject", "target.headers.Nats-Expected-Stream"]
    ok = NatsTarget(subject="tenant.acme.orders")
    assert target_problems(ok, allow=(), grants=["tenant.acme.>"], reserved_roots=["schedsvc."]) == []
