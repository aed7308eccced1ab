"""Tokens, roles, admin routes and /models against the real stack."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import jwt
import pytest
from aic import keys
from api_helpers import frozen_dispatcher, jpeg, submit, wait_done
from conftest import ADMIN_KEY, API_KEY, Stack

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


def test_admin_sees_queue_depth_and_age(stack: Stack) -> None:
    with frozen_dispatcher(stack), stack.client() as client, stack.client(key=ADMIN_KEY) as admin:
        job_id = submit(client, jpeg(), priority="low").json()["job_id"]
        body = admin.get("/admin/queues").json()
        client.delete(f"/jobs/{job_id}")
    low = next(q for q in body["queues"] if q["priority"] == "low")
    assert low["length"] >= 1 and low["oldest_age_s"] is not None and low["oldest_age_s"] >= 0
    assert [q["priority"] for q in body["queues"]] == ["urgent", "high", "normal", "low"]
    assert set(body) == {"queues", "in_flight", "dead_letters"}


def dead_letter(stack: Stack, job_id: str, keep_image: bool) -> None:
    """Puts a job into the state the dispatcher leaves a dead-lettered one in (failed, copied to queue:dead)."""
    r = stack.redis_client()
    r.hset(keys.job_status(job_id), mapping={"status": "failed", "error": "boom", "error_code": "MODEL_ERROR"})
    if not keep_image:
        r.delete(keys.job_image(job_id))
    letter = {"job_id": job_id, "stream": "queue:normal", "error": "boom", "code": "MODEL_ERROR"}
    r.xadd(keys.DEAD_LETTER_STREAM, {"job": json.dumps(letter)})


def test_admin_lists_and_retries_a_dead_letter(stack: Stack) -> None:
    with stack.client() as client, stack.client(key=ADMIN_KEY) as admin:
        with frozen_dispatcher(stack):
            job_id = submit(client, jpeg()).json()["job_id"]
            # the job's queue entry is taken out first, as a dispatcher does before dead-lettering
            r = stack.redis_client()
            for entry_id, fields in r.xrange(keys.queue("normal")):
                if fields[b"job_id"].decode() == job_id:
                    r.xdel(keys.queue("normal"), entry_id)
            dead_letter(stack, job_id, keep_image=True)
            listed = admin.get("/admin/dead-letters").json()
            retried = admin.post(f"/admin/jobs/{job_id}/retry")
        assert any(d["job_id"] == job_id for d in listed["dead_letters"])
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "pending"
        assert wait_done(client, job_id)["status"] == "completed"
        remaining = admin.get("/admin/dead-letters").json()["dead_letters"]
        assert all(d["job_id"] != job_id for d in remaining)
        assert admin.post(f"/admin/jobs/{job_id}/retry").status_code == 409


def test_retry_without_the_upload_is_a_clear_409(stack: Stack) -> None:
    with stack.client() as client, stack.client(key=ADMIN_KEY) as admin:
        job_id = submit(client, jpeg()).json()["job_id"]
        wait_done(client, job_id)
        dead_letter(stack, job_id, keep_image=False)
        response = admin.post(f"/admin/jobs/{job_id}/retry")
        assert client.post(f"/admin/jobs/{job_id}/retry").status_code == 403
        assert admin.post(f"/admin/jobs/{uuid.uuid4()}/retry").status_code == 404
    assert response.status_code == 409
    assert "no longer stored" in response.json()["detail"]
