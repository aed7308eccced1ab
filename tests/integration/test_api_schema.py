"""The OpenAPI document, and a bounded schemathesis run against the real API with a valid key."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from aic.core.settings import ApiSettings, RedisSettings
from aic.http.app import create_app
from conftest import ADMIN_KEY, Stack
from litestar.routes import HTTPRoute, WebSocketRoute
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.integration

OPEN = {"/api/v1/health", "/livez", "/readyz"}


def app_routes() -> tuple[dict[str, set[str]], list[str]]:
    """The API's HTTP routes (path -> methods; the schema's own and the web page's, which the schema leaves out,
    are test_page.py's) and WebSocket paths."""
    app = create_app(ApiSettings(api_keys="acme:" + "k" * 20), RedisSettings(redis_url="redis://127.0.0.1:1"))
    http: dict[str, set[str]] = {}
    sockets: list[str] = []
    for route in app.routes:
        path = route.path.replace(":str}", "}")
        if isinstance(route, WebSocketRoute):
            sockets.append(path)
        elif isinstance(route, HTTPRoute) and any(h.resolve_include_in_schema() for h in route.route_handlers):
            http.setdefault(path, set()).update(m.lower() for m in route.methods if m not in ("OPTIONS", "HEAD"))
    return http, sockets


def schema(stack: Stack) -> dict[str, object]:
    root = stack.base_url.removesuffix("/api/v1")
    response = httpx.get(f"{root}/schema/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_every_route_is_documented_with_security_and_error_responses(stack: Stack) -> None:
    doc = schema(stack)
    paths: dict[str, dict[str, dict[str, object]]] = doc["paths"]  # type: ignore[assignment]
    routes, _ = app_routes()
    assert len(routes) >= 15
    for path, methods in routes.items():
        assert methods <= set(paths[path]), path
        for method in methods:
            operation = paths[path][method]
            if path in OPEN:
                continue
            assert {"ApiKey": []} in operation["security"] and {"Bearer": []} in operation["security"]  # type: ignore[operator]
            responses: dict[str, dict[str, object]] = operation["responses"]  # type: ignore[assignment]
            for code in ("401", "429"):
                ref = json.dumps(responses[code])
                assert "ErrorResponse" in ref, (path, code)
    schemes = doc["components"]["securitySchemes"]  # type: ignore[index]
    assert set(schemes) >= {"ApiKey", "Bearer"}
    body = paths["/api/v1/classify"]["post"]["requestBody"]
    assert "multipart/form-data" in body["content"]  # type: ignore[index]


def test_every_route_but_health_and_probes_refuses_a_caller_without_credentials(stack: Stack) -> None:
    root = stack.base_url.removesuffix("/api/v1")
    routes, sockets = app_routes()
    job_id = str(uuid.uuid4())
    for path, methods in routes.items():
        for method in methods:
            response = httpx.request(method.upper(), root + path.replace("{job_id}", job_id))
            if path in OPEN:
                assert response.status_code == 200, (method, path, response.text)
            else:
                assert response.status_code == 401, (method, path, response.text)
                assert response.json()["error"] == "UNAUTHORIZED"
    assert sockets
    for path in sockets:
        with pytest.raises(InvalidStatus) as refused:
            connect(root.replace("http://", "ws://") + path.replace("{job_id}", job_id), open_timeout=30)
        assert refused.value.response.status_code == 401, path


def test_schemathesis_finds_no_server_error_and_no_schema_violation(stack: Stack, tmp_path: Path) -> None:
    root = stack.base_url.removesuffix("/api/v1")
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "run",
        f"{root}/schema/openapi.json",
        "--url",
        root,
        "-H",
        f"X-API-Key: {ADMIN_KEY}",
        "--checks",
        "not_a_server_error,response_schema_conformance,content_type_conformance",
        "--max-examples",
        "15",
        "--phases",
        "examples,coverage,fuzzing",
        "--generation-deterministic",
        "--request-timeout",
        "30",
        "--workers",
        "1",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
