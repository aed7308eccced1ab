"""Outbound requests to addresses users name (webhook callbacks, images by URL) without becoming an SSRF proxy.

A host is resolved at request time and every address it resolves to must be public; the caller then connects to
a vetted address itself (no second lookup that DNS rebinding could answer differently) while the ``Host``
header, TLS SNI and certificate verification use the original hostname. Shared by the webhook sender and the
dispatcher's image fetcher, which may not import each other.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CLOUD_METADATA = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    }
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


_REFUSED: list[tuple[str, Callable[[IPAddress], bool]]] = [
    ("unspecified address", lambda ip: ip.is_unspecified),
    ("multicast address", lambda ip: ip.is_multicast),
    ("link-local address", lambda ip: ip.is_link_local),
    ("carrier-grade NAT address", lambda ip: ip in _CGNAT),
    ("reserved address", lambda ip: ip.is_reserved),
    # includes the documentation and benchmarking ranges, per the IANA special-purpose registries
    ("private address", lambda ip: ip.is_private),
    ("non-global address", lambda ip: not ip.is_global),
]
"""First match names the reason; order matters only for the message."""


class AddressRefused(Exception):
    """The URL may not be requested (bad scheme, or an address inside the network). Never retried."""


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64): reaching it reaches the IPv4 host."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal_reason(ip: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``ip`` may not be requested, or ``None`` when it is a public unicast address.

    ``allow_loopback`` (tests only) lets loopback through and nothing else.
    """
    inner = _embedded_ipv4(ip)
    if inner is not None:
        reason = refusal_reason(inner, allow_loopback=allow_loopback)
        return f"{reason} (embedded in {ip})" if reason else None
    if ip in CLOUD_METADATA:
        return "cloud metadata address"
    if ip.is_loopback:
        return None if allow_loopback else "loopback address"
    return next((reason for reason, applies in _REFUSED if applies(ip)), None)


@dataclass(frozen=True)
class Target:
    """A URL split into what the request needs: where to connect and what to present."""

    url: httpx.URL
    host: str
    port: int
    addresses: list[IPAddress]


def parse_https(url: str, what: str, refused: type[AddressRefused] = AddressRefused) -> httpx.URL:
    """The URL if it is an absolute https URL with a host; otherwise ``refused``."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise refused(f"invalid {what} URL") from None
    if parsed.scheme != "https" or not parsed.host:
        raise refused(f"{what} URL must be https with a host")
    return parsed


async def resolve_url(
    parsed: httpx.URL, what: str, *, allow_loopback: bool, refused: type[AddressRefused] = AddressRefused
) -> Target:
    """Resolve the URL's host now and vet every address; one bad address refuses the whole host."""
    port = parsed.port or 443
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parsed.host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve host: {exc.strerror}") from None  # transient: retried
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        reason = refusal_reason(ip, allow_loopback=allow_loopback)
        if reason:
            raise refused(f"{what} host resolves to a {reason}")
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise OSError("host has no addresses")
    return Target(url=parsed, host=parsed.host, port=port, addresses=addresses)


def pinned_request(
    client: httpx.AsyncClient,
    method: str,
    target: Target,
    ip: IPAddress,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Request:
    """A request to ``target`` whose socket goes to the vetted ``ip`` while TLS and ``Host`` name the hostname."""
    return client.build_request(
        method,
        target.url.copy_with(host=str(ip), port=target.port),
        content=content,
        headers={**(headers or {}), "Host": target.url.netloc.decode()},
        extensions={"sni_hostname": target.host},
    )


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """System trust store, or only ``ca_bundle`` when set (tests trust their own CA this way)."""
    if ca_bundle is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_bundle))


def make_client(ca_bundle: Path | None, connect_timeout_s: float, timeout_s: float) -> httpx.AsyncClient:
    """A client for pinned requests. Keep-alive is off: connections are keyed by the pinned IP, so a pooled
    connection made for one hostname (its SNI, its certificate) must never carry another hostname's request."""
    return httpx.AsyncClient(
        verify=tls_context(ca_bundle),
        timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=0),
        follow_redirects=False,
        trust_env=False,  # a proxy from the environment would resolve the name again, undoing the pin
    )
