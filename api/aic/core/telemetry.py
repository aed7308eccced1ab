"""OpenTelemetry for every process: one trace per job, configured by the standard ``OTEL_*`` variables only.

``setup()`` installs the SDK's tracer provider with the OTLP/HTTP exporter when the environment names an
endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and does not turn tracing
off (``OTEL_SDK_DISABLED=true``, ``OTEL_TRACES_EXPORTER=none``). Everything else the SDK reads itself:
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,
``OTEL_EXPORTER_OTLP_HEADERS``. Without them no exporter runs: spans are the API's no-op ones, and the code
paths that would cost something (extracting and injecting contexts) ask ``enabled()`` first.

A job's trace context travels as the W3C ``traceparent``/``tracestate`` strings stored in its record.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_enabled = False

__all__ = ["TRACEPARENT", "TRACESTATE", "Span", "SpanKind", "Tracer"]


def configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces to be exported."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in ("none", ""):
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup(default_service_name: str, env: Mapping[str, str] | None = None) -> bool:
    """Install the tracer provider with a batching OTLP/HTTP exporter when ``configured()``; True when it did.

    ``default_service_name`` is used unless ``OTEL_SERVICE_NAME`` or ``service.name`` in
    ``OTEL_RESOURCE_ATTRIBUTES`` names the process. Spans still buffered are exported at exit."""
    global _enabled
    env = os.environ if env is None else env
    if _enabled or not configured(env):
        return _enabled
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # the stable HTTP and database conventions (http.request.method, http.response.status_code, db.system.name,
    # db.query.text), not the instrumentations' older default names; read when they are first set up, after this
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    resource = Resource.create({} if named else {SERVICE_NAME: default_service_name})
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    if protocol and protocol != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: traces are exported over OTLP/HTTP (http/protobuf)", protocol)
    provider = TracerProvider(resource=resource)  # reads OTEL_TRACES_SAMPLER; shuts down (flushes) at exit
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _enabled = True
    log.info("tracing: exporting spans as %s over OTLP/HTTP", resource.attributes.get(SERVICE_NAME))
    return True


def enabled() -> bool:
    """Whether this process exports spans (``setup()`` found ``OTEL_*`` configuration)."""
    return _enabled


def tracer(name: str) -> Tracer:
    return trace.get_tracer(name)


def context_of(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The context a stored ``traceparent``/``tracestate`` pair carries (text, never bytes: the propagator's
    getter ignores bytes silently), on a fresh context; None when there is none or it is malformed."""
    if not traceparent:
        return None
    carrier = {TRACEPARENT: traceparent, **({TRACESTATE: tracestate} if tracestate else {})}
    found = _PROPAGATOR.extract(carrier, context=Context())
    return found if trace.get_current_span(found).get_span_context().is_valid else None


def carrier(span: Span | None = None) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of ``span``, or of the current span: what is stored in a job or sent
    as headers. Empty while tracing is off or no span is recording."""
    if not _enabled:
        return {}
    ctx = trace.set_span_in_context(span) if span is not None else None
    out: dict[str, str] = {}
    _PROPAGATOR.inject(out, context=ctx)
    return out


def ids() -> tuple[str, str] | None:
    """The current span's trace id and span id in hex, or None when no span is current."""
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return format(found.trace_id, "032x"), format(found.span_id, "016x")


def exemplar(span: Span | None = None) -> dict[str, str] | None:
    """A Prometheus exemplar naming the sampled trace of ``span`` (default: the current span), or None."""
    found = (span or trace.get_current_span()).get_span_context()
    if not found.is_valid or not found.trace_flags.sampled:
        return None
    return {"trace_id": format(found.trace_id, "032x")}


@contextmanager
def active(span: Span) -> Iterator[None]:
    """Make ``span`` current for the block (on top of the span's own context, not the caller's: a background
    loop's suppression of instrumentation does not reach into a job's work)."""
    token = otel_context.attach(trace.set_span_in_context(span, Context()))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def untraced() -> Iterator[None]:
    """No instrumentation inside the block: a background loop's polls (blocking reads, heartbeats) would each
    be a trace of their own."""
    with suppress_instrumentation():
        yield
