"""Traces, metrics and logs on real components: the local Triton with OpenTelemetry tracing on, the API and a
dispatcher exporting OTLP/HTTP to a collector this module runs (protobuf decoded with opentelemetry-proto), their
``/metrics`` scraped, their JSON logs read."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import waterfall
from aic.core import settings as aic_settings
from aic.local.modelbuild import ensure_default_model
from aic.local.ports import free_port
from aic.local.triton import LocalTriton, on_free_ports
from conftest import ADMIN_KEY, API_KEY, OTHER_TENANT_KEY, Stack, WebhookCA, running_stack
from helpers import jpeg, service_metrics, submit, wait_done
from otlp import CollectedSpan, Collector
from prometheus_client.parser import text_string_to_metric_families
from skimage import data as skdata
from webhook_receiver import Receiver

pytestmark = pytest.mark.integration

SERVICES = {"aic-api", "aic-dispatcher", "triton"}


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    found = Collector()
    try:
        yield found
    finally:
        found.close()


def otel_env(collector: Collector) -> dict[str, str]:
    # spans leave every 100 ms (the SDK's default is 5 s; Triton's too, bsp_schedule_delay)
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}


@pytest.fixture(scope="module")
def traced_triton(collector: Collector, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    """A Triton of this module's own, started as `aic triton` starts it when OTEL_* are set: tracing on."""
    base = aic_settings.load(aic_settings.TritonSettings)
    ensure_default_model(base.model_repository, ("python",))
    settings = on_free_ports(base, triton_backends=("python",), triton_timeout_s=120.0)
    log_path: Path = tmp_path_factory.mktemp("traced-triton") / "tritonserver.log"
    with ExitStack() as stack:
        with pytest.MonkeyPatch.context() as env:  # read while the server command is made, then restored
            for name, value in otel_env(collector).items():
                env.setenv(name, value)
            server = stack.enter_context(LocalTriton(settings, log_path=log_path))
        yield server


@pytest.fixture(scope="module")
def traced(traced_triton: LocalTriton, webhook_ca: WebhookCA, collector: Collector) -> Iterator[Stack]:
    env = {**otel_env(collector), "LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG", "METRICS_PORT": str(free_port())}
    with running_stack(traced_triton, webhook_ca, with_dispatcher=True, **env) as running:
        yield running


def by_id(spans: list[CollectedSpan]) -> dict[str, CollectedSpan]:
    return {span.span_id: span for span in spans}


def one(spans: list[CollectedSpan], **wanted: Any) -> CollectedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in wanted.items())]
    assert len(found) == 1, (wanted, [(s.service, s.name, s.kind) for s in spans])
    return found[0]


def complete(spans: list[CollectedSpan]) -> bool:
    """API request, enqueue, processing, Triton's own spans and the webhook's delivery all exported."""
    names = {(s.service, s.kind) for s in spans}
    return (
        {s.service for s in spans} >= SERVICES
        and ("aic-api", "PRODUCER") in names
        and ("aic-dispatcher", "CONSUMER") in names
        and any(s.name == "POST" and s.kind == "CLIENT" for s in spans)
        and any(s.name == "store results" for s in spans)
    )


def test_one_job_is_one_trace_from_the_clients_traceparent_through_triton_to_the_webhook(
    traced: Stack, collector: Collector, webhook_receiver: Receiver
) -> None:
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    with traced.client() as client:
        webhook_receiver.secrets = [client.get("/webhooks/secret").json()["secret"]]
        accepted = submit(
            client,
            jpeg(skdata.chelsea()),
            headers={"traceparent": f"00-{trace_id}-{client_span}-01"},
            callback_url=webhook_receiver.url("/ok"),
        )
        assert accepted.status_code == 200, accepted.text
        job_id = accepted.json()["job_id"]
        assert wait_done(client, job_id)["status"] == "completed"
    spans = collector.wait_for(trace_id, complete)
    ids = by_id(spans)

    # the client's span is the root: the API's request span is its child
    request = one(spans, service="aic-api", kind="SERVER", name="POST /api/v1/classify")
    assert request.parent_span_id == client_span
    assert request.attributes["http.route"] == "/api/v1/classify"
    assert request.attributes["http.request.method"] == "POST"  # the stable HTTP conventions
    assert request.attributes["http.response.status_code"] == 200
    send = one(spans, service="aic-api", kind="PRODUCER")
    assert send.parent_span_id == request.span_id
    assert send.name == "send queue:normal"
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.message.id"] == job_id
    # the API's Redis calls (redis-py's instrumentation) are inside its request, sanitised
    api_redis = [s for s in spans if s.service == "aic-api" and s.attributes.get("db.system.name") == "redis"]
    assert api_redis and all(ids[s.parent_span_id].service == "aic-api" for s in api_redis)
    assert any("?" in str(s.attributes.get("db.query.text", "")) for s in api_redis)  # arguments as "?"
    pipelines = [s for s in spans if "db.redis.pipeline_length" in s.attributes]
    assert pipelines and all(s.name.startswith("BATCH ") for s in pipelines)  # not one name per batch size
    assert all(len(set(s.name.split())) == len(s.name.split()) for s in pipelines), [s.name for s in pipelines]

    # the dispatcher continues from the stored context: processing (CONSUMER) is the enqueue span's child
    process = one(spans, service="aic-dispatcher", kind="CONSUMER")
    assert process.parent_span_id == send.span_id
    assert process.name == "process queue:normal"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["aic.job_id"] == job_id
    preprocess = one(spans, name="preprocess")
    assert preprocess.parent_span_id == process.span_id
    assert process.start_ns <= preprocess.start_ns <= preprocess.end_ns <= process.end_ns
    batch = one(spans, service="aic-dispatcher", name="infer efficientnet-lite0")
    assert batch.parent_span_id == process.span_id
    assert (trace_id, process.span_id) in batch.links
    call = one(spans, kind="CLIENT", name="inference.GRPCInferenceService/ModelInfer")
    assert call.parent_span_id == batch.span_id
    assert call.attributes["rpc.system"] == "grpc" and call.attributes["rpc.method"] == "ModelInfer"
    store = one(spans, name="store results")
    assert store.parent_span_id == batch.span_id
    assert any(ids[s.parent_span_id] is store for s in spans if s.attributes.get("db.system.name") == "redis")

    # Triton's own spans joined through the gRPC metadata: its request span is the client span's child
    triton = [s for s in spans if s.service == "triton"]
    assert any(s.parent_span_id == call.span_id for s in triton), [(s.name, s.parent_span_id) for s in triton]
    assert all(s.parent_span_id in ids for s in triton)

    # the webhook's delivery, in the job's trace
    delivery = one(spans, name="POST", kind="CLIENT", service="aic-dispatcher")
    assert delivery.attributes["aic.job_id"] == job_id
    assert delivery.attributes["http.response.status_code"] == 200
    assert delivery.parent_span_id == send.span_id

    if os.environ.get("AIC_WATERFALL"):  # the README's picture of one job's trace
        waterfall.render(spans, Path(os.environ["AIC_WATERFALL"]), f"one job, trace {trace_id}")
    # every span but the client's own has its parent in the trace
    assert all(s.parent_span_id in ids for s in spans if s is not request)
    # sanitised: no job id, key or image bytes in a Redis statement
    for span in spans:
        statement = str(span.attributes.get("db.query.text", ""))
        assert job_id not in statement and API_KEY not in statement


def test_a_batch_span_links_every_job_it_carries(traced: Stack, collector: Collector) -> None:
    trace_id = secrets.token_hex(16)
    files = [("files", (f"{n}.jpg", jpeg(photo), "image/jpeg")) for n, photo in enumerate([skdata.chelsea()] * 3)]
    with traced.client() as client:
        response = client.post(
            "/classify/batch", files=files, headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
        )
        assert response.status_code == 200, response.text
        job_ids = [job["job_id"] for job in response.json()["jobs"]]
        for job_id in job_ids:
            assert wait_done(client, job_id)["status"] == "completed"

    def all_processed(spans: list[CollectedSpan]) -> bool:
        return sum(s.kind == "CONSUMER" for s in spans) == 3 and sum(s.name == "store results" for s in spans) >= 1

    spans = collector.wait_for(trace_id, all_processed)
    sends = [s for s in spans if s.kind == "PRODUCER"]
    assert sorted(s.attributes["messaging.message.id"] for s in sends) == sorted(job_ids)
    processes = [s for s in spans if s.kind == "CONSUMER"]
    assert {s.parent_span_id for s in processes} == {s.span_id for s in sends}
    batches = [s for s in spans if s.name == "infer efficientnet-lite0"]
    linked = [link for batch in batches for link in batch.links]
    # each job's processing span is linked from exactly one batch, and a batch links as many jobs as it carried
    assert sorted(linked) == sorted((trace_id, s.span_id) for s in processes)
    assert all(len(b.links) == b.attributes["messaging.batch.message_count"] for b in batches)


def log_lines(service_log: str) -> list[dict[str, Any]]:
    lines = []
    for line in service_log.splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            lines.append(parsed)
    return lines


def test_a_jobs_log_lines_carry_its_trace_id(traced: Stack, collector: Collector) -> None:
    trace_id = secrets.token_hex(16)
    with traced.client() as client:
        accepted = submit(
            client, jpeg(skdata.coffee()), headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
        )
        job_id = accepted.json()["job_id"]
        assert wait_done(client, job_id)["status"] == "completed"
    assert traced.dispatcher is not None
    deadline = time.monotonic() + 10
    while True:
        mine = [line for line in log_lines(traced.dispatcher.output()) if line.get("job_id") == job_id]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert mine, traced.dispatcher.output()[-2000:]
    process = one(collector.wait_for(trace_id, lambda s: any(x.kind == "CONSUMER" for x in s)), kind="CONSUMER")
    for line in mine:
        assert line["trace_id"] == trace_id
        assert line["span_id"] == process.span_id
        assert line["tenant"] == "acme"


def scrape(url: str, openmetrics: bool = False) -> str:
    headers = {"accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
    response = httpx.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls))


METRICS = service_metrics()


def test_metrics_exist_and_move_when_a_job_runs(traced: Stack, webhook_receiver: Receiver) -> None:
    api_url = traced.base_url.removesuffix("/api/v1") + "/metrics"
    dispatcher_url = f"http://127.0.0.1:{traced.env['METRICS_PORT']}/metrics"
    with traced.client() as client:
        webhook_receiver.secrets = [client.get("/webhooks/secret").json()["secret"]]
        api_before, dispatcher_before = samples(scrape(api_url)), samples(scrape(dispatcher_url))
        accepted = submit(client, jpeg(skdata.chelsea()), callback_url=webhook_receiver.url("/ok"))
        job_id = accepted.json()["job_id"]
        assert wait_done(client, job_id)["status"] == "completed"
        cancel_me = submit(client, jpeg(skdata.coffee()), priority="low").json()["job_id"]
        client.delete(f"/jobs/{cancel_me}")  # cancelled, or already completed: counted only when it was cancelled
        cancelled = client.get(f"/status/{cancel_me}").json()["status"] == "cancelled"
        deadline = time.monotonic() + 20
        while not webhook_receiver.received(job_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the delivery is recorded (and counted) just after the receiver answered
    api, dispatcher = samples(scrape(api_url)), samples(scrape(dispatcher_url))
    # every metric the code defines is served (a counter or histogram with labels appears once it moved: these
    # did, except the error counters, which a healthy run leaves at none)
    quiet = {"aic_http_requests_error_total", "aic_triton_errors_total", "aic_jobs_failed_total"}
    quiet |= {  # no shadow or rollout here: nothing compared; and no model failed a job
        "aic_model_comparisons_total",
        "aic_model_comparison_top1_agreements_total",
        "aic_model_comparison_errors_total",
        "aic_model_version_errors_total",
        "aic_model_comparison_rules",  # a gauge of the comparisons applied: none here
    }
    quiet |= set() if cancelled else {"aic_jobs_cancelled_total"}  # the job may have completed first
    assert METRICS["api"] - quiet <= {n for n, _ in api}, METRICS["api"] - quiet - {n for n, _ in api}
    served = {n for n, _ in dispatcher}
    assert METRICS["dispatcher"] - quiet <= served, METRICS["dispatcher"] - quiet - served

    def moved(now: dict[Any, float], before: dict[Any, float], name: str, **labels: str) -> float:
        return value(now, name, **labels) - value(before, name, **labels)

    route = {"path": "/api/v1/classify", "method": "POST", "status_code": "200"}
    assert moved(api, api_before, "aic_http_requests_total", **route) == 2
    assert moved(api, api_before, "aic_http_request_duration_seconds_count", **route) == 2
    assert moved(api, api_before, "aic_jobs_submitted_total", model="latest", priority="normal") == 1
    assert moved(api, api_before, "aic_jobs_cancelled_total", priority="low") == (1 if cancelled else 0)
    job = {"model": "latest", "priority": "normal"}
    assert moved(dispatcher, dispatcher_before, "aic_jobs_completed_total", **job) >= 1
    assert moved(dispatcher, dispatcher_before, "aic_job_duration_seconds_count", **job) >= 1
    for stage in ("queued", "preprocessing", "inference", "storing"):
        assert moved(dispatcher, dispatcher_before, "aic_job_stage_duration_seconds_count", stage=stage) >= 1, stage
    assert moved(dispatcher, dispatcher_before, "aic_batch_size_count", model="efficientnet-lite0") >= 1
    assert (
        moved(dispatcher, dispatcher_before, "aic_triton_request_duration_seconds_count", model="efficientnet-lite0")
        >= 1
    )
    assert moved(dispatcher, dispatcher_before, "aic_webhook_deliveries_total", outcome="delivered") >= 1
    assert value(dispatcher, "aic_dispatcher_ready") == 1
    # exemplars: the OpenMetrics exposition names the trace of an observation
    assert '# {trace_id="' in scrape(dispatcher_url, openmetrics=True)
    assert '# {trace_id="' in scrape(api_url, openmetrics=True)


def test_a_failed_job_is_counted_by_its_error_code_and_every_queue_has_its_gauges(traced: Stack) -> None:
    dispatcher_url = f"http://127.0.0.1:{traced.env['METRICS_PORT']}/metrics"
    before = samples(scrape(dispatcher_url))
    whole = jpeg(skdata.chelsea())
    with traced.client() as client:  # a valid JPEG header (the API accepts it), the scan data cut off
        response = submit(client, whole[: len(whole) // 2])
        assert response.status_code == 200, response.text
        assert wait_done(client, response.json()["job_id"])["error_code"] == "INVALID_IMAGE"
    after = samples(scrape(dispatcher_url))
    failed = {"error_code": "INVALID_IMAGE", "model": "latest", "priority": "normal"}
    assert value(after, "aic_jobs_failed_total", **failed) - value(before, "aic_jobs_failed_total", **failed) == 1
    for priority in ("high", "normal", "low"):
        assert ("aic_queue_depth", (("priority", priority),)) in after, priority
        assert ("aic_queue_oldest_job_age_seconds", (("priority", priority),)) in after, priority


def test_no_key_token_or_secret_in_any_log_metric_or_span(
    traced: Stack, collector: Collector, webhook_receiver: Receiver
) -> None:
    with traced.client() as client:
        token = client.post("/auth/token").json()["access_token"]
        secret = client.get("/webhooks/secret").json()["secret"]
        webhook_receiver.secrets = [secret]
        with traced.client(key=None) as bearer:
            bearer.headers["Authorization"] = f"Bearer {token}"
            job_id = submit(bearer, jpeg(skdata.chelsea()), callback_url=webhook_receiver.url("/ok")).json()["job_id"]
            assert wait_done(bearer, job_id)["status"] == "completed"
        client.get("/status/does-not-exist", headers={"X-API-Key": "wrong-key-0123456789abcdef"})
    time.sleep(1.0)  # the last spans are exported
    assert traced.dispatcher is not None
    everything = "\n".join(
        [
            traced.api.output(),
            traced.dispatcher.output(),
            scrape(traced.base_url.removesuffix("/api/v1") + "/metrics"),
            scrape(f"http://127.0.0.1:{traced.env['METRICS_PORT']}/metrics"),
            *(json.dumps(s.attributes) + json.dumps(s.resource) + s.name for s in collector.spans),
        ]
    )
    assert job_id in everything  # the scan reads what it should
    for value_ in (API_KEY, OTHER_TENANT_KEY, ADMIN_KEY, token, secret, traced.env["SECRET_KEY"]):
        assert value_ not in everything
