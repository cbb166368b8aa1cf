"""Where webhooks may go and how they leave: the deny list and the one webhook ClientSession.

RELAY_WEBHOOK_DENY_CIDRS is enforced twice: on IP literals before a request is made (and
when a URL is registered, for a clear 422), and on every resolved address at connect time.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Sequence

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from relay import __version__
from relay.core.config import Settings

USER_AGENT = f"mindvideo-relay/{__version__}"
# A resolved address is cached this long: short, so a changed DNS record (or a rebinding
# attempt) is re-resolved and re-checked against the deny list soon.
DNS_CACHE_TTL_S = 10


class DeniedAddress(OSError):
    """The webhook target is (or resolves to) an address in RELAY_WEBHOOK_DENY_CIDRS."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# 0.0.0.0/8 is "this host on this network" (RFC 1122); Linux dials 0.0.0.0 as 127.0.0.1.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_LOOPBACK = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


def denied_network(address: str, deny: Sequence[Network]) -> Network | None:
    """The denied network containing `address` (an IP literal), or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone index
    except ValueError:
        return None
    # ::ffff:169.254.169.254 reaches the IPv4 address: check it as IPv4 too.
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    # Connecting to the unspecified address (0.0.0.0, ::) reaches this host's own loopback
    # services, so it is denied wherever loopback is, even if the list names only loopback.
    if any(c.is_unspecified or c in _THIS_NETWORK for c in candidates):
        candidates += _LOOPBACK
    for candidate in candidates:
        for network in deny:
            if candidate.version == network.version and candidate in network:
                return network
    return None


def literal_ip_denied(url: str, deny: Sequence[Network]) -> str | None:
    """Why a URL whose host is an IP literal may not be called (None: allowed or a name).

    aiohttp does not pass IP literals through the resolver, so they are checked here.
    """
    return _literal_ip_denied(url, tuple(deny))


@functools.lru_cache(maxsize=4096)  # checked on every attempt; targets repeat
def _literal_ip_denied(url: str, deny: tuple[Network, ...]) -> str | None:
    host = URL(url).host or ""
    network = denied_network(host, deny)
    if network is None:
        return None
    return f"target address {host} is in denied network {network} (RELAY_WEBHOOK_DENY_CIDRS)"


class DenyingResolver(ThreadedResolver):
    """Resolves names, then refuses the connection if any address is in a denied network.

    Runs at connect time, so the check applies to the address actually dialled.
    """

    def __init__(self, deny: Sequence[Network]) -> None:
        super().__init__()
        self.deny = tuple(deny)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of `host`; DeniedAddress when one of them is denied."""
        results = await super().resolve(host, port, family)
        for result in results:
            network = denied_network(result["host"], self.deny)
            if network is not None:
                raise DeniedAddress(
                    f"{host} resolves to {result['host']}, in denied network {network} "
                    "(RELAY_WEBHOOK_DENY_CIDRS)"
                )
        return results


def create_webhook_session(settings: Settings) -> aiohttp.ClientSession:
    """The one ClientSession webhooks leave through.

    Certificates are verified (aiohttp's default), resolved addresses are checked against
    the deny list, no cookies are kept between receivers, proxies from the environment are
    ignored (a proxy would hide the real target from the address check). Call inside the
    running event loop.
    """
    connector = aiohttp.TCPConnector(
        limit=settings.dispatch_concurrency,
        resolver=DenyingResolver(settings.webhook_deny_cidrs),
        ttl_dns_cache=DNS_CACHE_TTL_S,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_s),
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
        trust_env=False,
    )
