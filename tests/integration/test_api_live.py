"""Live progress over a real WebSocket client and a real SSE client, against the real stack."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

import httpx
import pytest
from conftest import API_KEY, OTHER_TENANT_KEY, Stack
from helpers import jpeg, sse_events, submit, wait_done, ws_url
from skimage import data as skdata
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.integration

STAGES = ["initializing", "preprocessing", "inference", "completed"]


def ws_messages(url: str, **kwargs: Any) -> tuple[list[dict[str, Any]], int | None]:
    messages = []
    with connect(url, open_timeout=30, **kwargs) as ws:
        try:
            while True:
                messages.append(json.loads(ws.recv(timeout=120)))
        except ConnectionClosed:
            pass
        code = ws.close_code
    return messages, code


def test_websocket_pushes_every_change_then_closes(quiet_stack: Stack) -> None:
    stack = quiet_stack
    with stack.client() as client, contextlib.ExitStack() as open_socket:
        job_id = submit(client, jpeg(skdata.coffee())).json()["job_id"]  # pending: no dispatcher yet
        url = ws_url(stack.base_url, job_id)
        ws = open_socket.enter_context(connect(url, additional_headers={"X-API-Key": API_KEY}, open_timeout=30))
        messages = [json.loads(ws.recv(timeout=30))]
        # a dispatcher starts while the socket is open: every change reaches it, then a clean close
        with stack.own_dispatcher():
            try:
                while True:
                    messages.append(json.loads(ws.recv(timeout=120)))
            except ConnectionClosed:
                pass
    assert ws.close_code == 1000
    assert messages[0]["status"] == "pending" and messages[0]["job_id"] == job_id
    assert messages[-1]["status"] == "completed" and messages[-1]["progress"] == 100
    assert [m["stage"] for m in messages[1:]] == STAGES
    progress = [m["progress"] for m in messages]
    assert progress == sorted(progress)


def test_websocket_after_the_end_gets_the_final_state_and_a_clean_close(stack: Stack) -> None:
    with stack.client() as client:
        job_id = submit(client, jpeg()).json()["job_id"]
        wait_done(client, job_id)
    messages, code = ws_messages(ws_url(stack.base_url, job_id), additional_headers={"X-API-Key": API_KEY})
    assert [m["status"] for m in messages] == ["completed"]
    assert code == 1000


def test_browser_style_websocket_auth_with_a_token_in_the_subprotocol(stack: Stack) -> None:
    with stack.client() as client:
        token = client.post("/auth/token").json()["access_token"]
        job_id = submit(client, jpeg()).json()["job_id"]
        wait_done(client, job_id)
    url = ws_url(stack.base_url, job_id)
    with connect(url, subprotocols=["aic.v1", f"aic.auth.{token}"], open_timeout=30) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "aic.v1", "the server selects aic.v1 and never echoes the credential"
        assert json.loads(ws.recv(timeout=30))["status"] == "completed"


def test_websocket_without_credentials_is_refused(stack: Stack) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(stack.base_url, str(uuid.uuid4())), open_timeout=30)
    assert refused.value.response.status_code in (401, 403)


def test_websocket_for_another_tenants_job_closes_like_an_unknown_one(stack: Stack) -> None:
    with stack.client() as client:
        job_id = submit(client, jpeg()).json()["job_id"]
    theirs = ws_messages(ws_url(stack.base_url, job_id), additional_headers={"X-API-Key": OTHER_TENANT_KEY})
    unknown = ws_messages(ws_url(stack.base_url, str(uuid.uuid4())), additional_headers={"X-API-Key": OTHER_TENANT_KEY})
    for messages, code in (theirs, unknown):
        assert code == 4404
        assert messages[0]["error"] == "JOB_NOT_FOUND"


def test_sse_streams_every_change_then_ends(quiet_stack: Stack) -> None:
    stack = quiet_stack
    with stack.client() as client, contextlib.ExitStack() as open_stream:
        job_id = submit(client, jpeg(skdata.coffee())).json()["job_id"]  # pending: no dispatcher yet
        response = open_stream.enter_context(client.stream("GET", f"/status/{job_id}/events"))
        events = sse_events(response)
        first = next(events)
        with stack.own_dispatcher():
            rest = list(events)  # a dispatcher started while the stream is open: every change, then the end
    assert response.headers["content-type"].startswith("text/event-stream")
    assert first[0] == "status" and first[1]["status"] == "pending"
    assert [e for e, _ in rest] == ["status"] * len(rest)
    assert [d["stage"] for _, d in rest] == STAGES
    assert rest[-1][1]["status"] == "completed"


def test_sse_after_the_end_and_for_unknown_jobs(stack: Stack) -> None:
    with stack.client() as client:
        job_id = submit(client, jpeg()).json()["job_id"]
        wait_done(client, job_id)
        with client.stream("GET", f"/status/{job_id}/events") as response:
            events = list(sse_events(response))
        missing = client.get(f"/status/{uuid.uuid4()}/events")
    assert [d["status"] for _, d in events] == ["completed"]
    assert missing.status_code == 404 and missing.json()["error"] == "JOB_NOT_FOUND"
    with httpx.Client(base_url=stack.base_url) as anonymous:
        assert anonymous.get(f"/status/{job_id}/events").status_code == 401
