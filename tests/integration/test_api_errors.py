"""Every error a real client can meet, over HTTP and WebSocket, is the ErrorResponse with a request id: the
framework's own (unknown paths, methods a path lacks) and the WebSocket's, before and after the handshake."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from conftest import API_KEY, Stack
from helpers import ws_url
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.integration


def assert_error_shape(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body: dict[str, object] = response.json()
    assert body["error"] == code
    assert set(body) >= {"error", "detail", "timestamp", "request_id"}
    assert body["request_id"] and response.headers["x-request-id"] == body["request_id"]
    return body


@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/v1/status/x/more"])
def test_an_unknown_path_is_404_http_error_not_job_not_found(stack: Stack, path: str) -> None:
    root = stack.base_url.removesuffix("/api/v1")
    body = assert_error_shape(httpx.get(f"{root}{path}", headers={"X-API-Key": API_KEY}), 404, "HTTP_ERROR")
    assert path in str(body["detail"])


def test_a_method_the_path_lacks_is_405_with_allow(stack: Stack) -> None:
    root = stack.base_url.removesuffix("/api/v1")
    for method, path in (("PUT", "/livez"), ("DELETE", "/api/v1/classify")):
        response = httpx.request(method, f"{root}{path}", headers={"X-API-Key": API_KEY})
        assert_error_shape(response, 405, "HTTP_ERROR")
        assert response.headers["allow"]


def test_the_clients_request_id_comes_back_on_errors(stack: Stack) -> None:
    response = httpx.get(f"{stack.base_url}/nope", headers={"X-Request-ID": "trace-me-42"})
    assert response.json()["request_id"] == "trace-me-42" == response.headers["x-request-id"]


def test_a_websocket_without_credentials_is_refused_with_the_error_response(stack: Stack) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(stack.base_url, str(uuid.uuid4())), open_timeout=30)
    response = refused.value.response
    assert response.status_code == 401
    body = json.loads(response.body)
    assert body["error"] == "UNAUTHORIZED" and body["request_id"] == response.headers["x-request-id"]


def test_a_websocket_error_after_the_handshake_carries_a_request_id(stack: Stack) -> None:
    url = ws_url(stack.base_url, str(uuid.uuid4()))
    with connect(url, additional_headers={"X-API-Key": API_KEY, "X-Request-ID": "ws-77"}, open_timeout=30) as ws:
        message = json.loads(ws.recv(timeout=30))
        with pytest.raises(Exception):  # noqa: B017 - the close that follows
            ws.recv(timeout=30)
        code = ws.close_code
    assert message["error"] == "JOB_NOT_FOUND" and message["request_id"] == "ws-77"
    assert code == 4404
