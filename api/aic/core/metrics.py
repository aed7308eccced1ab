"""Prometheus metrics shared by every process: serving ``/metrics`` on ``METRICS_PORT`` (dispatchers and the
operator; the API serves it on its own port through Litestar's plugin) and the buckets the histograms use.

Metric names follow Prometheus' conventions: ``aic_`` first, base units (seconds), counters end in ``_total``.
Histograms carry the current trace id as an exemplar, which the OpenMetrics exposition shows (a scraper that
asks for ``application/openmetrics-text``); the classic text format has no place for it.
"""

from __future__ import annotations

import logging
from typing import Final

from prometheus_client import start_http_server

from aic.core.settings import MetricsSettings

log = logging.getLogger(__name__)

STAGE_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""One stage of a job, one Triton call, one webhook attempt: milliseconds to a minute."""
JOB_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
"""A job from submit to its result: a busy queue makes minutes of it."""
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128)


def serve(settings: MetricsSettings, what: str) -> bool:
    """Serve the process's metrics on ``METRICS_HOST:METRICS_PORT`` in a thread; False when the port is 0 or
    taken (logged: the work itself goes on without metrics)."""
    if not settings.metrics_port:
        return False
    try:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    except OSError as exc:
        log.error("%s metrics: cannot listen on %s:%d: %s", what, settings.metrics_host, settings.metrics_port, exc)
        return False
    log.info("%s metrics on http://%s:%d/metrics", what, settings.metrics_host, settings.metrics_port)
    return True
