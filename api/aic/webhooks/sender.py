"""Sending one webhook over the network without becoming an SSRF proxy.

The callback host is resolved at send time and every address it resolves to must be public; the request then
connects to a vetted address itself (no second lookup that DNS rebinding could answer differently) while the
``Host`` header, TLS SNI and certificate verification use the original hostname. Redirects are not followed,
connect and total time are bounded and at most a few KiB of the answer are read.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from aic.core.netguard import (
    AddressRefused,
    IPAddress,
    Target,
    make_client,
    parse_https,
    pinned_request,
    refusal_reason,
    resolve_url,
)

__all__ = ["Outcome", "WebhookRefused", "make_client", "parse_callback", "refusal_reason", "resolve", "send"]


class WebhookRefused(AddressRefused):
    """The callback URL may not be called (bad scheme, or an address inside the network). Never retried."""


def parse_callback(url: str) -> httpx.URL:
    """The URL if it is an absolute https URL with a host; otherwise ``WebhookRefused``."""
    return parse_https(url, "callback", WebhookRefused)


async def resolve(url: str, *, allow_loopback: bool) -> Target:
    """Resolve the callback host now and vet every address (``aic.core.netguard``)."""
    return await resolve_url(parse_callback(url), "callback", allow_loopback=allow_loopback, refused=WebhookRefused)


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
    request = pinned_request(client, "POST", target, ip, content=body, headers=headers)
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
