"""A dispatcher's Prometheus metrics (served on ``METRICS_PORT`` by ``aic.core.metrics.serve``)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from aic.core.metrics import BATCH_BUCKETS, JOB_BUCKETS, STAGE_BUCKETS
from aic.core.schemas import QueueInfo

JOBS_COMPLETED: Final = Counter("aic_jobs_completed", "Jobs that got their result", ["model", "priority"])
JOBS_FAILED: Final = Counter("aic_jobs_failed", "Jobs that failed", ["model", "priority", "error_code"])
JOB_DURATION: Final = Histogram(
    "aic_job_duration_seconds",
    "From the submit to the stored result, per completed job",
    ["model", "priority"],
    buckets=JOB_BUCKETS,
)
STAGE_DURATION: Final = Histogram(
    "aic_job_stage_duration_seconds",
    "Time a job spent in one stage: queued (submit to taken), downloading (an image by URL), preprocessing, "
    "inference (the Triton call, retries "
    "included), storing (the result's write)",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
BATCH_SIZE: Final = Histogram("aic_batch_size", "Jobs per Triton call", ["model"], buckets=BATCH_BUCKETS)
TRITON_DURATION: Final = Histogram(
    "aic_triton_request_duration_seconds", "One Triton gRPC infer call", ["model"], buckets=STAGE_BUCKETS
)
TRITON_ERRORS: Final = Counter(
    "aic_triton_errors", "Failed Triton calls: outage (unreachable), transient (retried), permanent", ["model", "kind"]
)
QUEUE_DEPTH: Final = Gauge("aic_queue_depth", "Entries waiting to be delivered to a dispatcher", ["priority"])
QUEUE_IN_FLIGHT: Final = Gauge("aic_queue_in_flight", "Entries delivered and not yet acknowledged", ["priority"])
QUEUE_OLDEST_AGE: Final = Gauge(
    "aic_queue_oldest_job_age_seconds", "Age of the oldest entry waiting or in flight (0: none)", ["priority"]
)
IN_FLIGHT: Final = Gauge("aic_dispatcher_in_flight", "Jobs this dispatcher holds")
READY: Final = Gauge("aic_dispatcher_ready", "1 while this dispatcher's model checks pass")

STAGES: Final = ("queued", "downloading", "preprocessing", "inference", "storing")
for _stage in STAGES:
    STAGE_DURATION.labels(_stage)


def record_queue(info: QueueInfo) -> None:
    priority = str(info.priority)
    QUEUE_DEPTH.labels(priority).set(info.waiting)
    QUEUE_IN_FLIGHT.labels(priority).set(info.in_flight)
    QUEUE_OLDEST_AGE.labels(priority).set(info.oldest_age_s or 0.0)
