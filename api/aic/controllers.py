"""HTTP routes of the job API (seed section 4). Bodies stay thin: parsing here, work in the job store."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State, UploadFile
from litestar.enums import RequestEncodingType
from litestar.openapi import ResponseSpec
from litestar.params import Body, Parameter
from redis.asyncio import Redis

from aic import images, keys, routing
from aic.auth import Principal
from aic.enums import JobStatus, Priority
from aic.errors import BadRequestError, JobConflictError, RequestValidationError
from aic.jobs import Job, JobStore
from aic.schemas import (
    ClassificationResponse,
    ClassificationResult,
    ErrorResponse,
    HealthResponse,
    JobStatusResponse,
)
from aic.settings import ApiSettings
from aic.timeutil import now_iso

METADATA_MAX_BYTES = 1024
CALLBACK_URL_MAX = 2048


@dataclass
class ClassifyForm:
    """The multipart form of ``POST /classify``."""

    file: UploadFile
    priority: str = "normal"
    model_version: str = "latest"
    callback_url: str | None = None
    metadata: str | None = None
    """A JSON object of at most 1 KB, stored with the job and returned by status?include_metadata=true."""


def _field_error(field: str, message: str) -> RequestValidationError:
    return RequestValidationError("Request validation failed", [{"field": field, "message": message}])


def parse_priority(raw: str) -> Priority:
    try:
        return Priority(raw.strip().lower())
    except ValueError:
        allowed = ", ".join(p.value for p in Priority)
        raise _field_error("priority", f"must be one of {allowed}") from None


def parse_metadata(raw: str | None) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if len(raw.encode()) > METADATA_MAX_BYTES:
        raise _field_error("metadata", f"must be at most {METADATA_MAX_BYTES} bytes of JSON")
    try:
        value = json.loads(raw)
    except ValueError:
        raise _field_error("metadata", "must be valid JSON") from None
    if not isinstance(value, dict):
        raise _field_error("metadata", "must be a JSON object")
    return value


def parse_callback_url(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    if len(raw) > CALLBACK_URL_MAX or not raw.startswith("https://") or len(raw) <= len("https://"):
        raise _field_error("callback_url", "must be an https:// URL of at most 2048 characters")
    return raw


async def check_model_version(redis: Redis, model_version: str) -> None:
    published = await routing.aliases(redis)
    if model_version not in published:
        known = ", ".join(sorted(published)) or "none published yet"
        raise BadRequestError(f"Unknown model_version {model_version!r} (available: {known})")


def status_response(job: Job, metadata: dict[str, Any] | None = None) -> JobStatusResponse:
    return JobStatusResponse(
        job_id=job.job_id,
        status=job.status,
        progress=job.progress,
        stage=job.stage,
        updated_at=job.updated_at,
        error_message=job.error,
        error_code=job.error_code,
        metadata=metadata,
    )


_ERROR_DESCRIPTIONS = {
    400: "Invalid image, unsupported type, oversized file or unknown model_version",
    401: "Missing or invalid API key",
    404: "Job not found (or owned by another tenant)",
    409: "Job not completed, or failed",
    422: "Request validation failed (per-field errors)",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the ErrorResponse bodies a route can answer with."""
    return {c: ResponseSpec(ErrorResponse, description=_ERROR_DESCRIPTIONS[c]) for c in (401, *codes)}


class JobController(Controller):
    path = "/"
    tags = ["jobs"]  # noqa: RUF012 - Litestar reads these as class attributes
    security = [{"ApiKey": []}, {"BearerKey": []}]  # noqa: RUF012

    @post(
        "/classify",
        operation_id="classify",
        summary="Submit an image for classification",
        status_code=200,
        responses=error_responses(400, 422),
    )
    async def classify(
        self,
        request: Request[Principal, Any, State],
        data: Annotated[ClassifyForm, Body(media_type=RequestEncodingType.MULTI_PART)],
        job_store: JobStore,
        api_settings: ApiSettings,
    ) -> ClassificationResponse:
        priority = parse_priority(data.priority)
        metadata = parse_metadata(data.metadata)
        callback_url = parse_callback_url(data.callback_url)
        content = await data.file.read(api_settings.max_file_size + 1)
        image_metadata = images.validate(content, api_settings.max_file_size)
        await check_model_version(job_store.redis, data.model_version)
        job = await job_store.create(
            tenant=request.user.tenant,
            image=content,
            priority=priority,
            model_version=data.model_version,
            image_metadata=image_metadata,
            metadata=metadata,
            callback_url=callback_url,
            traceparent=request.headers.get("traceparent"),
        )
        return ClassificationResponse(
            job_id=job.job_id,
            status=job.status,
            created_at=job.created_at,
            estimated_completion=job.estimated_completion,
        )

    @get(
        "/status/{job_id:str}",
        operation_id="getStatus",
        summary="Current status and progress of a job",
        responses=error_responses(404),
    )
    async def status(
        self,
        request: Request[Principal, Any, State],
        job_id: Annotated[str, Parameter(description="The id returned by /classify", max_length=64)],
        job_store: JobStore,
        include_metadata: bool = False,
    ) -> JobStatusResponse:
        job = await job_store.get(job_id, request.user.tenant)
        metadata = await job_store.metadata(job_id) if include_metadata else None
        return status_response(job, metadata)

    @get(
        "/result/{job_id:str}",
        operation_id="getResult",
        summary="Predictions of a completed job",
        responses=error_responses(404, 409),
    )
    async def result(
        self,
        request: Request[Principal, Any, State],
        job_id: Annotated[str, Parameter(description="The id returned by /classify", max_length=64)],
        job_store: JobStore,
    ) -> ClassificationResult:
        job = await job_store.get(job_id, request.user.tenant)
        if job.status is JobStatus.FAILED:
            raise JobConflictError(f"Job failed: {job.error}")
        if job.status is not JobStatus.COMPLETED:
            raise JobConflictError(f"Job not completed. Current status: {job.status}")
        body = await job_store.result(job_id)
        if body is None:
            raise JobConflictError("Results not found")
        return msgspec.json.decode(body, type=ClassificationResult)


_STARTED = time.monotonic()


@get(
    "/health",
    operation_id="health",
    summary="Health of the API and what it depends on",
    tags=["health"],
    exclude_from_auth=True,
)
async def health(redis: Redis, api_settings: ApiSettings) -> HealthResponse:
    services: dict[str, str] = {}
    overall = "healthy"
    try:
        await redis.ping()
        services["redis"] = "healthy"
        dispatchers = [k async for k in redis.scan_iter(match=keys.WORKER_STATUS_PATTERN, count=100)]
        if dispatchers:
            services["dispatchers"] = f"healthy ({len(dispatchers)} dispatchers)"
        else:
            services["dispatchers"] = "no active dispatchers"
            overall = "degraded"
        published = await routing.aliases(redis)
        if published:
            services["models"] = f"healthy ({', '.join(sorted(published))})"
        else:
            services["models"] = "no models published"
            overall = "degraded"
    except Exception as exc:
        services["redis"] = f"unhealthy: {type(exc).__name__}"
        overall = "unhealthy"
    return HealthResponse(
        status=overall,
        timestamp=now_iso(),
        services=services,
        version=api_settings.version,
        uptime=round(time.monotonic() - _STARTED, 3),
    )
