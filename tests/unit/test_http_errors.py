"""The one error mapper and the OpenAPI document, from the app itself: pure, no server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aic.core.errors import (
    JobEndedError,
    JobNotFoundError,
    RateLimitedError,
    RequestValidationError,
    StoreUnavailable,
)
from aic.core.settings import ApiSettings, RedisSettings
from aic.http.app import create_app
from aic.http.errors import failure
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.routes import HTTPRoute, WebSocketRoute

MAX_FILE_SIZE = 10 * 1024 * 1024


def scope(**extra: Any) -> dict[str, Any]:
    return {"type": "http", "path": "/api/v1/nope", "headers": [], **extra}


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (NotFoundException(), 404, "HTTP_ERROR"),
        (MethodNotAllowedException(), 405, "HTTP_ERROR"),
        (HTTPException(status_code=415, detail="Unsupported Media Type"), 415, "HTTP_ERROR"),
        (RequestEntityTooLarge(), 400, "INVALID_IMAGE"),
        (JobNotFoundError("j1"), 404, "JOB_NOT_FOUND"),
        (JobEndedError("Job already completed", status="completed"), 409, "CONFLICT"),
        (RateLimitedError("slow down", headers={"Retry-After": "3"}), 429, "RATE_LIMITED"),
        (RequestValidationError("Request validation failed", [{"field": "priority"}]), 422, "VALIDATION_ERROR"),
        (StoreUnavailable(), 503, "SERVICE_UNAVAILABLE"),
        (RuntimeError("boom"), 500, "INTERNAL_ERROR"),
    ],
)
def test_every_error_is_the_error_response_with_a_request_id(exc: Exception, status: int, code: str) -> None:
    found = failure(exc, scope(), MAX_FILE_SIZE)  # type: ignore[arg-type]
    body = json.loads(found.json())
    assert found.status == status
    assert body["error"] == code
    assert set(body) >= {"error", "detail", "timestamp", "request_id"}
    assert found.headers["x-request-id"] == body["request_id"] and body["request_id"]


def test_an_unknown_path_is_not_a_missing_job() -> None:
    body = json.loads(failure(NotFoundException(), scope(), MAX_FILE_SIZE).json())  # type: ignore[arg-type]
    assert body["error"] != "JOB_NOT_FOUND" and "/api/v1/nope" in body["detail"]


def test_the_clients_request_id_is_kept_and_a_bad_one_replaced() -> None:
    mine = failure(NotFoundException(), scope(headers=[(b"x-request-id", b"abc-123")]), 1)  # type: ignore[arg-type]
    forged = failure(NotFoundException(), scope(headers=[(b"x-request-id", b"<script>")]), 1)  # type: ignore[arg-type]
    assert mine.body.request_id == "abc-123"
    assert forged.body.request_id and forged.body.request_id != "<script>"


def test_headers_of_an_error_are_kept() -> None:
    found = failure(RateLimitedError("slow", headers={"Retry-After": "3"}), scope(), 1)  # type: ignore[arg-type]
    assert found.headers["Retry-After"] == "3"


# -- the OpenAPI document, derived from the app's own routes -----------------------------------------------------

OPEN = {"/api/v1/health", "/livez", "/readyz"}


def app_and_schema(**settings: Any) -> tuple[Any, dict[str, Any]]:
    app = create_app(
        ApiSettings(api_keys="acme:" + "k" * 20, **settings), RedisSettings(redis_url="redis://127.0.0.1:1")
    )
    return app, app.openapi_schema.to_schema()


def documented(route: HTTPRoute) -> bool:
    return any(handler.resolve_include_in_schema() for handler in route.route_handlers)  # OPTIONS never is


def http_routes(app: Any) -> dict[str, set[str]]:
    """Every HTTP route of the API and its methods (the schema's own routes and the web page's left out)."""
    found: dict[str, set[str]] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute) and documented(route):
            path = route.path.replace(":str}", "}")
            found.setdefault(path, set()).update(m.lower() for m in route.methods if m not in ("OPTIONS", "HEAD"))
    return found


def test_every_route_of_the_app_is_documented_with_declared_security_and_error_responses() -> None:
    app, doc = app_and_schema()
    routes = http_routes(app)
    assert "/api/v1/jobs/{job_id}/webhooks" in routes and "/api/v1/webhooks/secret/rotate" in routes
    declared = set(doc["components"]["securitySchemes"])
    for path, methods in routes.items():
        assert methods <= set(doc["paths"][path]), path
        for method in methods:
            operation = doc["paths"][path][method]
            if path in OPEN:
                continue
            schemes = {name for requirement in operation["security"] for name in requirement}
            assert schemes == {"ApiKey", "Bearer"} and schemes <= declared, (path, method, schemes)
            for code in ("401", "429"):
                assert "ErrorResponse" in json.dumps(operation["responses"][code]), (path, method, code)


def test_only_the_schema_the_web_page_and_the_metrics_are_left_out_of_the_schema() -> None:
    app, _ = app_and_schema()
    hidden = {route.path for route in app.routes if isinstance(route, HTTPRoute) and not documented(route)}
    assert {"/", "/static/{file_path:path}"} <= hidden
    allowed = ("/", "/static/{file_path:path}", "/metrics")
    assert all(path in allowed or path.startswith("/schema") for path in hidden), hidden
    assert "/metrics" in hidden


def test_the_app_has_exactly_one_websocket_route_and_it_is_authenticated() -> None:
    app, _ = app_and_schema()
    sockets = [route.path for route in app.routes if isinstance(route, WebSocketRoute)]
    assert sockets == ["/api/v1/status/{job_id:str}/ws"]


@pytest.mark.parametrize("batch_max_files", [3, 10, 25])
def test_the_batch_form_allows_batch_max_files(batch_max_files: int) -> None:
    _, doc = app_and_schema(batch_max_files=batch_max_files)
    body = doc["paths"]["/api/v1/classify/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["properties"]["files"]["maxItems"] == batch_max_files
    single = doc["paths"]["/api/v1/classify"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert single["schema"]["required"] == ["file"]
