"""Helpers of the API tests: real photos, submits, waiting on status, reading SSE and WebSocket streams."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
from conftest import Stack
from PIL import Image
from skimage import data as skdata


def jpeg(pixels: np.ndarray | None = None, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(skdata.chelsea() if pixels is None else pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def submit(client: httpx.Client, content: bytes, name: str = "photo.jpg", **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", None)
    return client.post("/classify", files={"file": (name, content, "image/jpeg")}, data=kwargs, headers=headers)


def wait_done(client: httpx.Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/status/{job_id}").json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise TimeoutError(job_id)


@contextlib.contextmanager
def frozen_dispatcher(stack: Stack) -> Iterator[None]:
    """Jobs stay pending while the only dispatcher is stopped (SIGSTOP), and move on once it resumes."""
    stack.dispatcher.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        stack.dispatcher.signal(signal.SIGCONT)


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a text/event-stream response, as a real SSE client reads them."""
    event, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def ws_url(stack: Stack, job_id: str) -> str:
    return f"{stack.base_url.replace('http://', 'ws://')}/status/{job_id}/ws"
