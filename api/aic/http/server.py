"""Serving the app with uvicorn, with the request bounds a public service needs before any route runs.

httptools (uvicorn's fast HTTP parser) accepts a request line, header lines and header counts of any size, and
the default WebSocket implementation leaves an oversized handshake unanswered, the connection open for minutes.
``bounded_protocol`` counts while httptools parses: a request line over ``MAX_REQUEST_LINE_BYTES`` answers 414,
a header line over ``MAX_HEADER_LINE_BYTES``, more than ``MAX_HEADER_BYTES`` in all or more than ``MAX_HEADERS``
answer 431, each with the ErrorResponse JSON and ``Connection: close``, WebSocket upgrades included (they are
refused before the handshake is handed on, and what passes is within the WebSocket library's own limits).
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aic.core.enums import ErrorCode
from aic.core.schemas import ErrorResponse
from aic.core.settings import ApiSettings
from aic.core.timeutil import now_iso

MAX_REQUEST_LINE_BYTES: Final = 8192
MAX_HEADER_LINE_BYTES: Final = 8190
"""One header line, `name: value`; the websockets library refuses lines of 8192 bytes and more."""
_REQUEST_LINE_SLACK: Final = 24
"""Method, spaces and `HTTP/1.1` around the request target."""
_REASONS: Final = {414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class _Refused(Exception):
    """Raised inside an httptools callback: the parser stops and uvicorn calls ``send_400_response``."""


def refusal(status: int, detail: str) -> bytes:
    """A whole HTTP response refusing a request: the ErrorResponse JSON, then the connection closes."""
    request_id = uuid.uuid4().hex
    error = ErrorResponse(error=str(ErrorCode.HTTP_ERROR), detail=detail, timestamp=now_iso(), request_id=request_id)
    body = msgspec.json.encode(error)
    head = [
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"x-request-id: " + request_id.encode() + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol counting the request line and headers while they are parsed."""

    max_header_bytes = 16 * 1024
    max_headers = 100
    _refusal: tuple[int, str] | None = None
    _header_bytes = 0
    _header_count = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = self._header_count = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) + _REQUEST_LINE_SLACK > MAX_REQUEST_LINE_BYTES:
            self._refuse(414, f"Request line too long (limit {MAX_REQUEST_LINE_BYTES} bytes)")

    def on_header(self, name: bytes, value: bytes) -> None:
        line = len(name) + len(value) + 2
        self._header_bytes += line
        self._header_count += 1
        if line > MAX_HEADER_LINE_BYTES:
            self._refuse(431, f"A header line is too long (limit {MAX_HEADER_LINE_BYTES} bytes)")
        if self._header_bytes > self.max_header_bytes:
            self._refuse(431, f"Request headers too large (limit {self.max_header_bytes} bytes in all)")
        if self._header_count > self.max_headers:
            self._refuse(431, f"Too many request headers (limit {self.max_headers})")
        super().on_header(name, value)

    def _refuse(self, status: int, detail: str) -> None:
        self._refusal = (status, detail)
        raise _Refused(detail)

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
            return
        self.transport.write(refusal(*self._refusal))
        self.transport.close()


def bounded_protocol(settings: ApiSettings) -> type[HttpToolsProtocol]:
    """The protocol class with this API's bounds (``MAX_HEADER_BYTES`` 0 turns them off: plain httptools)."""
    if settings.max_header_bytes <= 0:
        return HttpToolsProtocol
    bounds = {"max_header_bytes": settings.max_header_bytes, "max_headers": settings.max_headers}
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), bounds)


def serve(app: Any, settings: ApiSettings) -> None:
    """Run ``app`` on ``API_HOST:API_PORT`` until SIGTERM or SIGINT."""
    import uvicorn

    proxies = settings.forwarded_allow_ips.strip()
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        log_config=None,  # no handlers of uvicorn's own: its lines go through aic.core.logs's (format, redaction)
        access_log=False,
        timeout_graceful_shutdown=10,
        loop="auto",  # uvloop: about a third less CPU per request than asyncio's loop (bench/)
        http=bounded_protocol(settings),  # httptools underneath, bounded
        ws="websockets-sansio",
        # the client IP (rate limits) is the TCP peer, unless the peer is a proxy listed in FORWARDED_ALLOW_IPS
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        server_header=False,
    )
