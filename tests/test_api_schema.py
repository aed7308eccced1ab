"""The OpenAPI document, and a bounded schemathesis run against the real API with a valid key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import ADMIN_KEY, Stack

pytestmark = pytest.mark.integration

ROUTES = {
    "/api/v1/classify": {"post"},
    "/api/v1/classify/batch": {"post"},
    "/api/v1/status/{job_id}": {"get"},
    "/api/v1/status/{job_id}/events": {"get"},
    "/api/v1/result/{job_id}": {"get"},
    "/api/v1/jobs/{job_id}": {"delete"},
    "/api/v1/auth/token": {"post"},
    "/api/v1/models": {"get"},
    "/api/v1/admin/queues": {"get"},
    "/api/v1/admin/dead-letters": {"get"},
    "/api/v1/admin/jobs/{job_id}/retry": {"post"},
    "/api/v1/health": {"get"},
    "/livez": {"get"},
    "/readyz": {"get"},
}
OPEN = {"/api/v1/health", "/livez", "/readyz"}


def schema(stack: Stack) -> dict[str, object]:
    root = stack.base_url.removesuffix("/api/v1")
    response = httpx.get(f"{root}/schema/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def test_every_route_is_documented_with_security_and_error_responses(stack: Stack) -> None:
    doc = schema(stack)
    paths: dict[str, dict[str, dict[str, object]]] = doc["paths"]  # type: ignore[assignment]
    for path, methods in ROUTES.items():
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
