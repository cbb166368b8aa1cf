"""Webhook egress: the default deny list protects the pod, and 0.0.0.0 / :: count as loopback."""

from __future__ import annotations

import ipaddress

import pytest

from relay.core.config import Settings
from relay.core.egress import denied_network, literal_ip_denied

LOOPBACK_ONLY = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128"))
IPV4_LOOPBACK_ONLY = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.mark.parametrize(
    "url",
    ["http://0.0.0.0:8080/hooks", "http://[::]:8080/hooks", "http://[::ffff:0.0.0.0]:8080/"],
)
def test_the_unspecified_address_is_denied_when_loopback_is(url: str) -> None:
    # Dialling 0.0.0.0 or :: reaches this host's loopback services.
    assert literal_ip_denied(url, LOOPBACK_ONLY)
    assert literal_ip_denied(url, IPV4_LOOPBACK_ONLY)


def test_the_unspecified_address_is_allowed_when_loopback_is_allowed() -> None:
    link_local = (ipaddress.ip_network("169.254.0.0/16"),)
    assert literal_ip_denied("http://0.0.0.0:8080/", link_local) is None


def default_deny() -> tuple:
    return Settings(database_url=None).webhook_deny_cidrs


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "0.0.0.0",
        "0.1.2.3",
        "::",
        "169.254.169.254",
        "fe80::1%eth0",
        # IPv4-mapped IPv6 forms reach the IPv4 address
        "::ffff:127.0.0.1",
        "::ffff:0.0.0.0",
        "::ffff:169.254.169.254",
    ],
)
def test_default_deny_list_covers_loopback_unspecified_and_link_local(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RELAY_WEBHOOK_DENY_CIDRS", raising=False)
    assert denied_network(address, default_deny()) is not None


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "172.16.0.5", "192.168.1.10", "fd00::5", "93.184.216.34"]
)
def test_default_deny_list_keeps_private_and_public_ranges_allowed(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RELAY_WEBHOOK_DENY_CIDRS", raising=False)
    assert denied_network(address, default_deny()) is None
