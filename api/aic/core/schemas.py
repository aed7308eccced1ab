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


class ModelsResponse(msgspec.Struct, kw_only=True):
    models: list[ModelInfo]
    default: str


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
