"""Middleware around every route: the request id, and WebSocket errors answered like HTTP ones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from aic.core import logs
from aic.http import errors


class RequestIdMiddleware(ASGIMiddleware):
    """Takes a well-formed ``X-Request-ID`` or makes one; echoes it on the response (and the WebSocket
    handshake), and binds it (with the tenant, once authenticated) to every log line of the request."""

    scopes = ("http", "websocket")  # type: ignore[assignment]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        request_id = errors.request_id(scope)
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept", "websocket.http.response.start"):
                headers = list(message.get("headers") or [])
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append(header)
                message["headers"] = headers
            await send(message)

        with logs.bound(request_id=request_id):  # on exit also undoes the tenant ApiKeyMiddleware binds
            await next_app(scope, receive, send_with_id)


class WebSocketErrorMiddleware(ASGIMiddleware):
    """The same ErrorResponse for a WebSocket as for HTTP. Before the handshake is accepted (authentication, rate
    limits) it is the HTTP answer to the upgrade: status code and JSON body, where the server offers the
    ``websocket.http.response`` extension, as uvicorn does. After it, a text message followed by a close with
    code 4000 + status: the route catches its own errors with ``websocket_errors`` (Litestar turns an error
    escaping a WebSocket route into a bare close before middleware could see it)."""

    scopes = ("websocket",)  # type: ignore[assignment]

    def __init__(self, max_file_size: int) -> None:
        self.max_file_size = max_file_size

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        accepted = False

        async def tracking_send(message: Message) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept":
                accepted = True
            await send(message)

        try:
            await next_app(scope, receive, tracking_send)
        except WebSocketDisconnect:
            return  # the client went away: nobody is left to tell
        except Exception as exc:
            found = errors.failure(exc, scope, self.max_file_size)
            await _answer(scope, send, found, accepted)


async def _answer(scope: Scope, send: Send, found: errors.Failure, accepted: bool) -> None:
    body = found.json()
    close: Any = {"type": "websocket.close", "code": 4000 + found.status, "reason": found.body.detail[:120]}
    if accepted:
        text: Any = {"type": "websocket.send", "text": body.decode()}
        await send(text)
        await send(close)
    elif "websocket.http.response" in (scope.get("extensions") or {}):
        headers = [(k.lower().encode(), v.encode()) for k, v in found.headers.items()]
        headers.append((b"content-type", b"application/json"))
        start: Any = {"type": "websocket.http.response.start", "status": found.status, "headers": headers}
        await send(start)
        response_body: Any = {"type": "websocket.http.response.body", "body": body}
        await send(response_body)
    else:
        await send(close)


@asynccontextmanager
async def websocket_errors(socket: WebSocket[Any, Any, Any]) -> AsyncIterator[None]:
    """Inside an accepted WebSocket: an error becomes the ErrorResponse message and a 4000 + status close."""
    try:
        yield
    except WebSocketDisconnect:
        return  # the client went away: nobody is left to tell
    except Exception as exc:
        found = errors.failure(exc, socket.scope, socket.app.state.api_settings.max_file_size)
        await _answer(socket.scope, socket.send, found, accepted=True)
