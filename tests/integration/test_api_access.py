"""Tokens, roles, admin routes and /models against the real stack."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
import msgspec
import pytest
from aic.core.settings import RedisSettings
from aic.modelrepo import layout
from aic.store import keys
from aic.store.connection import connect
from aic.store.routes import RouteStore
from conftest import ADMIN_KEY, API_KEY, Stack
from helpers import jpeg, submit, wait_done

pytestmark = pytest.mark.integration


def bearer(stack: Stack, token: str) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def test_key_exchanged_for_a_jwt_that_works_as_bearer(stack: Stack) -> None:
    with stack.client() as client:
        issued = client.post("/auth/token")
        job_id = submit(client, jpeg()).json()["job_id"]
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 30 * 60
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "acme" and API_KEY not in body["access_token"]
    with bearer(stack, body["access_token"]) as client:
        assert client.get(f"/status/{job_id}").status_code == 200
        again = client.post("/auth/token")
    assert again.status_code == 403, "a token cannot be refreshed into another token"


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": int(time.time()) - 10},  # expired
        {"kid": "0000000000000000"},  # a key that does not exist
        {"aud": "someone-else"},
    ],
)
def test_bad_tokens_are_401(stack: Stack, claims: dict[str, object]) -> None:
    with stack.client() as client:
        good = jwt.decode(client.post("/auth/token").json()["access_token"], options={"verify_signature": False})
    forged = jwt.encode({**good, **claims}, stack.env["SECRET_KEY"], algorithm="HS256")
    wrong_secret = jwt.encode(good, "not-the-secret-0123456789abcdef0123456789", algorithm="HS256")
    for token in (forged, wrong_secret):
        with bearer(stack, token) as client:
            response = client.get(f"/status/{uuid.uuid4()}")
        assert response.status_code == 401
        assert response.json()["error"] == "UNAUTHORIZED"


def test_raw_key_as_bearer_still_works(stack: Stack) -> None:
    with bearer(stack, API_KEY) as client:
        assert client.get(f"/status/{uuid.uuid4()}").status_code == 404


def test_models_lists_aliases(stack: Stack) -> None:
    with stack.client() as client:
        body = client.get("/models").json()
    aliases = [a for m in body["models"] for a in m["aliases"]]
    assert "latest" in aliases and body["default"] == "latest"


def test_admin_routes_need_the_admin_role(stack: Stack) -> None:
    with stack.client() as client:
        for path in ("/admin/queues", "/admin/dead-letters"):
            response = client.get(path)
            assert response.status_code == 403
            assert response.json()["error"] == "FORBIDDEN"


def test_admin_sees_queue_depth_and_age(quiet_stack: Stack) -> None:
    stack = quiet_stack  # the job stays queued: no dispatcher reads this stack's queue
    with stack.client() as client, stack.client(key=ADMIN_KEY) as admin:
        job_id = submit(client, jpeg(), priority="low").json()["job_id"]
        body = admin.get("/admin/queues").json()
        client.delete(f"/jobs/{job_id}")
    low = next(q for q in body["queues"] if q["priority"] == "low")
    assert low["length"] >= 1 and low["oldest_age_s"] is not None and low["oldest_age_s"] >= 0
    assert [q["priority"] for q in body["queues"]] == ["urgent", "high", "normal", "low"]
    assert set(body) == {"queues", "in_flight", "dead_letters"}


def with_routes(stack: Stack, change: Callable[[RouteStore], Awaitable[None]]) -> None:
    """Change the stack's published routes through the store's one publisher."""

    async def run() -> None:
        redis = connect(RedisSettings(redis_url=stack.redis.url))
        try:
            await change(RouteStore(redis))
        finally:
            await redis.aclose()

    asyncio.run(run())


@contextmanager
def ghost_alias(stack: Stack) -> Iterator[str]:
    """An alias routed to a model Triton does not have: its jobs fail with MODEL_ERROR and are dead-lettered
    by the real dispatcher, their upload kept for a retry."""
    alias = f"ghost-{uuid.uuid4().hex[:8]}"
    real = layout.load(Path(stack.env["MODEL_REPOSITORY"]) / "efficientnet-lite0")
    ghost = msgspec.structs.replace(real, name=alias, aliases=(alias,))
    with_routes(stack, lambda routes: routes.publish(ghost))
    try:
        yield alias
    finally:
        with_routes(stack, lambda routes: routes.withdraw(alias))
        with_routes(stack, lambda routes: routes.publish(real))  # the real model's aliases, as in the repository


def dead_lettered(stack: Stack, client: httpx.Client, alias: str) -> str:
    job_id = submit(client, jpeg(), model_version=alias).json()["job_id"]
    final = wait_done(client, job_id)
    assert (final["status"], final["error_code"]) == ("failed", "MODEL_ERROR"), final
    return str(job_id)


def test_admin_lists_and_retries_a_dead_letter(any_stack: Stack) -> None:
    stack = any_stack
    real = layout.load(Path(stack.env["MODEL_REPOSITORY"]) / "efficientnet-lite0")
    with stack.client() as client, stack.client(key=ADMIN_KEY) as admin, ghost_alias(stack) as alias:
        job_id = dead_lettered(stack, client, alias)
        assert stack.upload_kept(job_id) == (stack.s3 is not None), "a dead letter keeps its upload for a retry"
        listed = admin.get("/admin/dead-letters").json()
        # the operator fixes the route (the alias now names a model Triton serves), then retries
        fixed = msgspec.structs.replace(real, aliases=(*real.aliases, alias))
        with_routes(stack, lambda routes: routes.publish(fixed))
        retried = admin.post(f"/admin/jobs/{job_id}/retry")
        assert any(d["job_id"] == job_id for d in listed["dead_letters"])
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "pending"
        assert wait_done(client, job_id)["status"] == "completed"
        stack.wait_upload_deleted(job_id)
        remaining = admin.get("/admin/dead-letters").json()["dead_letters"]
        assert all(d["job_id"] != job_id for d in remaining)
        assert admin.post(f"/admin/jobs/{job_id}/retry").status_code == 409


def test_retry_without_the_upload_is_a_clear_409(stack: Stack) -> None:
    with stack.client() as client, stack.client(key=ADMIN_KEY) as admin, ghost_alias(stack) as alias:
        job_id = dead_lettered(stack, client, alias)
        stack.redis_client().delete(keys.LEGACY.job_image(job_id))  # the kept upload expired meanwhile
        response = admin.post(f"/admin/jobs/{job_id}/retry")
        assert client.post(f"/admin/jobs/{job_id}/retry").status_code == 403
        assert admin.post(f"/admin/jobs/{uuid.uuid4()}/retry").status_code == 404
    assert response.status_code == 409
    assert "no longer stored" in response.json()["detail"]
