"""Prometheus series per model version (jobs, errors, latency) and per comparison (agreement), for dashboards
and alerts; the rollout decisions read the same counts from Redis (``aic.store.evidence``), not from these."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from aic.core.metrics import STAGE_BUCKETS

VERSION_JOBS: Final = Counter(
    "aic_model_version_jobs", "Jobs a model version answered, served or shadow/mirrored", ["alias", "version"]
)
VERSION_ERRORS: Final = Counter(
    "aic_model_version_errors", "Jobs a model version failed (Triton refused or timed out)", ["alias", "version"]
)
VERSION_LATENCY: Final = Histogram(
    "aic_model_version_inference_seconds",
    "The Triton call that answered a job, per model version",
    ["alias", "version"],
    buckets=STAGE_BUCKETS,
)
COMPARED: Final = Counter(
    "aic_model_comparisons",
    "Jobs answered by both a candidate and its reference version",
    ["alias", "candidate", "reference"],
)
AGREED: Final = Counter(
    "aic_model_comparison_top1_agreements",
    "Compared jobs whose top-1 class was the same on both versions (agreement = this / aic_model_comparisons)",
    ["alias", "candidate", "reference"],
)
COMPARISON_ERRORS: Final = Counter(
    "aic_model_comparison_errors",
    "Candidate runs that failed (never a client's failure)",
    ["alias", "candidate", "reference"],
)
SKIPPED: Final = Counter(
    "aic_model_comparison_skipped", "Jobs not compared because SHADOW_MAX_IN_FLIGHT extra runs were already running"
)

RULES: Final = Gauge(
    "aic_model_comparison_rules",
    "Comparisons this dispatcher applies now, 1 per candidate version (a shadow, or a rollout's mirror); read from "
    "Redis every EVIDENCE_FLUSH_S",
    ["candidate"],
)


def record_rules(candidates: list[str]) -> None:
    """The comparisons now applied (a candidate no longer compared drops out)."""
    RULES.clear()
    for candidate in candidates:
        RULES.labels(candidate).set(1)


def record_outcome(alias: str, version: str, latency_s: float | None, jobs: int = 1) -> None:
    """``jobs`` answered in ``latency_s`` each, or failed (None)."""
    if latency_s is None:
        VERSION_ERRORS.labels(alias, version).inc(jobs)
        return
    VERSION_JOBS.labels(alias, version).inc(jobs)
    histogram = VERSION_LATENCY.labels(alias, version)
    for _ in range(jobs):
        histogram.observe(latency_s)


def record_comparison(alias: str, candidate: str, reference: str, outcome: tuple[bool, float, float] | None) -> None:
    if outcome is None:
        COMPARISON_ERRORS.labels(alias, candidate, reference).inc()
        return
    COMPARED.labels(alias, candidate, reference).inc()
    if outcome[0]:
        AGREED.labels(alias, candidate, reference).inc()
