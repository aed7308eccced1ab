"""Sending one webhook over the network without becoming an SSRF proxy.

The callback host is resolved at send time and every address it resolves to must be public; the request then
connects to a vetted address itself (no second lookup that DNS rebinding could answer differently) while the
``Host`` header, TLS SNI and certificate verification use the original hostname. Redirects are not followed,
connect and total time are bounded and at most a few KiB of the answer are read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
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


class WebhookRefused(Exception):
    """The callback URL may not be called (bad scheme, or an address inside the network). Never retried."""


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
    """Why ``ip`` may not receive a webhook, or ``None`` when it is a public unicast address.

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
    """A callback URL split into what the request needs: where to connect and what to present."""

    url: httpx.URL
    host: str
    port: int
    addresses: list[IPAddress]


def parse_callback(url: str) -> httpx.URL:
    """The URL if it is an absolute https URL with a host; otherwise ``WebhookRefused``."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise WebhookRefused("invalid callback URL") from None
    if parsed.scheme != "https" or not parsed.host:
        raise WebhookRefused("callback URL must be https with a host")
    return parsed


async def resolve(url: str, *, allow_loopback: bool) -> Target:
    """Resolve the callback host now and vet every address; one bad address refuses the whole host."""
    parsed = parse_callback(url)
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
            raise WebhookRefused(f"callback host resolves to a {reason}")
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise OSError("host has no addresses")
    return Target(url=parsed, host=parsed.host, port=port, addresses=addresses)


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """System trust store, or only ``ca_bundle`` when set (tests trust their own CA this way)."""
    if ca_bundle is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_bundle))


def make_client(ca_bundle: Path | None, connect_timeout_s: float, timeout_s: float) -> httpx.AsyncClient:
    """The process's one webhook client. Keep-alive is off: connections are keyed by the pinned IP, so a pooled
    connection made for one hostname (its SNI, its certificate) must never carry another hostname's request."""
    return httpx.AsyncClient(
        verify=tls_context(ca_bundle),
        timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=0),
        follow_redirects=False,
        trust_env=False,  # a proxy from the environment would resolve the name again, undoing the pin
    )


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: a status code, or an error text (never both)."""

    status_code: int | None
    error: str | None
    duration_ms: int
    retry_after: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def _post_pinned(
    client: httpx.AsyncClient, target: Target, ip: IPAddress, body: bytes, headers: dict[str, str], max_bytes: int
) -> httpx.Response:
    url = target.url.copy_with(host=str(ip), port=target.port)
    request = client.build_request(
        "POST",
        url,
        content=body,
        headers={**headers, "Host": target.url.netloc.decode()},
        # TLS for the hostname while the socket goes to the vetted IP
        extensions={"sni_hostname": target.host},
    )
    response = await client.send(request, stream=True)
    try:
        read = 0
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read >= max_bytes:  # the answer is not needed; a huge one must not cost memory or time
                break
    finally:
        await response.aclose()
    return response


async def send(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_loopback: bool,
    total_timeout_s: float,
    max_response_bytes: int,
) -> Outcome:
    """One delivery attempt. ``WebhookRefused`` propagates (permanent); everything else becomes an Outcome."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        async with asyncio.timeout(total_timeout_s):
            target = await resolve(url, allow_loopback=allow_loopback)
            for index, ip in enumerate(target.addresses):
                try:
                    response = await _post_pinned(client, target, ip, body, headers, max_response_bytes)
                except httpx.ConnectError:
                    if index + 1 < len(target.addresses):
                        continue  # the next vetted address of the same host
                    raise
                return Outcome(response.status_code, None, elapsed(), response.headers.get("retry-after"))
    except TimeoutError:
        return Outcome(None, "timeout", elapsed())
    except httpx.TimeoutException as exc:
        return Outcome(None, f"timeout ({type(exc).__name__})", elapsed())
    except httpx.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:300], elapsed())
    except OSError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:300], elapsed())
    raise AssertionError("unreachable: resolve() returns at least one address")
