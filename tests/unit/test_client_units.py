"""The client's pure parts: retries after Retry-After, typed errors carrying the ErrorResponse, SSE parsing and the
fall back to polling, over httpx.MockTransport (no server)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from aic.client import (
    AsyncClient,
    AuthenticationError,
    BadRequest,
    Client,
    Conflict,
    JobTimeout,
    NotFound,
    RateLimited,
    RetryPolicy,
    ServiceUnavailable,
    ServiceUnreachable,
)
from aic.client._wire import SseParser

BASE = "http://svc.test/api/v1"


def error(status: int, code: str, detail: str, **headers: str) -> httpx.Response:
    body = {"error": code, "detail": detail, "timestamp": "2026-12-01T00:00:00Z", "request_id": "rid-1"}
    return httpx.Response(status, json=body, headers=headers)


def status_body(state: str, progress: int, stage: str | None) -> dict[str, object]:
    return {"job_id": "j1", "status": state, "progress": progress, "stage": stage, "updated_at": "t"}


def sequence(*answers: httpx.Response) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0)

    return httpx.MockTransport(handle), seen


def sync_client(transport: httpx.MockTransport, slept: list[float], **kw: object) -> Client:
    return Client(BASE, "key-0123456789abcdef", transport=transport, sleep=slept.append, **kw)  # type: ignore[arg-type]


def test_429_is_retried_after_its_retry_after_seconds() -> None:
    transport, seen = sequence(
        error(429, "RATE_LIMITED", "slow down", **{"Retry-After": "7"}),
        httpx.Response(200, json=status_body("pending", 0, None)),
    )
    slept: list[float] = []
    with sync_client(transport, slept) as client:
        assert client.status("j1").status == "pending"
    assert slept == [7.0]
    assert len(seen) == 2


def test_503_without_retry_after_backs_off_exponentially_then_raises_with_the_error_response() -> None:
    transport, seen = sequence(*[error(503, "SERVICE_UNAVAILABLE", "queue full") for _ in range(4)])
    slept: list[float] = []
    policy = RetryPolicy(max_attempts=4, base_delay_s=0.5, factor=2, max_delay_s=30, jitter=0)
    with sync_client(transport, slept, retry=policy) as client, pytest.raises(ServiceUnavailable) as caught:
        client.status("j1")
    assert slept == [0.5, 1.0, 2.0]
    assert len(seen) == 4
    assert caught.value.error.detail == "queue full"
    assert caught.value.error.request_id == "rid-1"


def test_a_long_retry_after_is_capped_and_an_exhausted_429_raises_rate_limited() -> None:
    transport, _ = sequence(*[error(429, "RATE_LIMITED", "no", **{"Retry-After": "3600"}) for _ in range(2)])
    slept: list[float] = []
    policy = RetryPolicy(max_attempts=2, base_delay_s=1, factor=2, max_delay_s=5, jitter=0)
    with sync_client(transport, slept, retry=policy) as client, pytest.raises(RateLimited) as caught:
        client.submit(b"\xff\xd8\xff-bytes")
    assert slept == [5.0]
    assert caught.value.retry_after_s == 3600


def test_a_retried_submit_sends_the_whole_body_and_idempotency_key_again() -> None:
    transport, seen = sequence(
        error(503, "SERVICE_UNAVAILABLE", "busy", **{"Retry-After": "0"}),
        httpx.Response(200, json={"job_id": "j1", "status": "pending", "created_at": "t"}),
    )
    with sync_client(transport, []) as client:
        job = client.submit(b"JPEGBYTES", idempotency_key="idem-1", priority="high")
    assert job.job_id == "j1"
    assert all(b"JPEGBYTES" in r.content and b"high" in r.content for r in seen) and len(seen) == 2
    assert all(r.headers["Idempotency-Key"] == "idem-1" for r in seen)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, BadRequest), (422, BadRequest), (401, AuthenticationError), (403, AuthenticationError), (404, NotFound)],
)
def test_errors_are_typed_and_not_retried(status: int, kind: type[Exception]) -> None:
    transport, seen = sequence(error(status, "X", "because"))
    slept: list[float] = []
    with sync_client(transport, slept) as client, pytest.raises(kind):
        client.result("j1")
    assert slept == [] and len(seen) == 1


def test_a_body_that_is_not_an_error_response_is_kept_as_the_detail() -> None:
    transport, _ = sequence(httpx.Response(409, text="<html>proxy says no</html>"))
    with sync_client(transport, []) as client, pytest.raises(Conflict) as caught:
        client.cancel("j1")
    assert "proxy says no" in caught.value.detail


def test_a_connection_failure_is_service_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with sync_client(httpx.MockTransport(refuse), []) as client, pytest.raises(ServiceUnreachable):
        client.status("j1")


def test_the_default_policy_jitters_only_downwards_and_retries_three_times() -> None:
    transport, seen = sequence(*[error(503, "SERVICE_UNAVAILABLE", "busy") for _ in range(4)])
    slept: list[float] = []
    with sync_client(transport, slept) as client, pytest.raises(ServiceUnavailable):
        client.status("j1")
    assert len(seen) == 4 and len(slept) == 3
    assert all(0.8 * nominal <= got <= nominal for got, nominal in zip(slept, [1.0, 2.0, 4.0], strict=True))


def test_sse_parser_yields_status_events_and_skips_keep_alives() -> None:
    parser = SseParser()
    lines = [": keep-alive", "", "event: status", f"data: {json.dumps(status_body('processing', 40, 'x'))}", ""]
    found = [s for s in map(parser.line, lines) if s is not None]
    assert [(s.status, s.progress) for s in found] == [("processing", 40)]


def test_follow_falls_back_to_polling_where_the_event_stream_is_refused() -> None:
    polls = iter([status_body("processing", 80, "inference"), status_body("completed", 100, "completed")])

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return error(405, "HTTP_ERROR", "no streams behind this proxy")
        return httpx.Response(200, json=next(polls))

    slept: list[float] = []
    with sync_client(httpx.MockTransport(handle), slept) as client:
        seen = [(s.status, s.progress) for s in client.follow("j1")]
    assert seen == [("processing", 80), ("completed", 100)]
    assert slept  # polled, not streamed


def test_follow_reads_the_event_stream_until_a_terminal_status() -> None:
    stream = "".join(
        f"event: status\ndata: {json.dumps(status_body(state, pct, stage))}\n\n"
        for state, pct, stage in [("pending", 0, None), ("processing", 40, "preprocessing"), ("completed", 100, None)]
    )

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/events")
        return httpx.Response(200, text=": hi\n\n" + stream, headers={"content-type": "text/event-stream"})

    async def run() -> list[tuple[str, int]]:
        async with AsyncClient(BASE, "key-0123456789abcdef", transport=httpx.MockTransport(handle)) as client:
            return [(s.status, s.progress) async for s in client.follow("j1")]

    assert asyncio.run(run()) == [("pending", 0), ("processing", 40), ("completed", 100)]


def test_follow_does_not_hide_an_unknown_job_behind_polling() -> None:
    transport, _ = sequence(error(404, "JOB_NOT_FOUND", "Job not found: j1"))
    with sync_client(transport, []) as client, pytest.raises(NotFound):
        list(client.follow("j1"))


def test_async_client_retries_with_its_own_sleep() -> None:
    transport, _ = sequence(
        error(429, "RATE_LIMITED", "wait", **{"Retry-After": "2"}),
        httpx.Response(200, json={"access_token": "t", "token_type": "bearer", "expires_in": 60}),
    )
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def run() -> str:
        async with AsyncClient(BASE, "key-0123456789abcdef", transport=transport, sleep=sleep) as client:
            return (await client.token()).access_token

    assert asyncio.run(run()) == "t"
    assert slept == [2.0]


def test_a_stream_that_outlives_the_timeout_raises_job_timeout_with_that_timeout() -> None:
    def lines() -> Iterator[bytes]:
        yield f"event: status\ndata: {json.dumps(status_body('processing', 40, 'preprocessing'))}\n\n".encode()
        for _ in range(100):
            time.sleep(0.01)
            yield b": keep-alive\n\n"

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=lines(), headers={"content-type": "text/event-stream"})

    with sync_client(httpx.MockTransport(handle), []) as client, pytest.raises(JobTimeout) as ended:
        list(client.follow("j1", timeout_s=0.2))
    assert "0.2" in str(ended.value)  # the caller's timeout, not 0
