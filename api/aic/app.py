"""The Litestar application: wiring of settings, Redis, authentication and the one error renderer."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.middleware import ASGIMiddleware, DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, ControllerRouterHandler, Message, Receive, Scope, Send
from redis.asyncio import Redis

from aic import settings as settings_mod
from aic.admin import AdminController
from aic.auth import ApiKeyMiddleware, KeyRing
from aic.controllers import AccountController, JobController, health, livez, readyz
from aic.enums import ErrorCode
from aic.errors import AppError, RequestValidationError
from aic.jobs import JobStore
from aic.live import EventHub
from aic.ratelimit import RateLimiter, RateLimitMiddleware
from aic.redis_conn import connect
from aic.schemas import ErrorResponse
from aic.settings import ApiSettings, QueueSettings, RedisSettings
from aic.timeutil import now_iso
from aic.tokens import signing_secret
from aic.webhook_routes import WebhookController

log = logging.getLogger("aic.api")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MULTIPART_OVERHEAD = 64 * 1024  # form fields and part headers around the file


class RequestIdMiddleware(ASGIMiddleware):
    """Takes a well-formed ``X-Request-ID`` or makes one; echoes it on the response."""

    scopes = ("http",)  # type: ignore[assignment]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        await next_app(scope, receive, send_with_id)


def _error(request: Request[Any, Any, State], status: int, code: str, detail: str, **extra: Any) -> Response[Any]:
    request_id = request.scope.get("state", {}).get("request_id")
    body = ErrorResponse(
        error=code, detail=detail, timestamp=now_iso(), request_id=request_id, errors=extra.get("errors")
    )
    # error responses raised inside middleware bypass RequestIdMiddleware's send, so set the header here
    headers = {**(extra.get("headers") or {}), "x-request-id": request_id or ""}
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json", headers=headers)


def handle_app_error(request: Request[Any, Any, State], exc: AppError) -> Response[Any]:
    errors = exc.errors if isinstance(exc, RequestValidationError) else None
    if exc.status_code >= 500:
        log.error("request failed: %s", exc.detail)
    return _error(request, exc.status_code, exc.error_code, exc.detail, errors=errors, headers=exc.headers)


_HTTP_CODES = {
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.JOB_NOT_FOUND,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.SERVICE_UNAVAILABLE,
}


def handle_http_error(request: Request[Any, Any, State], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, RequestEntityTooLarge):
        limit = request.app.state.api_settings.max_file_size
        return _error(request, 400, ErrorCode.INVALID_IMAGE, f"File size exceeds limit of {limit} bytes")
    if isinstance(exc, ValidationException):
        errors = exc.extra if isinstance(exc.extra, list) else [{"message": str(exc.extra)}]
        return _error(request, 422, ErrorCode.VALIDATION_ERROR, "Request validation failed", errors=errors)
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.HTTP_ERROR)
    return _error(request, exc.status_code, code, exc.detail, headers=exc.headers)


def handle_unexpected(request: Request[Any, Any, State], exc: Exception) -> Response[Any]:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error(request, 500, ErrorCode.INTERNAL_ERROR, "An internal server error occurred")


def create_app(api_settings: ApiSettings | None = None, redis_settings: RedisSettings | None = None) -> Litestar:
    api_settings = api_settings or settings_mod.load(ApiSettings)
    redis_settings = redis_settings or settings_mod.load(RedisSettings)
    key_ring = KeyRing.parse(api_settings.api_keys)
    if not key_ring:
        log.warning("API_KEYS is empty: every authenticated route will answer 401")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        redis = connect(redis_settings)
        app.state.redis = redis
        app.state.job_store = JobStore(redis, settings_mod.load(QueueSettings))
        app.state.rate_limiter = RateLimiter(redis, api_settings.rate_limit_per_minute, api_settings.rate_limit_burst)
        hub = app.state.hub = EventHub(redis)
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()
            await redis.aclose()

    def provide_redis(state: State) -> Redis:
        return state.redis  # type: ignore[no-any-return]

    def provide_job_store(state: State) -> JobStore:
        return state.job_store  # type: ignore[no-any-return]

    def provide_hub(state: State) -> EventHub:
        return state.hub  # type: ignore[no-any-return]

    def provide_api_settings() -> ApiSettings:
        return api_settings

    prefix = api_settings.api_prefix
    open_paths = [f"^{prefix}/health$", "^/schema", "^/livez$", "^/readyz$"]
    state = {
        "key_ring": key_ring,
        "api_key_header": api_settings.api_key_header,
        "api_settings": api_settings,
        "secret_key": signing_secret(api_settings.secret_key),
    }
    api: list[ControllerRouterHandler] = [JobController, AccountController, AdminController, health, WebhookController]
    return Litestar(
        route_handlers=[Router(path=prefix, route_handlers=api), livez, readyz],
        lifespan=[lifespan],
        state=State(state),
        dependencies={
            "redis": Provide(provide_redis, sync_to_thread=False),
            "job_store": Provide(provide_job_store, sync_to_thread=False),
            "hub": Provide(provide_hub, sync_to_thread=False),
            "api_settings": Provide(provide_api_settings, sync_to_thread=False),
        },
        middleware=[
            RequestIdMiddleware(),
            DefineMiddleware(ApiKeyMiddleware, exclude=open_paths),
            RateLimitMiddleware(exclude=tuple(open_paths)),
        ],
        exception_handlers={
            AppError: handle_app_error,
            HTTPException: handle_http_error,
            Exception: handle_unexpected,
        },
        # uploads are bounded per part while they stream (aic.uploads); this bounds a whole batch
        request_max_body_size=api_settings.batch_max_files * api_settings.max_file_size + MULTIPART_OVERHEAD,
        cors_config=CORSConfig(
            allow_origins=list(api_settings.allowed_hosts),
            allow_headers=[api_settings.api_key_header, "Authorization", "Idempotency-Key", "Prefer", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "RateLimit-Policy",
                "Preference-Applied",
                "Idempotent-Replayed",
            ],
        ),
        openapi_config=OpenAPIConfig(
            title=api_settings.app_name,
            version=api_settings.version,
            components=Components(
                security_schemes={
                    "ApiKey": SecurityScheme(
                        type="apiKey", name=api_settings.api_key_header, security_scheme_in="header"
                    ),
                    "Bearer": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        bearer_format="JWT",
                        description="A token from POST /auth/token, or the API key itself",
                    ),
                }
            ),
        ),
        debug=False,
    )
