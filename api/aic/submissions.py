"""Submitting jobs: the validated request (one image or a batch), its fingerprint, and creating its jobs.

Every file of a request is validated before any job is created, so a bad file enqueues nothing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from aic import images, routing, uploads
from aic.enums import Priority
from aic.errors import BadRequestError, ImageValidationError, RequestValidationError
from aic.jobs import Job, JobStore
from aic.settings import ApiSettings

METADATA_MAX_BYTES = 1024
CALLBACK_URL_MAX = 2048
WEBHOOK_EVENTS = ("started", "completed", "failed", "cancelled")
DEFAULT_WEBHOOK_EVENTS = "completed,failed,cancelled"
FORM_FIELDS = ("priority", "model_version", "callback_url", "metadata", "webhook_events")


def field_error(field: str, message: str) -> RequestValidationError:
    return RequestValidationError("Request validation failed", [{"field": field, "message": message}])


def parse_priority(raw: str) -> Priority:
    try:
        return Priority(raw.strip().lower())
    except ValueError:
        allowed = ", ".join(p.value for p in Priority)
        raise field_error("priority", f"must be one of {allowed}") from None


def parse_metadata(raw: str | None) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if len(raw.encode()) > METADATA_MAX_BYTES:
        raise field_error("metadata", f"must be at most {METADATA_MAX_BYTES} bytes of JSON")
    try:
        value = json.loads(raw)
    except ValueError:
        raise field_error("metadata", "must be valid JSON") from None
    if not isinstance(value, dict):
        raise field_error("metadata", "must be a JSON object")
    return value


def parse_callback_url(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    if len(raw) > CALLBACK_URL_MAX or not raw.startswith("https://") or len(raw) <= len("https://"):
        raise field_error("callback_url", "must be an https:// URL of at most 2048 characters")
    return raw


def parse_webhook_events(raw: str | None) -> str:
    """A comma list drawn from started/completed/failed/cancelled (default: the three terminal events)."""
    if raw is None or raw.strip() == "":
        return DEFAULT_WEBHOOK_EVENTS
    chosen = [part.strip().lower() for part in raw.split(",") if part.strip()]
    unknown = [e for e in chosen if e not in WEBHOOK_EVENTS]
    if unknown or not chosen:
        raise field_error("webhook_events", f"must be a comma list of {', '.join(WEBHOOK_EVENTS)}")
    return ",".join(e for e in WEBHOOK_EVENTS if e in chosen)


async def check_model_version(redis: Redis, model_version: str) -> None:
    published = await routing.aliases(redis)
    if model_version not in published:
        known = ", ".join(sorted(published)) or "none published yet"
        raise BadRequestError(f"Unknown model_version {model_version!r} (available: {known})")


@dataclass(frozen=True)
class Image:
    filename: str
    content: bytes
    image_metadata: dict[str, Any]


@dataclass(frozen=True)
class Submission:
    """A validated submit request: one or more images and the options they share."""

    images: list[Image]
    priority: Priority
    model_version: str
    callback_url: str | None
    webhook_events: str
    metadata: dict[str, Any]
    batch: bool

    def fingerprint(self) -> str:
        """Identifies the request's content, for Idempotency-Key comparisons."""
        digest = hashlib.sha256(b"batch" if self.batch else b"single")
        for image in self.images:
            digest.update(hashlib.sha256(image.content).digest())
        options = [self.priority, self.model_version, self.callback_url, self.webhook_events, self.metadata]
        digest.update(json.dumps(options, sort_keys=True).encode())
        return digest.hexdigest()


async def read_submission(
    stream: AsyncIterator[bytes], content_type: str, settings: ApiSettings, redis: Redis, *, batch: bool
) -> Submission:
    """Parse and validate a submit request; nothing is stored yet."""
    file_field = "files" if batch else "file"
    form = await uploads.read_form(
        stream,
        content_type,
        file_field=file_field,
        max_files=settings.batch_max_files if batch else 1,
        max_file_size=settings.max_file_size,
    )
    if not form.files:
        raise field_error(file_field, "at least one image file is required" if batch else "an image file is required")
    fields = form.fields
    priority = parse_priority(fields.get("priority") or "normal")
    metadata = parse_metadata(fields.get("metadata"))
    callback_url = parse_callback_url(fields.get("callback_url"))
    webhook_events = parse_webhook_events(fields.get("webhook_events"))
    validated = []
    for position, upload in enumerate(form.files, start=1):
        try:
            image_metadata = images.validate(upload.content, settings.max_file_size)
        except ImageValidationError as exc:
            if not batch:
                raise
            raise ImageValidationError(f"File {position} ({upload.filename}): {exc.detail}") from None
        validated.append(Image(upload.filename, upload.content, image_metadata))
    model_version = (fields.get("model_version") or "latest").strip()
    await check_model_version(redis, model_version)
    return Submission(validated, priority, model_version, callback_url, webhook_events, metadata, batch)


def new_job_ids(submission: Submission) -> list[str]:
    return [str(uuid.uuid4()) for _ in submission.images]


async def create_jobs(
    job_store: JobStore, submission: Submission, job_ids: list[str], tenant: str, traceparent: str | None
) -> list[Job]:
    jobs = []
    for job_id, image in zip(job_ids, submission.images, strict=True):
        jobs.append(
            await job_store.create(
                tenant=tenant,
                image=image.content,
                priority=submission.priority,
                model_version=submission.model_version,
                image_metadata=image.image_metadata,
                metadata=submission.metadata,
                callback_url=submission.callback_url,
                traceparent=traceparent,
                webhook_events=submission.webhook_events,
                job_id=job_id,
            )
        )
    return jobs
