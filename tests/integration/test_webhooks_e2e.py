"""Webhooks end to end: a job submitted through the API, run by the real dispatcher process, reaches a real HTTPS
receiver as a signed job.completed; the secret routes and the job's delivery record through the API."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from aic.store import keys
from conftest import OTHER_TENANT_KEY, Stack
from helpers import jpeg, submit, wait_done
from skimage import data as skdata
from webhook_receiver import Received, Receiver

pytestmark = pytest.mark.integration


def delivered(client: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """The job's webhook record once its terminal delivery has ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/jobs/{job_id}/webhooks").json()
        summary = body.get("summary") or {}
        if summary.get("event") != "started" and summary.get("state") in ("delivered", "failed", "refused"):
            return body
        time.sleep(0.05)
    raise TimeoutError(job_id)


def only(receiver: Receiver, job_id: str) -> Received:
    [got] = receiver.received(job_id)
    return got


def test_completed_job_reaches_the_receiver_signed_with_its_result(
    any_stack: Stack, webhook_receiver: Receiver
) -> None:
    stack = any_stack
    with stack.client() as client:
        secret = client.get("/webhooks/secret").json()["secret"]
        assert secret.startswith("whsec_")
        webhook_receiver.secrets = [secret]
        accepted = submit(client, jpeg(skdata.chelsea()), callback_url=webhook_receiver.url("/ok"))
        assert accepted.status_code == 200, accepted.text
        job_id = accepted.json()["job_id"]
        assert wait_done(client, job_id)["status"] == "completed"
        record = delivered(client, job_id)
        result = client.get(f"/result/{job_id}").json()
    assert record["summary"]["state"] == "delivered", record
    assert [(a["attempt"], a["status_code"]) for a in record["attempts"]] == [(1, 200)]
    got = only(webhook_receiver, job_id)
    assert got.verified_with == [secret]
    body = json.loads(got.body)
    assert body["type"] == "job.completed"
    assert body["data"]["job_id"] == job_id and body["data"]["status"] == "completed"
    assert body["data"]["result"] == result
    assert body["data"]["result"]["predictions"][0]["class_id"] == 285


def test_a_jobs_webhook_record_is_the_owners_only(stack: Stack, webhook_receiver: Receiver) -> None:
    with stack.client() as client:
        webhook_receiver.secrets = [client.get("/webhooks/secret").json()["secret"]]
        job_id = submit(client, jpeg(skdata.coffee()), callback_url=webhook_receiver.url("/ok")).json()["job_id"]
        wait_done(client, job_id)
        delivered(client, job_id)
    with stack.client(OTHER_TENANT_KEY) as other:
        assert other.get(f"/jobs/{job_id}/webhooks").status_code == 404
    with stack.client(None) as anonymous:
        assert anonymous.get("/webhooks/secret").status_code == 401


def test_rotated_secret_signs_beside_the_old_one_during_the_grace_period(
    stack: Stack, webhook_receiver: Receiver
) -> None:
    # globex, so the other tests' tenant keeps one secret
    with stack.client(OTHER_TENANT_KEY) as client:
        old = client.get("/webhooks/secret").json()
        rotated = client.post("/webhooks/secret/rotate")
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()
        assert new["secret"] != old["secret"] and new["previous_valid_until"] is not None
        assert client.get("/webhooks/secret").json()["secret"] == new["secret"]
        webhook_receiver.secrets = [old["secret"], new["secret"]]
        job_id = submit(client, jpeg(skdata.chelsea()), callback_url=webhook_receiver.url("/ok")).json()["job_id"]
        wait_done(client, job_id)
        assert delivered(client, job_id)["summary"]["state"] == "delivered"
    got = only(webhook_receiver, job_id)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert sorted(got.verified_with) == sorted([old["secret"], new["secret"]])


def test_a_job_that_asks_for_started_gets_started_then_completed(stack: Stack, webhook_receiver: Receiver) -> None:
    with stack.client() as client:
        webhook_receiver.secrets = [client.get("/webhooks/secret").json()["secret"]]
        accepted = submit(
            client,
            jpeg(skdata.coffee()),
            callback_url=webhook_receiver.url("/ok"),
            webhook_events="started,completed",
        )
        assert accepted.status_code == 200, accepted.text
        job_id = accepted.json()["job_id"]
        assert wait_done(client, job_id)["status"] == "completed"
        delivered(client, job_id)
    deadline = time.monotonic() + 30
    while len(webhook_receiver.received(job_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    types = sorted(json.loads(got.body)["type"] for got in webhook_receiver.received(job_id))
    assert types == ["job.completed", "job.started"]


def test_signing_secrets_are_sealed_at_rest(stack: Stack, webhook_receiver: Receiver) -> None:
    """What a Redis dump holds: sealed values, bound to their tenant, that the API and the dispatcher open alike
    (the completed jobs above were signed with the secrets the API showed)."""
    with stack.client() as client, stack.client(OTHER_TENANT_KEY) as other:
        shown = {"acme": client.get("/webhooks/secret").json()["secret"]}
        other.post("/webhooks/secret/rotate")
        shown["globex"] = other.get("/webhooks/secret").json()["secret"]
    redis = stack.redis_client()
    for tenant, secret in shown.items():
        stored = {k.decode(): v.decode() for k, v in redis.hgetall(keys.webhook_secret(tenant)).items()}
        assert stored["current"].startswith("sealed:v1:") and secret not in stored["current"], tenant
        if tenant == "globex":
            assert stored["previous"].startswith("sealed:v1:")
        dump = json.dumps(stored)
        assert "whsec_" not in dump and secret.removeprefix("whsec_") not in dump
    # another tenant's sealed value moved into acme's hash does not open: a 503, never globex's secret
    globex = redis.hget(keys.webhook_secret("globex"), "current")
    acme_current = redis.hget(keys.webhook_secret("acme"), "current")
    redis.hset(keys.webhook_secret("acme"), "current", globex)  # type: ignore[arg-type]
    try:
        with stack.client() as client:
            moved = client.get("/webhooks/secret")
    finally:
        redis.hset(keys.webhook_secret("acme"), "current", acme_current)  # type: ignore[arg-type]
    assert moved.status_code == 503 and moved.json()["error"] == "SERVICE_UNAVAILABLE"
    assert shown["globex"] not in moved.text
