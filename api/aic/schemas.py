"""Wire types of the HTTP API (seed section 3.1.2), as msgspec Structs."""

from __future__ import annotations

from typing import Any

import msgspec

from aic.enums import JobStatus


class ClassificationResponse(msgspec.Struct, kw_only=True):
    job_id: str
    status: JobStatus
    created_at: str
    estimated_completion: str | None = None


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
