"""The one error mapper: every failure of a request or a WebSocket becomes the seed's ErrorResponse.

Domain errors (``aic.core.errors``) carry their status and code; the framework's own refusals (an unknown
path, a method the path lacks, a body over the limit) and a Redis outage are mapped here, so a client always
gets ``{"error", "detail", "timestamp", "request_id"}`` and never a framework's default body.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import Scope

from aic.core.enums import ErrorCode
from aic.core.errors import AppError, RequestValidationError
from aic.core.schemas import ErrorResponse
from aic.core.timeutil import now_iso

log = logging.getLogger("aic.api")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_HTTP_CODES = {
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    422: ErrorCode.VALIDATION_ERROR,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.SERVICE_UNAVAILABLE,
}
"""Status codes of framework errors that have a code of their own; any other is the seed's HTTP_ERROR."""


def request_id(scope: Scope) -> str:
    """The request's id: a well-formed ``X-Request-ID`` sent by the client, else a new one; the same for every
    caller within one request (middleware, error mapper, WebSocket)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    found = state.get("request_id")
    if found is None:
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        found = state["request_id"] = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    return str(found)


@dataclass(frozen=True)
class Failure:
    """What an exception becomes on the wire."""

    status: int
    body: ErrorResponse
    headers: dict[str, str]

    def json(self) -> bytes:
        return msgspec.json.encode(self.body)


def failure(exc: BaseException, scope: Scope, max_file_size: int) -> Failure:
    """The status, ErrorResponse and headers that ``exc`` answers with."""
    rid = request_id(scope)
    errors: list[dict[str, Any]] | None = None
    headers: dict[str, str] = {}
    if isinstance(exc, AppError):
        status, code, detail, headers = exc.status_code, str(exc.error_code), exc.detail, exc.headers
        errors = exc.errors if isinstance(exc, RequestValidationError) else None
        if status >= 500:
            log.error("request failed: %s", detail)
    elif isinstance(exc, RequestEntityTooLarge):
        # the whole body passed its bound: it can only be files over MAX_FILE_SIZE
        status, code, detail = 400, ErrorCode.INVALID_IMAGE, f"File size exceeds limit of {max_file_size} bytes"
    elif isinstance(exc, ValidationException):
        status, code, detail = 422, ErrorCode.VALIDATION_ERROR, "Request validation failed"
        errors = exc.extra if isinstance(exc.extra, list) else [{"message": str(exc.extra)}]
    elif isinstance(exc, NotFoundException):
        path = str(scope.get("path", ""))[:200]
        status, code, detail = 404, ErrorCode.HTTP_ERROR, f"Not Found: no route for {path}"
    elif isinstance(exc, HTTPException):
        status, detail, headers = exc.status_code, exc.detail, dict(exc.headers or {})
        code = _HTTP_CODES.get(status, ErrorCode.HTTP_ERROR)
    else:
        log.error("unexpected error on %s", scope.get("path", "?"), exc_info=exc)
        status, code, detail = 500, ErrorCode.INTERNAL_ERROR, "An internal server error occurred"
    body = ErrorResponse(error=str(code), detail=detail, timestamp=now_iso(), request_id=rid, errors=errors)
    # error responses raised inside middleware bypass RequestIdMiddleware's send, so the header is set here
    return Failure(status, body, {**headers, "x-request-id": rid})


def handle(request: Request[Any, Any, State], exc: Exception) -> Response[Any]:
    """Litestar's exception handler for every exception of an HTTP request."""
    found = failure(exc, request.scope, request.app.state.api_settings.max_file_size)
    return Response(found.json(), status_code=found.status, media_type="application/json", headers=found.headers)
