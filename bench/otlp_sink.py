"""A local OTLP/HTTP trace collector that only counts: spans per ``service.name`` (and per span name).

    .venv/bin/python bench/otlp_sink.py --port 4318

Accepts ``POST /v1/traces`` as binary protobuf (``application/x-protobuf``: what the Python SDK sends) or JSON
(``application/json``: what Triton's opentelemetry-cpp exporter sends), gzip-compressed or not, and answers 200
with an empty ``ExportTraceServiceResponse`` in the request's encoding. ``GET /stats`` answers the counts as
JSON; on SIGTERM (or SIGINT) the same JSON goes to stdout and the process exits 0. Nothing is stored: the bench
(bench/tracing.py) needs an endpoint that takes the exports at the cost of a real one's HTTP handling, and the
proof that spans of every service arrived.
"""

from __future__ import annotations

import argparse
import gzip
import json
import signal
import sys
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

TRACES_PATH = "/v1/traces"
UNKNOWN_SERVICE = "unknown_service"


class Counts:
    """What arrived, under one lock (the server answers each connection on a thread of its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.spans: Counter[tuple[str, str]] = Counter()  # by (service.name, span name)
        self.requests: Counter[str] = Counter()  # by encoding: protobuf, json (and +gzip)
        self.bytes_received = 0
        self.rejected = 0

    def add(self, spans: Counter[tuple[str, str]], encoding: str, size: int) -> None:
        with self._lock:
            self.spans.update(spans)
            self.requests[encoding] += 1
            self.bytes_received += size

    def reject(self) -> None:
        with self._lock:
            self.rejected += 1

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            by_service: Counter[str] = Counter()
            by_name: dict[str, dict[str, int]] = {}
            for (service, name), count in sorted(self.spans.items()):
                by_service[service] += count
                by_name.setdefault(service, {})[name] = count
            return {
                "spans_by_service": dict(sorted(by_service.items())),
                "spans": sum(by_service.values()),
                "spans_by_name": by_name,
                "requests_by_encoding": dict(sorted(self.requests.items())),
                "bytes_received": self.bytes_received,
                "rejected": self.rejected,
                "uptime_s": round(time.time() - self.started, 1),
            }


def count_protobuf(body: bytes) -> Counter[tuple[str, str]]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    counts: Counter[tuple[str, str]] = Counter()
    for resource_spans in request.resource_spans:
        service = UNKNOWN_SERVICE
        for attribute in resource_spans.resource.attributes:
            if attribute.key == "service.name":
                service = attribute.value.string_value
        counts.update((service, span.name) for scope in resource_spans.scope_spans for span in scope.spans)
    return counts


def _field(obj: dict[str, Any], camel: str, snake: str) -> Any:
    """OTLP/JSON names fields in lowerCamelCase; opentelemetry-cpp writes the proto names unless told otherwise."""
    return obj.get(camel, obj.get(snake))


def count_json(body: bytes) -> Counter[tuple[str, str]]:
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError("not an ExportTraceServiceRequest")
    counts: Counter[tuple[str, str]] = Counter()
    for resource_spans in _field(document, "resourceSpans", "resource_spans") or []:
        service = UNKNOWN_SERVICE
        for attribute in (resource_spans.get("resource") or {}).get("attributes") or []:
            if attribute.get("key") == "service.name":
                value = attribute.get("value") or {}
                service = str(_field(value, "stringValue", "string_value") or UNKNOWN_SERVICE)
        scopes = (
            _field(resource_spans, "scopeSpans", "scope_spans")
            # before OTLP 0.15 (opentelemetry-cpp < 1.2)
            or _field(resource_spans, "instrumentationLibrarySpans", "instrumentation_library_spans")
            or []
        )
        counts.update((service, str(span.get("name", ""))) for scope in scopes for span in scope.get("spans") or [])
    return counts


def decode(content_type: str, content_encoding: str, body: bytes) -> tuple[Counter[tuple[str, str]], str]:
    """Spans per service of one export, and how it came (protobuf or json, +gzip or +deflate)."""
    is_json = content_type.split(";")[0].strip().lower() == "application/json"
    encoding = "json" if is_json else "protobuf"
    content_encoding = content_encoding.strip().lower()
    if content_encoding == "gzip":
        body, encoding = gzip.decompress(body), encoding + "+gzip"
    elif content_encoding == "deflate":
        body, encoding = zlib.decompress(body), encoding + "+deflate"
    return (count_json(body) if is_json else count_protobuf(body)), encoding


def handler_for(counts: Counts) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the exporters reuse their connection

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.path.split("?")[0] != TRACES_PATH:
                self._answer(404, b"", "text/plain")
                return
            try:
                spans, encoding = decode(
                    self.headers.get("Content-Type") or "", self.headers.get("Content-Encoding") or "", body
                )
            except Exception as exc:  # a malformed export is answered 400, as a collector would, and counted
                counts.reject()
                self._answer(400, f"bad export: {exc}".encode(), "text/plain")
                return
            counts.add(spans, encoding, length)
            if encoding.startswith("json"):
                self._answer(200, b"{}", "application/json")
            else:
                self._answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/stats":
                self._answer(404, b"", "text/plain")
                return
            self._answer(200, json.dumps(counts.as_dict()).encode(), "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per export would cost more than the counting

    return Handler


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--port", type=int, default=4318, help="0: any free port (printed to stderr)")
    cli.add_argument("--host", default="127.0.0.1")
    args = cli.parse_args(argv)
    counts = Counts()
    server = ThreadingHTTPServer((args.host, args.port), handler_for(counts))
    server.daemon_threads = True

    def stop(_signum: int, _frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return: from another thread, not this (the serving) one
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"otlp_sink: listening on http://{args.host}:{server.server_address[1]}{TRACES_PATH}", file=sys.stderr)
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    print(json.dumps(counts.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
