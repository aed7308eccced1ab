"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime
from types import TracebackType
from typing import Any

import httpx

from aic.client import _wire
from aic.client.errors import BadRequest, JobTimeout
from aic.client.models import Image, Job, JobPage, Models, Result, Status, Token, Upload, Usage
from aic.core.retry import RetryPolicy
from aic.core.schemas import BatchResponse, UploadReservation


class Client:
    """The job API at ``base_url`` (the API prefix, e.g. ``http://127.0.0.1:8000/api/v1``), authenticated with
    ``api_key`` (sent as ``X-API-Key``) or ``token`` (a Bearer token from ``token()``). Use as a context manager,
    or call ``close()``. 429 and 503 answers are retried per ``retry``; every other error raises."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy = _wire.DEFAULT_RETRY,
        transport: httpx.BaseTransport | None = None,
        direct_upload_above: int | None = _wire.DIRECT_UPLOAD_ABOVE,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.direct_upload_above = direct_upload_above
        """A file larger than this goes through ``upload()`` when the service offers direct uploads (None: never)."""
        self._sleep = sleep
        headers = {"User-Agent": _wire.USER_AGENT, **_wire.credential_headers(api_key, token)}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _send(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        attempt = 1
        while True:
            request = self._http.build_request(method, path, **kwargs)
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                raise _wire.unreachable(self.base_url, exc) from exc
            delay = _wire.retry_delay_s(self.retry, response, attempt)
            if delay is None:
                return response
            response.close()
            self._sleep(delay)
            attempt += 1

    def submit(
        self,
        image: Image | None = None,
        *,
        upload_id: str | None = None,
        image_url: str | None = None,
        priority: str | None = None,
        model_version: str | None = None,
        callback_url: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        wait_s: int | None = None,
        deadline_s: int | None = None,
        retention_s: int | None = None,
    ) -> Job:
        """Submit one image (bytes, a path or an ``Upload``), or instead a direct upload's ``upload_id`` (``upload()``)
        or an https ``image_url`` the service fetches; with ``wait_s`` the answer waits up to that long
        for the job to end (``Prefer: wait``) and carries the result when it completed. ``deadline_s``: not finished
        by then, the job fails with TIMEOUT; ``retention_s``: how long the ended job stays readable."""
        _wire.one_image(image, upload_id, image_url)
        if image is not None and idempotency_key is None:
            image = Upload.of(image)
            upload_id = self._upload_if_large(image)
            image = None if upload_id is not None else image
        parts = _wire.submit_parts(
            [image] if image is not None else [],
            batch=False,
            upload_ids=[upload_id] if upload_id is not None else [],
            image_urls=[image_url] if image_url is not None else [],
            priority=priority,
            model_version=model_version,
            callback_url=callback_url,
            metadata=metadata,
            idempotency_key=idempotency_key,
            wait_s=wait_s,
            deadline_s=deadline_s,
            retention_s=retention_s,
        )
        return _wire.decode(self._submit(parts, wait_s), Job)

    def submit_batch(
        self,
        images: Sequence[Image] = (),
        *,
        upload_ids: Sequence[str] = (),
        image_urls: Sequence[str] = (),
        priority: str | None = None,
        model_version: str | None = None,
        idempotency_key: str | None = None,
        wait_s: int | None = None,
    ) -> list[Job]:
        """Submit several images in one request: all are checked before any job is created; jobs in order."""
        parts = _wire.submit_parts(
            images,
            batch=True,
            upload_ids=upload_ids,
            image_urls=image_urls,
            priority=priority,
            model_version=model_version,
            idempotency_key=idempotency_key,
            wait_s=wait_s,
        )
        return _wire.decode(self._submit(parts, wait_s), BatchResponse).jobs

    def upload(self, image: Image) -> str:
        """A presigned direct upload (the service needs an object store): ``POST /uploads``, then the image PUT
        straight to the store; its ``upload_id``, for ``submit(upload_id=...)``. The API key never goes to the store."""
        upload = Upload.of(image)
        reservation = _wire.decode(self._send("POST", "/uploads"), UploadReservation)
        _wire.reservation_fits(reservation, upload.content)
        try:
            with httpx.Client(timeout=self._http.timeout) as store:
                response = store.request(
                    reservation.method, reservation.url, content=upload.content, headers=reservation.headers
                )
        except httpx.TransportError as exc:
            raise _wire.unreachable(reservation.url.split("?", 1)[0], exc) from exc
        if response.is_error:
            raise _wire.put_failed(response)
        return reservation.upload_id

    def _upload_if_large(self, upload: Upload) -> str | None:
        """The upload id of a file over ``direct_upload_above`` sent through a direct upload; None for a small file
        or a service without direct uploads (it then gets the file, and answers its own size limit)."""
        if self.direct_upload_above is None or len(upload.content) <= self.direct_upload_above:
            return None
        try:
            return self.upload(upload)
        except BadRequest:  # no object store there: OBJECT_STORE_URL is not set
            return None

    def _submit(self, parts: _wire.SubmitParts, wait_s: int | None) -> httpx.Response:
        timeout = self._http.timeout.read or 30.0
        return self._send(
            "POST",
            parts.path,
            files=parts.files or None,
            data=parts.data or None,
            json=parts.json,
            headers=parts.headers,
            timeout=timeout + (wait_s or 0),
        )

    def status(self, job_id: str) -> Status:
        return _wire.decode(self._send("GET", f"/status/{job_id}"), Status)

    def result(self, job_id: str) -> Result:
        """The predictions of a completed job; ``Conflict`` while it is not (or when it failed)."""
        return _wire.decode(self._send("GET", f"/result/{job_id}"), Result)

    def cancel(self, job_id: str) -> Status:
        """Cancel a pending or processing job; ``Conflict`` once it has ended."""
        return _wire.decode(self._send("DELETE", f"/jobs/{job_id}"), Status)

    def purge(self, job_id: str) -> None:
        """Erase a job: cancelled if still live, then everything of it deleted; ``NotFound`` afterwards."""
        response = self._send("DELETE", f"/jobs/{job_id}", params={"purge": "true"})
        if response.is_error:
            raise _wire.error_of(response)

    def list_jobs(
        self,
        *,
        status: str | None = None,
        priority: str | None = None,
        model_version: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int | None = None,
        tenant: str | None = None,
    ) -> Iterator[Status]:
        """The caller's jobs (an admin: ``tenant``'s), newest first, following the pages' cursors; at most
        ``limit`` of them (default: all the service still holds)."""
        params = _wire.list_params(
            status=status,
            priority=priority,
            model_version=model_version,
            created_after=created_after,
            created_before=created_before,
            tenant=tenant,
            page_size=min(limit or _wire.LIST_PAGE_SIZE, _wire.LIST_PAGE_SIZE),
        )
        given = 0
        cursor: str | None = None
        while True:
            page = _wire.decode(
                self._send("GET", "/jobs", params={**params, **({"cursor": cursor} if cursor else {})}), JobPage
            )
            for job in page.jobs:
                if limit is not None and given >= limit:
                    return
                given += 1
                yield job
            cursor = page.next_cursor
            if cursor is None or (limit is not None and given >= limit):
                return

    def usage(
        self,
        start: date | str | None = None,
        end: date | str | None = None,
        *,
        group_by: str = "day",
        tenant: str | None = None,
    ) -> Usage:
        """Jobs, bytes and inference time per UTC day (``group_by="model"``: per model version) from ``start`` to
        ``end`` (default: the last 30 days); an admin may pass ``tenant`` (``"*"``: every tenant)."""
        return _wire.decode(self._send("GET", "/usage", params=_wire.usage_params(start, end, group_by, tenant)), Usage)

    def token(self) -> Token:
        """Exchange the API key for a short-lived Bearer token (for a WebSocket, or to hand to a browser)."""
        return _wire.decode(self._send("POST", "/auth/token"), Token)

    def models(self) -> Models:
        return _wire.decode(self._send("GET", "/models"), Models)

    def follow(self, job_id: str, *, timeout_s: float | None = None) -> Iterator[Status]:
        """Every change of the job's status until it ends, from the Server-Sent Events stream; where that is not
        available or breaks off, by polling ``GET /status``. Raises ``JobTimeout`` after ``timeout_s``."""
        deadline = _wire.deadline_of(timeout_s)
        last: Status | None = None
        try:
            for status in self._events(job_id, deadline):
                last = status
                yield status
        except _wire.STREAM_FINAL:
            raise
        except _wire.STREAM_BROKEN:
            pass  # the stream is unavailable or broke off: polling carries on from the last status seen
        while last is None or last.status.live:
            if _wire.expired(deadline):
                raise JobTimeout(job_id, timeout_s or 0)
            current = self.status(job_id)
            if _wire.changed(last, current):
                last = current
                yield current
            if current.status.live:
                self._sleep(_wire.POLL_INTERVAL_S)

    def _events(self, job_id: str, deadline: float | None) -> Iterator[Status]:
        timeout = _wire.events_timeout(self._http.timeout, deadline)
        response = self._send("GET", f"/status/{job_id}/events", stream=True, timeout=timeout)
        try:
            if not _wire.is_event_stream(response):
                response.read()
                raise _wire.error_of(response)
            parser = _wire.SseParser()
            for line in response.iter_lines():
                status = parser.line(line)
                if status is not None:
                    yield status
                    if status.status.terminal:
                        return
                if _wire.expired(deadline):
                    return  # follow() raises JobTimeout with the caller's timeout
        finally:
            response.close()

    def wait(self, job_id: str, *, timeout_s: float | None = None) -> Status:
        """The job's final status (completed, failed or cancelled)."""
        last: Status | None = None
        for last in self.follow(job_id, timeout_s=timeout_s):  # noqa: B007 - the last one is the final one
            pass
        assert last is not None
        return last
