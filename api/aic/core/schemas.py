"""Wire types of the HTTP API (seed section 3.1.2), as msgspec Structs."""

from __future__ import annotations

from typing import Any

import msgspec

from aic.core.enums import JobStatus


class ClassificationResponse(msgspec.Struct, kw_only=True):
    job_id: str
    status: JobStatus
    created_at: str
    estimated_completion: str | None = None
    result: ClassificationResult | None = None
    """Only with ``Prefer: wait=N``, when the job completed within the wait."""


class UploadReservation(msgspec.Struct, kw_only=True):
    """``POST /uploads``: PUT the image to ``url`` (with ``headers``) before ``expires_at``, then submit
    ``upload_id`` to ``/classify``."""

    upload_id: str
    url: str
    method: str
    headers: dict[str, str]
    expires_at: str
    max_bytes: int


class BatchResponse(msgspec.Struct, kw_only=True):
    jobs: list[ClassificationResponse]
    """One job per file, in the order the files were sent."""


class JobStatusResponse(msgspec.Struct, kw_only=True, omit_defaults=False):
    job_id: str
    status: JobStatus
    progress: int
    stage: str | None
    updated_at: str
    error_message: str | None = None
    error_code: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: str | None = None
    priority: str | None = None
    model_version: str | None = None
    """The alias the job was submitted with."""
    deadline_at: str | None = None
    """Not finished by then, the job fails with ``error_code: TIMEOUT`` (``deadline_s``, ``Cancel-After`` or
    ``QUEUE_TTL_S``)."""
    expires_at: str | None = None
    """Once the job ended: when its status, result and metadata stop being readable (``retention_s``)."""


class JobListResponse(msgspec.Struct, kw_only=True, omit_defaults=False):
    jobs: list[JobStatusResponse]
    """Newest first."""
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; null on the last page. A page may hold fewer than ``limit`` jobs
    when a filter that is not indexed (status, priority, model_version) skipped many: follow the cursor."""


class UsageCounts(msgspec.Struct, kw_only=True, omit_defaults=False):
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    """Every failed job, the timed-out ones included."""
    cancelled: int = 0
    timed_out: int = 0
    """Jobs failed with TIMEOUT: their deadline passed, or Triton stayed away too long."""
    image_bytes: int = 0
    """Bytes of the uploads received."""
    inference_ms: float = 0.0
    """Triton compute, as the dispatchers measured it: each batch's call time shared among its jobs."""
    inference_ms_by_model: dict[str, float] = msgspec.field(default_factory=dict)
    """The same, per served model version (the Triton model)."""
    jobs_by_model: dict[str, int] = msgspec.field(default_factory=dict)
    """Completed jobs per served model version."""


class UsageDay(UsageCounts, kw_only=True):
    date: str
    """A UTC day, YYYY-MM-DD."""


class UsageModel(msgspec.Struct, kw_only=True):
    model: str
    jobs: int
    inference_ms: float


class TenantUsage(msgspec.Struct, kw_only=True):
    tenant: str
    totals: UsageCounts
    days: list[UsageDay] | None = None
    """With ``group_by=day``: the days of the range that have any count, oldest first."""
    models: list[UsageModel] | None = None
    """With ``group_by=model``: one entry per served model version."""


class UsageResponse(msgspec.Struct, kw_only=True):
    from_date: str = msgspec.field(name="from")
    to_date: str = msgspec.field(name="to")
    group_by: str
    tenants: list[TenantUsage]


class Prediction(msgspec.Struct, kw_only=True):
    class_name: str
    confidence: float
    class_id: int


class ClassificationResult(msgspec.Struct, kw_only=True):
    job_id: str
    predictions: list[Prediction]
    processing_time: float
    model_version: str
    image_metadata: dict[str, Any]
    created_at: str


class HealthResponse(msgspec.Struct, kw_only=True):
    status: str
    timestamp: str
    services: dict[str, str]
    version: str
    uptime: float


class ErrorResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    error: str
    detail: str
    timestamp: str
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None


class TokenResponse(msgspec.Struct, kw_only=True):
    access_token: str
    token_type: str
    expires_in: int
    """Seconds until the token expires."""


class ModelInfo(msgspec.Struct, kw_only=True):
    name: str
    """The Triton model serving these aliases."""
    aliases: list[str]
    """What clients pass as ``model_version``."""


class ModelsResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    models: list[ModelInfo]
    default: str
    versions: list[dict[str, Any]] | None = None
    """Admin role only: each alias's versions, their published (effective), requested weights and the last
    15 minutes' jobs, errors and p95 latency."""
    comparisons: list[dict[str, Any]] | None = None
    """Admin role only: shadows and rollout mirrors, with the last 15 minutes' top-1 agreement, top-5 overlap,
    confidence delta and errors."""
    rollouts: list[dict[str, Any]] | None = None
    """Admin role only: each rollout's status (phase, step, effectiveWeight, lastAnalysis, message)."""


class ProbeResponse(msgspec.Struct, kw_only=True):
    status: str


class QueueInfo(msgspec.Struct, kw_only=True):
    priority: str
    length: int
    """Entries in the stream: jobs waiting or in flight."""
    waiting: int
    """Entries not yet delivered to any dispatcher (the group's lag)."""
    in_flight: int
    """Entries delivered and not yet acknowledged."""
    oldest_age_s: float | None
    """Age of the oldest entry still in the stream."""


class QueuesResponse(msgspec.Struct, kw_only=True):
    queues: list[QueueInfo]
    in_flight: int
    dead_letters: int


class DeadLetter(msgspec.Struct, kw_only=True):
    entry_id: str
    job_id: str
    stream: str
    error: str
    code: str
    dead_at: str


class DeadLettersResponse(msgspec.Struct, kw_only=True):
    dead_letters: list[DeadLetter]
    total: int
