"""Submitting jobs: the validated request (one image or a batch), its fingerprint, creating its jobs once per
Idempotency-Key, and waiting for them with ``Prefer: wait``.

Every file of a request is validated before any job is created, and a request's jobs are created in one
transaction, so a bad file enqueues nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from aic.core import telemetry
from aic.core.enums import JobStatus, Priority
from aic.core.errors import (
    BadRequestError,
    ImageValidationError,
    JobNotFoundError,
    RequestValidationError,
    StoreUnavailable,
)
from aic.core.schemas import ClassificationResponse, ClassificationResult, UploadReservation
from aic.core.settings import ApiSettings, QueueSettings
from aic.core.webhooks import DEFAULT_EVENTS, EVENTS
from aic.http import images, uploads
from aic.http.observe import JOBS_SUBMITTED
from aic.live.follow import wait_for_jobs
from aic.live.hub import EventHub
from aic.store.direct import DirectUploads
from aic.store.idempotency import IdempotencyStore, replay_missing
from aic.store.jobs import DEFAULT_DEADLINE_S, DEFAULT_RETENTION_S, Job, JobStore, NewJob
from aic.store.routes import RouteStore

log = logging.getLogger("aic.api")

METADATA_MAX_BYTES = 1024
CALLBACK_URL_MAX = 2048
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6})(?:$|[,;\s])")
FORM_FIELDS = ("priority", "model_version", "callback_url", "metadata", "webhook_events", "deadline_s", "retention_s")
_DURATION = re.compile(r"^(?:(\d{1,6})h)?(?:(\d{1,8})m)?(?:(\d{1,10})s)?$")
UPLOAD_FIELDS = ("upload_id", "upload_ids")
"""A presigned direct upload instead of a file (``POST /uploads``): ``upload_id`` on /classify, ``upload_ids`` (a
comma list, or a JSON list) on /classify/batch; a form field, a query parameter or a JSON body's member."""
URL_FIELDS = ("image_url", "image_urls")
"""An image the dispatcher fetches instead of a file: ``image_url`` on /classify, ``image_urls`` (a comma list, or a
JSON list) on /classify/batch; a form field, a query parameter or a JSON body's member. Only the URL's form is
checked here (https, length); the dispatcher vets the addresses it resolves to."""
IMAGE_URL_MAX = 2048
JSON_BODY_MAX = 16 * 1024


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
        return ",".join(DEFAULT_EVENTS)
    chosen = [part.strip().lower() for part in raw.split(",") if part.strip()]
    unknown = [e for e in chosen if e not in EVENTS]
    if unknown or not chosen:
        raise field_error("webhook_events", f"must be a comma list of {', '.join(EVENTS)}")
    return ",".join(e for e in EVENTS if e in chosen)


def parse_seconds(field: str, raw: str | None, maximum: int) -> int | None:
    """A whole number of seconds from 1 to ``maximum``; None when not given."""
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 12 or not 1 <= int(text) <= maximum:
        raise field_error(field, f"must be a whole number of seconds from 1 to {maximum}")
    return int(text)


def parse_duration(raw: str) -> int:
    """Seconds of a duration such as ``30s``, ``5m`` or ``1h30m`` (the ``Cancel-After`` header); ValueError if not."""
    found = _DURATION.match(raw.strip().lower())
    if not raw.strip() or found is None:
        raise ValueError(raw)
    hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return hours * 3600 + minutes * 60 + seconds


def deadline_of(options: Mapping[str, str], cancel_after: str | None, maximum: int) -> int | None:
    """The deadline a submit asked for, in seconds: ``deadline_s`` or the ``Cancel-After`` header (the same value
    if both); None for the default."""
    deadline_s = parse_seconds("deadline_s", options.get("deadline_s"), maximum)
    if cancel_after is None:
        return deadline_s
    try:
        header_s = parse_duration(cancel_after)
    except ValueError:
        raise field_error("Cancel-After", "must be a duration such as 30s, 5m or 1h30m") from None
    if not 1 <= header_s <= maximum:
        raise field_error("Cancel-After", f"must be from 1s to {maximum}s")
    if deadline_s is not None and deadline_s != header_s:
        raise field_error("Cancel-After", "differs from deadline_s; send one of them")
    return header_s


async def check_model_version(routes: RouteStore, model_version: str) -> None:
    published = await routes.aliases()
    if model_version not in published:
        known = ", ".join(sorted(published)) or "none published yet"
        raise BadRequestError(f"Unknown model_version {model_version!r} (available: {known})")


@dataclass(frozen=True)
class Image:
    filename: str
    content: bytes
    image_metadata: dict[str, Any]
    upload: str | None = None
    """A claimed direct upload's object path (``content`` is then empty)."""
    image_url: str | None = None
    """Submitted by URL: the dispatcher fetches it (``content`` is then empty)."""


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
    deadline_s: int = DEFAULT_DEADLINE_S
    retention_s: int = DEFAULT_RETENTION_S
    upload_ids: tuple[str, ...] = ()
    """Direct uploads to claim instead of ``images`` (empty then)."""

    def fingerprint(self) -> str:
        """Identifies the request's content, for Idempotency-Key comparisons."""
        digest = hashlib.sha256(b"batch" if self.batch else b"single")
        for image in self.images:
            digest.update(hashlib.sha256(image.content).digest())
        for upload_id in self.upload_ids:
            digest.update(b"upload:" + upload_id.encode())
        for image in self.images:
            if image.image_url:
                digest.update(b"url:" + hashlib.sha256(image.image_url.encode()).digest())
        options: list[Any] = [self.priority, self.model_version, self.callback_url, self.webhook_events, self.metadata]
        if (self.deadline_s, self.retention_s) != (DEFAULT_DEADLINE_S, DEFAULT_RETENTION_S):
            options += [self.deadline_s, self.retention_s]  # the default ones leave older fingerprints as they were
        digest.update(json.dumps(options, sort_keys=True).encode())
        return digest.hexdigest()


RAW_IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
"""Content types of a raw-body submit (the image itself as the body), with the format their bytes must have."""
RAW_ANY = "application/octet-stream"
"""A raw-body submit whose format is read from the bytes alone (what OpenAPI generators send for a binary body)."""


def options_of(query: Mapping[str, str], form: Mapping[str, str]) -> dict[str, str]:
    """A submit's options from the form fields and the query string; one given in both with different values is
    refused (the same value twice is what some generated clients send: accepted)."""
    both = [name for name in FORM_FIELDS if name in query and name in form and query[name] != form[name]]
    if both:
        raise field_error(both[0], "given both as a query parameter and as a form field, with different values")
    return {**{k: v for k, v in query.items() if k in FORM_FIELDS}, **form}


async def read_submission(
    stream: AsyncIterator[bytes],
    content_type: str,
    settings: ApiSettings,
    *,
    batch: bool,
    query: Mapping[str, str] | None = None,
    queue: QueueSettings | None = None,
    cancel_after: str | None = None,
) -> Submission:
    """Parse and validate a submit request; nothing is stored yet.

    The body is a multipart form (``file`` or, for a batch, ``files``, with the options as form fields) or, for
    one image, the image itself (``Content-Type: image/jpeg|png|webp``, the options as query parameters). Instead
    of files: upload ids of direct uploads (``UPLOAD_FIELDS``), in the form, the query string or a JSON body.
    """
    queue = queue or QueueSettings()
    file_field = "files" if batch else "file"
    query = query or {}
    kind = uploads.media_type(content_type) if content_type else ""
    declared = None if batch else RAW_IMAGE_TYPES.get(kind)
    raw = declared is not None or (kind == RAW_ANY and not batch)
    files, form_fields = await _read_body(stream, content_type, settings, query, batch=batch, raw=raw)
    upload_ids = parse_upload_ids(query, form_fields, settings, batch=batch)
    image_urls = parse_image_urls(query, form_fields, settings, batch=batch)
    if sum(map(bool, (files, upload_ids, image_urls))) > 1:
        raise field_error(file_field, "send image files, upload ids or image URLs, not more than one of them")
    if not files and not upload_ids and not image_urls:
        raise field_error(file_field, "at least one image file is required" if batch else "an image file is required")
    fields = options_of(query, {k: v for k, v in form_fields.items() if k not in (*UPLOAD_FIELDS, *URL_FIELDS)})
    priority = parse_priority(fields.get("priority") or "normal")
    metadata = parse_metadata(fields.get("metadata"))
    callback_url = parse_callback_url(fields.get("callback_url"))
    webhook_events = parse_webhook_events(fields.get("webhook_events"))
    deadline_s = deadline_of(fields, cancel_after, queue.max_deadline_s) or queue.queue_ttl_s
    retention_s = parse_seconds("retention_s", fields.get("retention_s"), queue.max_retention_s)
    validated = [Image(url, b"", {}, image_url=url) for url in image_urls]
    for position, upload in enumerate(files, start=1):
        try:
            image_metadata = images.validate(upload.content, settings.max_file_size)
        except ImageValidationError as exc:
            if not batch:
                raise
            raise ImageValidationError(f"File {position} ({upload.filename}): {exc.detail}") from None
        if declared is not None and image_metadata["format"] != declared:
            raise ImageValidationError(
                f"Content-Type {uploads.media_type(content_type)} does not match the image, "
                f"which is {image_metadata['format']}"
            )
        validated.append(Image(upload.filename, upload.content, image_metadata))
    model_version = (fields.get("model_version") or "latest").strip()
    return Submission(
        validated,
        priority,
        model_version,
        callback_url,
        webhook_events,
        metadata,
        batch,
        deadline_s=deadline_s,
        retention_s=retention_s or DEFAULT_RETENTION_S,
        upload_ids=upload_ids,
    )


async def _read_body(
    stream: AsyncIterator[bytes],
    content_type: str,
    settings: ApiSettings,
    query: Mapping[str, str],
    *,
    batch: bool,
    raw: bool,
) -> tuple[list[uploads.UploadedFile], dict[str, str]]:
    """The files and text fields of a submit's body, whichever form it takes."""
    if content_type and uploads.media_type(content_type) == "application/json":
        return [], await read_json_options(stream)
    if not content_type and any(name in query for name in (*UPLOAD_FIELDS, *URL_FIELDS)):
        if await uploads.read_raw(stream, JSON_BODY_MAX):
            raise BadRequestError("A submit by upload id or image URL in the query string has no body (or a JSON one)")
        return [], {}
    if raw:
        return [uploads.UploadedFile("upload", await uploads.read_raw(stream, settings.max_file_size))], {}
    form = await uploads.read_form(
        stream,
        content_type,
        file_field="files" if batch else "file",
        max_files=settings.batch_max_files if batch else 1,
        max_file_size=settings.max_file_size,
    )
    return form.files, form.fields


async def read_json_options(stream: AsyncIterator[bytes]) -> dict[str, str]:
    """A JSON submit body (``{"upload_id": "...", "priority": "high", ...}``) as the form fields it stands for."""
    try:
        raw = await uploads.read_raw(stream, JSON_BODY_MAX)
    except ImageValidationError:
        raise BadRequestError(f"A JSON submit body is at most {JSON_BODY_MAX} bytes") from None
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequestError("The body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequestError("A JSON submit body is an object")
    fields: dict[str, str] = {}
    for name, value in body.items():
        if name not in (*FORM_FIELDS, *UPLOAD_FIELDS, *URL_FIELDS):
            raise field_error(name, "unknown field")
        fields[name] = _json_field(name, value)
    return fields


def _json_field(name: str, value: Any) -> str:
    """A JSON body's member as the form field's text (an object for ``metadata``, lists for the comma lists)."""
    if name == "metadata" and isinstance(value, dict):
        return json.dumps(value)
    if name in ("upload_ids", "webhook_events", "image_urls") and isinstance(value, list):
        if not all(isinstance(part, str) for part in value):
            raise field_error(name, "must be a list of strings")
        if name == "image_urls" and any("," in part for part in value):
            raise field_error(name, "a URL in image_urls may not contain a comma (encode it as %2C)")
        return ",".join(value)
    if not isinstance(value, str):
        raise field_error(name, "must be a string")
    return value


def _references(
    query: Mapping[str, str], form: Mapping[str, str], singular: str, *, batch: bool
) -> tuple[str, list[str] | None]:
    """The field a submit names its images by reference with (``singular``, or its plural, a comma list, on a batch)
    and its stripped parts; None: not given. The other form of the name, or the field given twice, is refused."""
    name, other = (singular + "s", singular) if batch else (singular, singular + "s")
    if other in query or other in form:
        raise field_error(other, f"this route takes {name}")
    if name in query and name in form:
        raise field_error(name, "given both as a query parameter and in the body; send it once")
    raw = query.get(name, form.get(name))
    if raw is None:
        return name, None
    return name, [part.strip() for part in raw.split(",") if part.strip()] if batch else [raw.strip()]


def parse_upload_ids(
    query: Mapping[str, str], form: Mapping[str, str], settings: ApiSettings, *, batch: bool
) -> tuple[str, ...]:
    """The upload ids a submit names (``upload_id``; ``upload_ids`` for a batch), each an id ``POST /uploads`` gave."""
    name, ids = _references(query, form, "upload_id", batch=batch)
    if ids is None:
        return ()
    for upload_id in ids:
        try:
            canonical = str(uuid.UUID(upload_id)) == upload_id.lower()
        except ValueError:
            canonical = False
        if not canonical:
            raise field_error(name, "must be upload ids from POST /uploads")
    if not ids:
        raise field_error(name, "at least one upload id is required")
    if len(ids) > settings.batch_max_files or len(set(ids)) != len(ids):
        raise field_error(name, f"at most {settings.batch_max_files} distinct upload ids")
    return tuple(upload_id.lower() for upload_id in ids)


def parse_image_urls(
    query: Mapping[str, str], form: Mapping[str, str], settings: ApiSettings, *, batch: bool
) -> tuple[str, ...]:
    """The image URLs a submit names (``image_url``; ``image_urls``, a comma list, for a batch): https, bounded."""
    name, urls = _references(query, form, "image_url", batch=batch)
    if urls is None:
        return ()
    if not urls:
        raise field_error(name, "at least one image URL is required")
    for url in urls:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise field_error(name, f"not a valid URL: {url[:100]!r}") from None
        if len(url) > IMAGE_URL_MAX or parsed.scheme != "https" or not parsed.host or parsed.userinfo:
            raise field_error(
                name, f"must be https:// URLs with a host (no credentials), each at most {IMAGE_URL_MAX} characters"
            )
    if len(urls) > settings.batch_max_files:
        raise field_error(name, f"at most {settings.batch_max_files} image URLs")
    return tuple(urls)


def new_job_ids(submission: Submission, fresh: Callable[[int], list[str]]) -> list[str]:
    """Fresh ids (``fresh``: of one queue shard); a direct upload's job takes its upload id (its object is already
    ``<tenant>/<upload id>``)."""
    if submission.upload_ids:
        return list(submission.upload_ids)
    return fresh(len(submission.images))


def prefer_wait(header: str | None, ceiling_s: int) -> int | None:
    """Seconds asked for by ``Prefer: wait=N`` (RFC 7240), capped; None when not asked."""
    found = _PREFER_WAIT.search(header or "")
    return min(int(found.group(1)), ceiling_s) if found else None


@dataclass(frozen=True)
class Submitter:
    """Everything a submit touches, from the API's lifespan."""

    jobs: JobStore
    queue: QueueSettings
    idempotency: IdempotencyStore
    routes: RouteStore
    hub: EventHub
    settings: ApiSettings
    direct: DirectUploads | None = None
    """Presigned direct uploads, with an object store that signs URLs (``OBJECT_STORE_URL``)."""

    async def submit(
        self,
        stream: AsyncIterator[bytes],
        content_type: str,
        tenant: str,
        *,
        batch: bool,
        idempotency_key: str | None = None,
        prefer: str | None = None,
        traceparent: str | None = None,
        query: Mapping[str, str] | None = None,
        cancel_after: str | None = None,
    ) -> tuple[list[ClassificationResponse], dict[str, str]]:
        """Validate every file, create the jobs once (per Idempotency-Key), optionally wait for them to end.

        Returns the jobs in file order and the response headers (``Preference-Applied``, ``Idempotent-Replayed``).
        """
        submission = await read_submission(
            stream, content_type, self.settings, batch=batch, query=query, queue=self.queue, cancel_after=cancel_after
        )
        wait_s = prefer_wait(prefer, self.settings.prefer_wait_max_s)
        job_ids = new_job_ids(submission, self.jobs.new_ids)
        # a waiting submit is told of its jobs' ends on the hub's inbox, expected before the jobs exist
        with self.hub.expect(job_ids) if wait_s is not None else nullcontext() as expectation:
            waiters = expectation.inboxes if expectation is not None else {}
            fresh, job_ids, created = await self._create(
                submission, tenant, idempotency_key, traceparent, job_ids, waiters
            )
            # From here on the jobs are accepted: a Redis outage must not turn the answer into a 503, or the client
            # would submit again and the jobs it was not told of would run twice. It gets what is known instead.
            answer: dict[str, str] = {}
            if wait_s is not None:
                try:  # a replay's jobs were created by another request: followed, not expected
                    await wait_for_jobs(self.hub, self.jobs, job_ids, tenant, wait_s, expectation if fresh else None)
                except Exception as exc:  # the wait is a courtesy: whatever ends it, the jobs are answered
                    log.warning("Prefer: wait ended early: %s: %s", type(exc).__name__, exc)
                answer["Preference-Applied"] = f"wait={wait_s}"
        if not fresh:
            answer["Idempotent-Replayed"] = "true"
        try:
            return [accepted(job, result) for job, result in await self.jobs.with_results(job_ids, tenant)], answer
        except JobNotFoundError:
            raise replay_missing() from None
        except StoreUnavailable:
            if not fresh:
                raise  # nothing was accepted by this request: a 503 is the truth
            return [accepted(job) for job in created], answer

    async def _create(
        self,
        submission: Submission,
        tenant: str,
        idempotency_key: str | None,
        traceparent: str | None,
        job_ids: list[str],
        waiters: Mapping[str, str],
    ) -> tuple[bool, list[str], list[Job]]:
        """Create the request's jobs (as ``job_ids``) once per Idempotency-Key: whether this request created them,
        their ids (a replay's are the first request's), and the records as created (empty for a replay)."""
        if submission.upload_ids and self.direct is None:
            raise BadRequestError("Direct uploads (upload_id) need an object store: OBJECT_STORE_URL is not set")
        if idempotency_key is not None:
            # before the claim: a replay of a request naming an alias no longer routed is refused, as a first try is
            await check_model_version(self.routes, submission.model_version)
            claim = await self.idempotency.claim(tenant, idempotency_key, submission.fingerprint(), job_ids)
            if not claim.fresh:
                return False, claim.job_ids, []
            job_ids = claim.job_ids
        claimed: list[str] = []
        try:  # refused when the alias routes nowhere, or with 503 + Retry-After above QUEUE_MAX_DEPTH
            if submission.upload_ids:
                submission = await self._claim_uploads(submission, tenant, claimed)
            jobs = new_jobs(submission, job_ids, tenant, traceparent, waiters)
            with enqueue_spans(jobs) as traced:
                created = await self.jobs.create(traced, self.queue)
        except BaseException:
            if idempotency_key is not None:
                await self.idempotency.release(tenant, idempotency_key)
            for upload_id in claimed:  # no job was made of them: they may be submitted again
                assert self.direct is not None
                await self.direct.release(upload_id)
            raise
        JOBS_SUBMITTED.labels(submission.model_version, str(submission.priority)).inc(len(created))
        return True, job_ids, created

    async def reserve_upload(self, tenant: str) -> UploadReservation:
        """A direct upload for ``tenant``: its id and presigned PUT URL (400 without a store that signs URLs)."""
        if self.direct is None:
            raise BadRequestError("Direct uploads need an object store: OBJECT_STORE_URL is not set on this server")
        found = await self.direct.reserve(tenant)
        return UploadReservation(
            upload_id=found.upload_id,
            url=found.url,
            method=found.method,
            headers=found.headers,
            expires_at=found.expires_at,
            max_bytes=found.max_bytes,
        )

    async def _claim_uploads(self, submission: Submission, tenant: str, claimed: list[str]) -> Submission:
        """Claim each direct upload (appended to ``claimed`` as it is) and check its type and dimensions from its
        first bytes, as a file is checked: the submission with those uploads as its images."""
        assert self.direct is not None
        found = []
        for position, upload_id in enumerate(submission.upload_ids, start=1):
            uploaded = await self.direct.claim(tenant, upload_id)
            claimed.append(upload_id)
            try:
                image_metadata = images.validate(uploaded.head, self.direct.max_bytes)
            except ImageValidationError as exc:
                raise ImageValidationError(f"Upload {position} ({upload_id}): {exc.detail}") from None
            image_metadata["file_size"] = uploaded.size
            found.append(Image(upload_id, b"", image_metadata, upload=uploaded.path))
        return dataclasses.replace(submission, images=found)


_tracer = telemetry.tracer("aic.http")


@contextmanager
def enqueue_spans(jobs: list[NewJob]) -> Iterator[list[NewJob]]:
    """One PRODUCER span per job around the step that enqueues them, each job carrying its span's context (the
    dispatcher's processing span continues from it). Without tracing the jobs keep the client's ``traceparent``."""
    if not telemetry.enabled():
        yield jobs
        return
    spans = []
    for job in jobs:
        destination = f"queue:{job.priority}"
        span = _tracer.start_span(
            f"send {destination}",
            kind=telemetry.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "redis",
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": destination,
                "messaging.message.id": job.job_id,
                "aic.job_id": job.job_id,
                "aic.model_version": job.model_version,
            },
        )
        spans.append(span)
    try:
        traced = []
        for job, span in zip(jobs, spans, strict=True):
            context = telemetry.carrier(span)
            traced.append(
                dataclasses.replace(
                    job, traceparent=context.get(telemetry.TRACEPARENT), tracestate=context.get(telemetry.TRACESTATE)
                )
            )
        with trace.use_span(
            spans[0], record_exception=False, set_status_on_exception=False
        ):  # the enqueue's Redis calls: under the (first) job's
            yield traced
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR, type(exc).__name__)
        raise
    finally:
        for span in spans:
            span.end()


def accepted(job: Job, result: bytes | None = None) -> ClassificationResponse:
    """A submit's answer for one job, with its result inline once it completed."""
    return ClassificationResponse(
        job_id=job.job_id,
        status=job.status,
        created_at=job.created_at,
        estimated_completion=job.estimated_completion,
        result=msgspec.json.decode(result, type=ClassificationResult)
        if result and job.status is JobStatus.COMPLETED
        else None,
    )


def new_jobs(
    submission: Submission,
    job_ids: list[str],
    tenant: str,
    traceparent: str | None,
    waiters: Mapping[str, str] | None = None,
) -> list[NewJob]:
    return [
        NewJob(
            job_id=job_id,
            tenant=tenant,
            image=image.content,
            image_metadata=image.image_metadata,
            priority=submission.priority,
            model_version=submission.model_version,
            metadata=submission.metadata,
            callback_url=submission.callback_url,
            webhook_events=submission.webhook_events,
            traceparent=traceparent,
            waiter=(waiters or {}).get(job_id, ""),
            deadline_s=submission.deadline_s,
            retention_s=submission.retention_s,
            upload=image.upload,
            image_url=image.image_url,
        )
        for job_id, image in zip(job_ids, submission.images, strict=True)
    ]
