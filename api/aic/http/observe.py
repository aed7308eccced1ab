"""The API's traces and metrics: Litestar's OpenTelemetry plugin (a server span per request, the client's
``traceparent`` honoured) while the process exports traces, and Litestar's Prometheus plugin (requests by route
and status, with latency histograms) plus the job counters on ``GET /metrics``."""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, get
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.plugins.prometheus import PrometheusConfig
from litestar.response import Response
from litestar.types import Scope
from opentelemetry.trace import Span
from prometheus_client import REGISTRY, Counter
from prometheus_client.exposition import choose_encoder

from aic.core import telemetry
from aic.http import errors

METRICS_PATH: Final = "/metrics"
UNTRACED: Final = ("^/livez$", "^/readyz$", f"^{METRICS_PATH}$")
"""Probes and scrapes: a trace each would bury the jobs' traces."""

JOBS_SUBMITTED: Final = Counter(
    "aic_jobs_submitted", "Jobs accepted by a submit (replays of an Idempotency-Key not counted)", ["model", "priority"]
)
JOBS_CANCELLED: Final = Counter("aic_jobs_cancelled", "Jobs cancelled through the API", ["model", "priority"])


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """``{method} {route}`` with the route template, not the path: job ids stay out of span names."""
    route = str(scope.get("path_template") or scope.get("path", ""))
    method = str(scope.get("method") or "").strip()
    return (f"{method} {route}" if method else route), {"http.route": route}


def _on_request(span: Span, scope: dict[str, Any]) -> None:
    if span.is_recording():
        span.set_attribute("aic.request_id", errors.request_id(scope))  # type: ignore[arg-type]


def tracing_plugins() -> list[OpenTelemetryPlugin]:
    """The OpenTelemetry plugin while this process exports traces; none otherwise (no middleware at all)."""
    if not telemetry.enabled():
        return []
    config = OpenTelemetryConfig(
        exclude=list(UNTRACED),
        exclude_spans=["receive", "send"],  # one span per request, not one per ASGI message
        scope_span_details_extractor=_span_details,
        server_request_hook_handler=_on_request,
    )
    return [OpenTelemetryPlugin(config)]


def prometheus(app_name: str) -> PrometheusConfig:
    return PrometheusConfig(
        app_name=app_name,
        prefix="aic_http",
        group_path=True,  # the route template as the path label: one series per route, not per job id
        exclude=[f"^{METRICS_PATH}$"],
        exemplars=lambda _request: telemetry.exemplar() or {},  # {}: none (no sampled trace)
    )


@get(METRICS_PATH, include_in_schema=False, sync_to_thread=False)
def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus text, or OpenMetrics (with trace-id exemplars) for a scraper that asks for it."""
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(REGISTRY), media_type=content_type)
