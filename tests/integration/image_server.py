"""A real HTTPS server of images for tests of submits by URL: TLS from a trustme CA, behaviour chosen by path.

``/img/<name>`` an image set with ``serve``; ``/missing`` 404; ``/gate/<key>/<name>`` the image once the test
lets it (``hold``); ``/flaky/<key>/<name>`` 503 the first time a key is asked for, then the image; ``/down/<key>``
always 503; ``/gzip/<name>`` the image gzip-encoded whatever was asked for; ``/redirect?to=<url>`` 302 to ``url``;
``/big`` more bytes than a small limit allows, without a content-length. Every request's path is recorded.
"""

from __future__ import annotations

import gzip
import ssl
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme


class ImageServer:
    def __init__(self, ca: trustme.CA) -> None:
        self.images: dict[str, bytes] = {}
        self.paths: list[str] = []
        self._seen: Counter[str] = Counter()
        self._gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("localhost", "127.0.0.1", "::1").configure_cert(context)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, headers, body = server.answer(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "transfer-encoding" not in headers:
                    self.send_header("content-length", str(len(body)))
                self.send_header("connection", "close")
                try:
                    self.end_headers()
                    if "transfer-encoding" in headers:  # chunked: the size is known only by reading
                        for start in range(0, len(body), 65536):
                            part = body[start : start + 65536]
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                        self.wfile.write(b"0\r\n\r\n")
                    else:
                        self.wfile.write(body)
                except OSError:
                    pass  # the client hung up (a body over its limit)
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"https://localhost:{self.port}{path}"

    def serve(self, name: str, content: bytes) -> str:
        """Serve ``content`` at ``/img/<name>``: its URL."""
        self.images[name] = content
        return self.url(f"/img/{name}")

    def hold(self, key: str) -> threading.Event:
        """``/gate/<key>/<name>`` answers only once the returned event is set (at most a minute later)."""
        gate = self._gates[key] = threading.Event()
        return gate

    def asked(self, prefix: str) -> int:
        """How many requests had a path starting with ``prefix``."""
        with self._lock:
            return sum(1 for path in self.paths if path.startswith(prefix))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.paths.append(path)
        parts = urlsplit(path)
        segments = parts.path.strip("/").split("/")
        if segments[0] == "img" and len(segments) == 2 and segments[1] in self.images:
            return 200, {"content-type": "image/jpeg"}, self.images[segments[1]]
        if segments[0] == "flaky" and len(segments) == 3 and segments[2] in self.images:
            with self._lock:
                self._seen[segments[1]] += 1
                first = self._seen[segments[1]] == 1
            if first:
                return 503, {}, b"try again"
            return 200, {"content-type": "image/jpeg"}, self.images[segments[2]]
        if segments[0] == "gate" and len(segments) == 3 and segments[2] in self.images:
            self._gates[segments[1]].wait(60)
            return 200, {"content-type": "image/jpeg"}, self.images[segments[2]]
        if segments[0] == "gzip" and len(segments) == 2 and segments[1] in self.images:  # whatever was asked for
            return (
                200,
                {"content-type": "image/jpeg", "content-encoding": "gzip"},
                gzip.compress(self.images[segments[1]]),
            )
        if segments[0] == "down":
            return 503, {}, b"down"
        if segments[0] == "redirect":
            return 302, {"location": parse_qs(parts.query)["to"][0]}, b""
        if segments[0] == "big":
            return 200, {"content-type": "image/jpeg", "transfer-encoding": "chunked"}, b"\xff\xd8\xff" + b"x" * 300_000
        return 404, {}, b"not found"
