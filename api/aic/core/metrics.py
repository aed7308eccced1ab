"""Prometheus metrics shared by every process: serving ``/metrics`` on ``METRICS_PORT`` (dispatchers and the
operator; the API serves it on its own port through Litestar's plugin) and the buckets the histograms use.

The same listener answers a process's probes (a dispatcher's ``/livez`` and ``/readyz``): 200 or 503 with a small
JSON body. It runs in a thread of its own, so a probe still answers while the process's event loop is stuck, and
can say so.

Metric names follow Prometheus' conventions: ``aic_`` first, base units (seconds), counters end in ``_total``.
Histograms carry the current trace id as an exemplar, which the OpenMetrics exposition shows (a scraper that
asks for ``application/openmetrics-text``); the classic text format has no place for it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from aic.core.settings import MetricsSettings

log = logging.getLogger(__name__)

STAGE_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""One stage of a job, one Triton call, one webhook attempt: milliseconds to a minute."""
JOB_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
"""A job from submit to its result: a busy queue makes minutes of it."""
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128)


Probe = Callable[[], tuple[bool, Mapping[str, Any]]]
"""A probe: whether the process passes it, and what to say about it (the JSON body's fields)."""
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serve(settings: MetricsSettings, what: str, probes: Mapping[str, Probe] | None = None) -> bool:
    """Serve the process's metrics, and ``probes`` by path, on ``METRICS_HOST:METRICS_PORT`` in a thread; False when
    the port is 0 or taken (logged: the work itself goes on without metrics)."""
    if not settings.metrics_port:
        return False
    try:
        family = socket.getaddrinfo(settings.metrics_host, settings.metrics_port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsServer", (_ThreadingServer,), {"address_family": family})
        server: WSGIServer = make_server(
            settings.metrics_host,
            settings.metrics_port,
            with_probes(make_wsgi_app(), probes or {}),
            server_class,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        log.error("%s metrics: cannot listen on %s:%d: %s", what, settings.metrics_host, settings.metrics_port, exc)
        return False
    threading.Thread(target=server.serve_forever, name=f"{what}-metrics", daemon=True).start()
    log.info("%s metrics on http://%s:%d/metrics", what, settings.metrics_host, settings.metrics_port)
    return True


def with_probes(metrics: WsgiApp, probes: Mapping[str, Probe]) -> WsgiApp:
    """``metrics`` (prometheus_client's app: every other path) with ``probes`` answered at their paths."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        probe = probes.get(environ.get("PATH_INFO", ""))
        if probe is None:
            return metrics(environ, start_response)
        try:
            ok, said = probe()
        except Exception as exc:  # a probe that cannot tell fails, and says why
            ok, said = False, {"error": f"{type(exc).__name__}: {exc}"}
        body = json.dumps({"status": "ok" if ok else "unavailable", **said}).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        start_response("200 OK" if ok else "503 Service Unavailable", headers)
        return [body]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in flight never holds the process at exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Every probe and scrape would be a line of the process's log."""
