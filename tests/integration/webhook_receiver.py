"""A real HTTPS webhook receiver for tests: TLS from a trustme CA, Standard Webhooks signature verification.

It answers 401 to a request whose ``webhook-signature`` verifies with none of the secrets it knows, as a real
receiver would, and records every request. The path picks a behaviour (fail once, 503 with Retry-After, ...).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme
from aic.webhooks import message as webhooks

TOLERANCE_S = 300  # the spec's suggested timestamp tolerance
HUGE_BYTES = 64 * 1024 * 1024  # far beyond what a sender should read of an answer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    """time.monotonic() when it arrived"""
    verified_with: list[str] = field(default_factory=list)
    """Which of the receiver's secrets made a valid signature in the header."""
    answered: bool = False
    """The whole answer was written back (a sender killed mid-request gets none)."""

    @property
    def complete(self) -> bool:
        """The body is as long as its content-length said (a sender killed mid-body sends less)."""
        return len(self.body) == int(self.headers.get("content-length", "0"))

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self, ca: trustme.CA) -> None:
        self.secrets: list[str] = []
        self.requests: list[Received] = []
        self.aborted: list[str] = []
        """Paths whose answer the sender did not read to the end."""
        self._seen: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("localhost", "127.0.0.1", "::1").configure_cert(context)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status, extra, got = receiver.handle(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                if self.path.startswith("/slow"):
                    time.sleep(2)
                answer = b"x" * HUGE_BYTES if self.path.startswith("/huge") else b"ok"
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer)))
                try:
                    self.end_headers()
                    for start in range(0, len(answer), 65536):
                        self.wfile.write(answer[start : start + 65536])
                    self.wfile.flush()
                    got.answered = True
                except OSError:  # the sender hung up before the whole answer was written
                    receiver.aborted.append(self.path)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"https://localhost:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _verify(self, headers: dict[str, str], body: bytes) -> list[str]:
        try:
            timestamp = int(headers["webhook-timestamp"])
            wid, header = headers["webhook-id"], headers["webhook-signature"]
        except (KeyError, ValueError):
            return []
        if abs(time.time() - timestamp) > TOLERANCE_S:
            return []
        return [s for s in self.secrets if webhooks.verify(s, header, wid, timestamp, body)]

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], Received]:
        got = Received(path, headers, body, time.monotonic(), self._verify(headers, body))
        with self._lock:
            self.requests.append(got)
            key = (path.split("?", 1)[0], headers.get("webhook-id", ""))
            self._seen[key] += 1
            seen = self._seen[key]
        if not got.verified_with:
            return 401, {}, got
        route = key[0]
        if route == "/fail-once" and seen == 1:
            return 500, {}, got
        if route == "/busy-once" and seen == 1:
            return 503, {"retry-after": "1"}, got
        if route == "/always-500":
            return 500, {}, got
        if route == "/redirect":
            return 302, {"location": self.url("/redirect-target")}, got
        return 200, {}, got

    def received(self, job_id: str, path: str | None = None) -> list[Received]:
        with self._lock:
            return [
                r
                for r in self.requests
                if job_id in r.headers.get("webhook-id", "") and (path is None or r.path.startswith(path))
            ]
