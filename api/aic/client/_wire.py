"""What the sync and async clients share, with no I/O: the retry policy, request parts, answer decoding and the
Server-Sent Events parser. Each client only sends and sleeps its own way."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

import httpx
import msgspec

from aic.client.errors import ApiError, AuthenticationError, ClientError, NotFound, ServiceUnreachable, error_for
from aic.client.models import ErrorResponse, Image, Status, Upload
from aic.core.retry import RetryPolicy, parse_retry_after
from aic.core.schemas import UploadReservation

T = TypeVar("T")

DIRECT_UPLOAD_ABOVE = 10 * 1024 * 1024
"""A single submit's file larger than this (the service's default ``MAX_FILE_SIZE``) goes through a direct upload
when the service offers them; a submit with an Idempotency-Key never does (a new upload id each time would make a
retry a different request)."""
RETRIED_STATUSES = frozenset({429, 503})
"""Answers that say "not now": the request was refused before it did anything, so sending it again is safe."""
USER_AGENT = "aic-client/1"
POLL_INTERVAL_S = 0.5
SSE_READ_TIMEOUT_S = 45.0
"""The events stream sends a keep-alive every 15 s; three missed mean the stream is gone."""


DEFAULT_RETRY = RetryPolicy(max_attempts=4, base_delay_s=1.0, factor=2.0, max_delay_s=30.0, jitter=0.2)
"""429 and 503 are tried 4 times in all: after their ``Retry-After`` (seconds or an HTTP date), else after 1, 2,
4 s (less up to a fifth, so clients refused together do not return together); never more than 30 s apart."""


def retry_delay_s(policy: RetryPolicy, response: httpx.Response, attempt: int) -> float | None:
    """Seconds to wait after failed attempt number ``attempt`` (1-based), or None when ``response`` is final."""
    if response.status_code not in RETRIED_STATUSES or not policy.retries_left(attempt):
        return None
    return policy.delay_s(attempt, parse_retry_after(response.headers.get("retry-after")))


def deadline_of(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else time.monotonic() + timeout_s


def expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def events_timeout(http_timeout: httpx.Timeout, deadline: float | None) -> httpx.Timeout:
    """The events stream's timeouts: a read may wait for keep-alives, but not past the caller's deadline."""
    read_s = SSE_READ_TIMEOUT_S
    if deadline is not None:
        read_s = max(0.1, min(read_s, deadline - time.monotonic()))
    return httpx.Timeout(http_timeout.connect, read=read_s)


def unreachable(base_url: str, exc: httpx.TransportError) -> ServiceUnreachable:
    return ServiceUnreachable(f"{base_url}: {type(exc).__name__}: {exc}")


STREAM_FINAL: tuple[type[Exception], ...] = (AuthenticationError, NotFound)
"""Errors of the events stream that polling would meet too: raised as they are."""
STREAM_BROKEN: tuple[type[Exception], ...] = (ApiError, ServiceUnreachable, httpx.HTTPError)
"""Errors after which following goes on by polling from the last status seen."""


def credential_headers(api_key: str | None, token: str | None) -> dict[str, str]:
    if token:
        return {"Authorization": f"Bearer {token}"}
    return {"X-API-Key": api_key} if api_key else {}


def error_of(response: httpx.Response) -> ApiError:
    """The typed exception for an error answer; a body that is not an ErrorResponse (a proxy's page) is kept as
    the detail, cut short."""
    try:
        error = msgspec.json.decode(response.content, type=ErrorResponse)
    except msgspec.DecodeError:
        error = ErrorResponse(error="HTTP_ERROR", detail=response.text[:300] or response.reason_phrase, timestamp="")
    return error_for(response.status_code, error, parse_retry_after(response.headers.get("retry-after")))


def decode(response: httpx.Response, kind: type[T]) -> T:
    if response.is_error:
        raise error_of(response)
    return msgspec.json.decode(response.content, type=kind)


@dataclass(frozen=True)
class SubmitParts:
    """The multipart body and headers of one submit."""

    path: str
    files: list[tuple[str, tuple[str, bytes, str]]]
    data: dict[str, str]
    headers: dict[str, str]
    json: dict[str, Any] | None = None
    """A submit by upload id or image URL: a JSON body (no file, no form)."""


def one_image(image: Image | None, upload_id: str | None, image_url: str | None) -> None:
    """A submit names exactly one of an image, an upload id and an image URL; ValueError otherwise."""
    if sum(part is not None for part in (image, upload_id, image_url)) != 1:
        raise ValueError("submit takes exactly one of an image, upload_id= and image_url=")


def reservation_fits(reservation: UploadReservation, content: bytes) -> None:
    if len(content) > reservation.max_bytes:
        raise ValueError(f"the image is {len(content)} bytes; the service takes at most {reservation.max_bytes}")


def put_failed(response: httpx.Response) -> ClientError:
    return ClientError(f"the object store refused the upload: {response.status_code} {response.text[:200]}")


def submit_parts(
    images: Sequence[Image],
    *,
    batch: bool,
    priority: str | None = None,
    model_version: str | None = None,
    callback_url: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    wait_s: int | None = None,
    deadline_s: int | None = None,
    retention_s: int | None = None,
    upload_ids: Sequence[str] = (),
    image_urls: Sequence[str] = (),
) -> SubmitParts:
    """A submit's body: ``images`` as a multipart form, or (none given) ``upload_ids`` or ``image_urls`` as JSON."""
    uploads = [Upload.of(image) for image in images]
    field = "files" if batch else "file"
    files = [(field, (u.filename, u.content, "application/octet-stream")) for u in uploads]
    data = {
        name: value
        for name, value in (("priority", priority), ("model_version", model_version), ("callback_url", callback_url))
        if value is not None
    }
    if metadata is not None:
        data["metadata"] = json.dumps(dict(metadata))
    for name, seconds in (("deadline_s", deadline_s), ("retention_s", retention_s)):
        if seconds is not None:
            data[name] = str(int(seconds))
    headers = {}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    if wait_s is not None:
        headers["Prefer"] = f"wait={int(wait_s)}"
    path = "/classify/batch" if batch else "/classify"
    references = [
        (name, list(values)) for name, values in (("upload_id", upload_ids), ("image_url", image_urls)) if values
    ]
    if len(references) + bool(uploads) != 1:
        raise ValueError("a submit sends images, upload ids or image URLs: exactly one of them")
    if references:
        [(name, values)] = references
        body: dict[str, Any] = {**data, f"{name}s": values} if batch else {**data, name: values[0]}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return SubmitParts(path, [], {}, headers, body)
    return SubmitParts(path, files, data, headers)


LIST_PAGE_SIZE = 100
"""Jobs asked for per page while ``list_jobs`` follows cursors (the service's largest page)."""


def list_params(
    *,
    status: str | None = None,
    priority: str | None = None,
    model_version: str | None = None,
    created_after: datetime | str | None = None,
    created_before: datetime | str | None = None,
    tenant: str | None = None,
    page_size: int = LIST_PAGE_SIZE,
) -> dict[str, str]:
    """The query of ``GET /jobs`` (without the cursor)."""
    params = {
        "status": status,
        "priority": priority,
        "model_version": model_version,
        "created_after": _moment(created_after),
        "created_before": _moment(created_before),
        "tenant": tenant,
    }
    return {"limit": str(page_size), **{name: value for name, value in params.items() if value is not None}}


def usage_params(
    start: date | str | None = None, end: date | str | None = None, group_by: str = "day", tenant: str | None = None
) -> dict[str, str]:
    """The query of ``GET /usage``."""
    params = {"from": start, "to": end, "group_by": group_by, "tenant": tenant}
    return {name: str(value) for name, value in params.items() if value is not None}


def _moment(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


class SseParser:
    """Reads ``text/event-stream`` line by line; ``line()`` returns the status of each complete ``status``
    event, else None (comments are the keep-alives)."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []

    def line(self, line: str) -> Status | None:
        if line == "":
            event, data = self._event, self._data
            self._event, self._data = "message", []
            if event == "status" and data:
                return msgspec.json.decode("\n".join(data), type=Status)
            return None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def is_event_stream(response: httpx.Response) -> bool:
    return response.status_code == 200 and response.headers.get("content-type", "").startswith("text/event-stream")


def changed(last: Status | None, current: Status) -> bool:
    return last is None or (current.status, current.progress, current.stage) != (last.status, last.progress, last.stage)
