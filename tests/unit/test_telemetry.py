"""Pure units of tracing: when the OTEL_* variables turn export on, the stored context's round trip, Triton's flags."""

from __future__ import annotations

import pytest
from aic.core import telemetry
from aic.local.triton import trace_flags
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        (ENDPOINT, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_SERVICE_NAME": "x"}, False),  # a name alone exports nothing
    ],
)
def test_traces_are_exported_only_when_an_endpoint_is_named_and_not_turned_off(
    env: dict[str, str], expected: bool
) -> None:
    assert telemetry.configured(env) is expected


def test_setup_without_otel_variables_installs_nothing() -> None:
    assert telemetry.setup("aic-test", {}) is False
    assert telemetry.enabled() is False
    assert telemetry.carrier() == {}  # nothing injected while tracing is off


def test_a_stored_context_continues_the_same_trace() -> None:
    found = telemetry.context_of(TRACEPARENT, "vendor=value")
    assert found is not None
    parent = trace.get_current_span(found).get_span_context()
    assert format(parent.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(parent.span_id, "016x") == "b7ad6b7169203331"
    assert parent.trace_state.get("vendor") == "value"
    child = TracerProvider().get_tracer("t").start_span("child", context=found)
    assert child.get_span_context().trace_id == parent.trace_id
    assert child.parent is not None and child.parent.span_id == parent.span_id


@pytest.mark.parametrize("stored", [None, "", "garbage", "00-00000000000000000000000000000000-b7ad6b7169203331-01"])
def test_no_or_a_malformed_stored_context_starts_a_new_trace(stored: str | None) -> None:
    assert telemetry.context_of(stored) is None


def test_ids_and_exemplar_name_the_current_sampled_span() -> None:
    assert telemetry.ids() is None and telemetry.exemplar() is None
    span = TracerProvider().get_tracer("t").start_span("s")
    with trace.use_span(span):
        trace_id, span_id = telemetry.ids() or ("", "")
        assert trace_id == format(span.get_span_context().trace_id, "032x")
        assert span_id == format(span.get_span_context().span_id, "016x")
        assert telemetry.exemplar() == {"trace_id": trace_id}
    assert telemetry.exemplar(span) == {"trace_id": trace_id}  # a span that is not current


def test_triton_is_traced_with_the_same_variables() -> None:
    assert trace_flags({}) == []
    assert trace_flags({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}) == []
    flags = trace_flags({**ENDPOINT, "OTEL_BSP_SCHEDULE_DELAY": "200"})
    assert "--trace-config=mode=opentelemetry" in flags
    assert "--trace-config=rate=1" in flags
    assert "--trace-config=opentelemetry,url=http://collector:4318/v1/traces" in flags
    assert "--trace-config=opentelemetry,resource=service.name=triton" in flags
    assert "--trace-config=opentelemetry,bsp_schedule_delay=200" in flags
    traces_only = trace_flags({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom/traces"})
    assert "--trace-config=opentelemetry,url=http://c:4318/custom/traces" in traces_only  # used as given
