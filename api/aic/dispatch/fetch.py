"""Fetching an image submitted by URL (``image_url``), with the webhook sender's SSRF vetting (``aic.core.netguard``).

Each hop's host is resolved and every address vetted before the request connects to one of them (pinned: no
second lookup); at most ``MAX_REDIRECTS`` redirects are followed, each vetted again; the body is read as a stream
and given up as soon as it passes the size limit; the whole fetch is bounded by one timeout. The outcome is the
bytes, or ``FetchRefused`` (permanent: the job fails with INVALID_IMAGE) or ``FetchUnavailable`` (transient: a
5xx, a timeout or a network error, retried with backoff).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from aic.core.netguard import AddressRefused, make_client, parse_https, pinned_request, resolve_url
from aic.core.settings import DispatcherSettings

MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADERS = {
    "Accept": "image/jpeg, image/png, image/webp",
    "Accept-Encoding": "identity",
    "User-Agent": "aic-dispatcher",
}
"""``identity``: the body is read raw (never decompressed here, so no compression bomb); images are compressed already
and a body a server compressed anyway is no image: refused as an upload would be."""


class FetchRefused(AddressRefused):
    """The image cannot be had from this URL: never retried (the message says why)."""


class FetchUnavailable(Exception):
    """The URL's server failed or could not be reached: worth another try."""


@dataclass(frozen=True)
class ImageFetcher:
    """The dispatcher's one fetcher: its client and limits."""

    client: httpx.AsyncClient
    max_bytes: int
    timeout_s: float
    allow_loopback: bool = False

    @classmethod
    def from_settings(cls, settings: DispatcherSettings, max_bytes: int) -> ImageFetcher:
        timeout_s = settings.image_url_timeout_s
        client = make_client(settings.image_url_ca_bundle, min(timeout_s, 10.0), timeout_s)
        return cls(client, max_bytes, timeout_s, settings.image_url_allow_loopback)

    async def close(self) -> None:
        await self.client.aclose()

    async def fetch(self, url: str) -> bytes:
        """The image's bytes; ``FetchRefused`` or ``FetchUnavailable`` otherwise."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._follow(url)
        except TimeoutError:
            raise FetchUnavailable(f"image URL timed out after {self.timeout_s:g}s") from None
        except httpx.TimeoutException as exc:
            raise FetchUnavailable(f"image URL timed out ({type(exc).__name__})") from None
        except (httpx.HTTPError, OSError) as exc:
            raise FetchUnavailable(f"image URL unreachable: {type(exc).__name__}: {exc}"[:300]) from None

    async def _follow(self, url: str) -> bytes:
        parsed = parse_https(url, "image", FetchRefused)
        for hop in range(MAX_REDIRECTS + 1):
            target = await resolve_url(parsed, "image", allow_loopback=self.allow_loopback, refused=FetchRefused)
            for index, ip in enumerate(target.addresses):
                request = pinned_request(self.client, "GET", target, ip, headers=_HEADERS)
                try:
                    response = await self.client.send(request, stream=True)
                except httpx.ConnectError:
                    if index + 1 < len(target.addresses):
                        continue  # the next vetted address of the same host
                    raise
                try:
                    if response.status_code in _REDIRECTS:
                        location = response.headers.get("location")
                        if not location:
                            raise FetchRefused(f"image URL answered {response.status_code} without a Location")
                        if hop == MAX_REDIRECTS:
                            raise FetchRefused(f"image URL redirected more than {MAX_REDIRECTS} times")
                        # relative to the URL asked for, not the pinned address
                        parsed = parse_https(str(parsed.join(location)), "redirected image", FetchRefused)
                        break
                    if response.status_code >= 500:
                        raise FetchUnavailable(f"image URL answered {response.status_code}")
                    if response.status_code != 200:
                        raise FetchRefused(f"image URL answered {response.status_code}")
                    return await self._read(response)
                finally:
                    await response.aclose()
        raise AssertionError("unreachable: the last hop returns or raises")

    async def _read(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchRefused(f"image at URL is {declared} bytes, over the limit of {self.max_bytes}")
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > self.max_bytes:
                raise FetchRefused(f"image at URL exceeds the limit of {self.max_bytes} bytes")
        return bytes(body)
