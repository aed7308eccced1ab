"""The asyncio client: the same calls as ``Client``, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from types import TracebackType
from typing import Any

import httpx

from aic.client import _wire
from aic.client.errors import BadRequest, JobTimeout
from aic.client.models import Image, Job, JobPage, Models, Result, Status, Token, Upload, Usage
from aic.core.retry import RetryPolicy
from aic.core.schemas import BatchResponse, UploadReservation


class AsyncClient:
    """See ``Client``; one per event loop, closed with ``aclose()`` or ``async with``."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy = _wire.DEFAULT_RETRY,
        transport: httpx.AsyncBaseTransport | None = None,
        direct_upload_above: int | None = _wire.DIRECT_UPLOAD_ABOVE,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.direct_upload_above = direct_upload_above
        """A file larger than this goes through ``upload()`` when the service offers direct uploads (None: never)."""
        self._sleep = sleep
        headers = {"User-Agent": _wire.USER_AGENT, **_wire.credential_headers(api_key, token)}
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        attempt = 1
        while True:
            request = self._http.build_request(method, path, **kwargs)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                raise _wire.unreachable(self.base_url, exc) from exc
            delay = _wire.retry_delay_s(self.retry, response, attempt)
            if delay is None:
                return response
            await response.aclose()
            await self._sleep(delay)
            attempt += 1

    async def submit(
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
        _wire.one_image(image, upload_id, image_url)
        if image is not None and idempotency_key is None:
            image = Upload.of(image)
            upload_id = await self._upload_if_large(image)
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
        return _wire.decode(await self._submit(parts, wait_s), Job)

    async def submit_batch(
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
        return _wire.decode(await self._submit(parts, wait_s), BatchResponse).jobs

    async def upload(self, image: Image) -> str:
        """A presigned direct upload (the service needs an object store): ``POST /uploads``, then the image PUT
        straight to the store; its ``upload_id``, for ``submit(upload_id=...)``. The API key never goes to the store."""
        upload = Upload.of(image)
        reservation = _wire.decode(await self._send("POST", "/uploads"), UploadReservation)
        _wire.reservation_fits(reservation, upload.content)
        timeout = self._http.timeout
        try:
            async with httpx.AsyncClient(timeout=timeout) as store:
                response = await store.request(
                    reservation.method, reservation.url, content=upload.content, headers=reservation.headers
                )
        except httpx.TransportError as exc:
            raise _wire.unreachable(reservation.url.split("?", 1)[0], exc) from exc
        if response.is_error:
            raise _wire.put_failed(response)
        return reservation.upload_id

    async def _upload_if_large(self, upload: Upload) -> str | None:
        """The upload id of a file over ``direct_upload_above`` sent through a direct upload; None for a small file
        or a service without direct uploads (it then gets the file, and answers its own size limit)."""
        if self.direct_upload_above is None or len(upload.content) <= self.direct_upload_above:
            return None
        try:
            return await self.upload(upload)
        except BadRequest:  # no object store there: OBJECT_STORE_URL is not set
            return None

    async def _submit(self, parts: _wire.SubmitParts, wait_s: int | None) -> httpx.Response:
        timeout = self._http.timeout.read or 30.0
        return await self._send(
            "POST",
            parts.path,
            files=parts.files or None,
            data=parts.data or None,
            json=parts.json,
            headers=parts.headers,
            timeout=timeout + (wait_s or 0),
        )

    async def status(self, job_id: str) -> Status:
        return _wire.decode(await self._send("GET", f"/status/{job_id}"), Status)

    async def result(self, job_id: str) -> Result:
        return _wire.decode(await self._send("GET", f"/result/{job_id}"), Result)

    async def cancel(self, job_id: str) -> Status:
        return _wire.decode(await self._send("DELETE", f"/jobs/{job_id}"), Status)

    async def purge(self, job_id: str) -> None:
        """Erase a job: cancelled if still live, then everything of it deleted; ``NotFound`` afterwards."""
        response = await self._send("DELETE", f"/jobs/{job_id}", params={"purge": "true"})
        if response.is_error:
            raise _wire.error_of(response)

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        priority: str | None = None,
        model_version: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int | None = None,
        tenant: str | None = None,
    ) -> AsyncIterator[Status]:
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
                await self._send("GET", "/jobs", params={**params, **({"cursor": cursor} if cursor else {})}), JobPage
            )
            for job in page.jobs:
                if limit is not None and given >= limit:
                    return
                given += 1
                yield job
            cursor = page.next_cursor
            if cursor is None or (limit is not None and given >= limit):
                return

    async def usage(
        self,
        start: date | str | None = None,
        end: date | str | None = None,
        *,
        group_by: str = "day",
        tenant: str | None = None,
    ) -> Usage:
        """Jobs, bytes and inference time per UTC day (``group_by="model"``: per model version) from ``start`` to
        ``end`` (default: the last 30 days); an admin may pass ``tenant`` (``"*"``: every tenant)."""
        return _wire.decode(
            await self._send("GET", "/usage", params=_wire.usage_params(start, end, group_by, tenant)), Usage
        )

    async def token(self) -> Token:
        return _wire.decode(await self._send("POST", "/auth/token"), Token)

    async def models(self) -> Models:
        return _wire.decode(await self._send("GET", "/models"), Models)

    async def follow(self, job_id: str, *, timeout_s: float | None = None) -> AsyncIterator[Status]:
        """Every change of the job's status until it ends (Server-Sent Events, else polling)."""
        deadline = _wire.deadline_of(timeout_s)
        last: Status | None = None
        try:
            async for status in self._events(job_id, deadline):
                last = status
                yield status
        except _wire.STREAM_FINAL:
            raise
        except _wire.STREAM_BROKEN:
            pass  # the stream is unavailable or broke off: polling carries on from the last status seen
        while last is None or last.status.live:
            if _wire.expired(deadline):
                raise JobTimeout(job_id, timeout_s or 0)
            current = await self.status(job_id)
            if _wire.changed(last, current):
                last = current
                yield current
            if current.status.live:
                await self._sleep(_wire.POLL_INTERVAL_S)

    async def _events(self, job_id: str, deadline: float | None) -> AsyncIterator[Status]:
        timeout = _wire.events_timeout(self._http.timeout, deadline)
        response = await self._send("GET", f"/status/{job_id}/events", stream=True, timeout=timeout)
        try:
            if not _wire.is_event_stream(response):
                await response.aread()
                raise _wire.error_of(response)
            parser = _wire.SseParser()
            async for line in response.aiter_lines():
                status = parser.line(line)
                if status is not None:
                    yield status
                    if status.status.terminal:
                        return
                if _wire.expired(deadline):
                    return  # follow() raises JobTimeout with the caller's timeout
        finally:
            await response.aclose()

    async def wait(self, job_id: str, *, timeout_s: float | None = None) -> Status:
        last: Status | None = None
        async for last in self.follow(job_id, timeout_s=timeout_s):  # noqa: B007
            pass
        assert last is not None
        return last
