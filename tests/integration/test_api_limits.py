"""Rate limits shared by API replicas, probes and CORS, on API processes of their own (real Redis)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from aic.local.ports import free_port
from conftest import ADMIN_KEY, API_KEY, OTHER_TENANT_KEY, Stack
from helpers import jpeg

pytestmark = pytest.mark.integration

BURST = 3
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def limited(stack: Stack) -> Iterator[tuple[str, str]]:
    """Two API replicas with a low limit (burst 3, 1 per minute) over the stack's Redis."""
    limits = {"RATE_LIMIT_PER_MINUTE": "1", "RATE_LIMIT_BURST": str(BURST), "ALLOWED_HOSTS": ORIGIN}
    with stack.extra_api(**limits) as (_, root_a), stack.extra_api(**limits) as (_, root_b):
        yield root_a, root_b


def client(root: str, key: str, source_ip: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source_ip)
    return httpx.Client(base_url=f"{root}/api/v1", headers={"X-API-Key": key}, transport=transport, timeout=30)


def test_key_limit_holds_across_replicas_and_answers_429(limited: tuple[str, str]) -> None:
    root_a, root_b = limited
    with client(root_a, API_KEY, "127.0.0.2") as a, client(root_b, API_KEY, "127.0.0.3") as b:
        answers = [a.get("/models"), b.get("/models"), a.get("/models")]
        refused = b.get("/models")
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert [r.headers["ratelimit-remaining"] for r in answers] == ["2", "1", "0"]
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "RATE_LIMITED" and set(body) >= {"detail", "timestamp", "request_id"}
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == str(BURST)
    assert refused.headers["ratelimit-remaining"] == "0"


def test_ip_limit_applies_whatever_the_key(limited: tuple[str, str]) -> None:
    root_a, _ = limited
    with client(root_a, OTHER_TENANT_KEY, "127.0.0.4") as globex, client(root_a, ADMIN_KEY, "127.0.0.4") as ops:
        statuses = [globex.get("/models").status_code for _ in range(BURST)]
        other_key_same_ip = ops.get("/models")
    assert statuses == [200] * BURST
    assert other_key_same_ip.status_code == 429


def test_probes_and_health_are_exempt(limited: tuple[str, str]) -> None:
    root_a, _ = limited
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.4")) as anonymous:
        codes = {anonymous.get(f"{root_a}{path}").status_code for path in ("/livez", "/readyz", "/api/v1/health") * 3}
    assert codes == {200}


def test_cors_allows_the_configured_origin_only(limited: tuple[str, str]) -> None:
    root_a, _ = limited
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key,idempotency-key"}
    allowed = httpx.options(f"{root_a}/api/v1/classify", headers={"Origin": ORIGIN, **preflight})
    foreign = httpx.options(f"{root_a}/api/v1/classify", headers={"Origin": "https://evil.example", **preflight})
    assert allowed.status_code == 204 or allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-origin" not in foreign.headers or foreign.status_code >= 400


def test_readyz_fails_without_redis_while_livez_holds(stack: Stack) -> None:
    with stack.extra_api(REDIS_URL=f"redis://127.0.0.1:{free_port()}") as (_, root):
        live = httpx.get(f"{root}/livez")
        ready = httpx.get(f"{root}/readyz", timeout=30)
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["error"] == "SERVICE_UNAVAILABLE"


def test_readyz_with_redis(stack: Stack) -> None:
    root = stack.base_url.removesuffix("/api/v1")
    assert httpx.get(f"{root}/readyz").json() == {"status": "ready"}
    assert httpx.get(f"{root}/livez").json() == {"status": "ok"}


def test_a_full_queue_answers_503_with_retry_after(stack: Stack) -> None:
    with (
        stack.extra_api(QUEUE_MAX_DEPTH="0", QUEUE_FULL_RETRY_AFTER_S="7") as (_, root),
        httpx.Client(base_url=f"{root}/api/v1", headers={"X-API-Key": API_KEY}, timeout=30) as client,
    ):
        response = client.post("/classify", files={"file": ("a.jpg", jpeg(), "image/jpeg")})
    assert response.status_code == 503
    assert response.json()["error"] == "SERVICE_UNAVAILABLE"
    assert response.headers["retry-after"] == "7"


def test_a_route_that_needs_redis_answers_503_while_it_is_away(stack: Stack) -> None:
    with (
        stack.extra_api(REDIS_URL=f"redis://127.0.0.1:{free_port()}") as (_, root),
        httpx.Client(base_url=f"{root}/api/v1", headers={"X-API-Key": API_KEY}, timeout=30) as client,
    ):
        response = client.get("/status/0b6ec30e-1cd5-4f6a-9c0e-9d1b1d7e5f10")
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "SERVICE_UNAVAILABLE" and response.headers["retry-after"]
    assert response.json()["request_id"] == response.headers["x-request-id"]
