"""The webhook worker against a real Redis and a real HTTPS receiver: retries, give-up, redirects, SSRF, rotation,
crash recovery. The worker runs in this process (its own Redis, so the stack's dispatcher does not compete)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aic.core.settings import WebhookSettings
from aic.store import keys
from aic.store.connection import keyspace
from aic.store.webhooks import WebhookStore
from aic.webhooks.worker import WebhookWorker
from conftest import RedisTarget, WebhookCA
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from webhook_receiver import Receiver

pytestmark = pytest.mark.integration

TENANT = "acme"
RESULT = {"job_id": "x", "predictions": [{"class_name": "Egyptian cat", "confidence": 0.9, "class_id": 285}]}


@pytest.fixture
async def redis(redis_target: RedisTarget) -> AsyncIterator[Redis]:
    """A client of a standalone Redis (the seed's key names), then of the session's Redis Cluster (16 shards: the
    worker reads every shard's outbox in turn)."""
    client = redis_target.connect(blocking_reads=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def settings(webhook_ca: WebhookCA) -> WebhookSettings:
    return WebhookSettings(
        webhook_max_attempts=3,
        webhook_backoff_base_s=0.05,
        webhook_backoff_factor=2,
        webhook_poll_ms=20,
        webhook_claim_idle_ms=200,
        webhook_allow_loopback=True,
        webhook_ca_bundle=webhook_ca.bundle,
    )


@pytest.fixture
async def receiver_secret(redis: Redis, webhook_receiver: Receiver) -> str:
    secret = (await WebhookStore(redis).secret(TENANT)).current
    webhook_receiver.secrets = [secret]
    return secret


@asynccontextmanager
async def worker(redis: Redis, settings: WebhookSettings) -> AsyncIterator[WebhookWorker]:
    running = WebhookWorker(WebhookStore(redis), settings)
    task = asyncio.create_task(running.run())
    try:
        yield running
    finally:
        running.stop()
        await asyncio.wait_for(task, 30)


async def finished_job(redis: Redis, callback_url: str, status: str = "completed", job_id: str = "") -> str:
    """A job as the job store's finish script leaves it: status, result and its outbox entry (of its shard)."""
    job_id = job_id or str(uuid.uuid4())
    names = keyspace(redis)
    fields = {"job_id": job_id, "tenant": TENANT, "status": status, "callback_url": callback_url}
    if status == "failed":
        fields |= {"error": "Unsupported image", "error_code": "INVALID_IMAGE"}
    await redis.hset(names.job_status(job_id), mapping=fields)  # type: ignore[misc]
    await redis.expire(names.job_status(job_id), 3600)
    await redis.set(names.job_result(job_id), json.dumps({**RESULT, "job_id": job_id}), ex=3600)
    await redis.xadd(outbox_of(redis, job_id), {"job_id": job_id, "event": status})
    return job_id


def outbox_of(redis: Redis, job_id: str) -> str:
    names = keyspace(redis)
    return names.webhook_outbox(names.shard(job_id))


async def scheduled(redis: Redis) -> int:
    """Deliveries scheduled, over every shard."""
    names = keyspace(redis)
    return sum([await redis.zcard(names.webhook_scheduled(shard)) for shard in names.all_shards()])


async def until_over(redis: Redis, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """The job's webhook summary once the delivery has ended (delivered, failed or refused)."""
    store = WebhookStore(redis)
    async with asyncio.timeout(timeout_s):
        while True:
            summary = await store.summary(job_id)
            if summary and summary["state"] in ("delivered", "failed", "refused"):
                return summary
            await asyncio.sleep(0.02)


async def test_completed_job_is_delivered_signed_with_the_result(
    redis: Redis, settings: WebhookSettings, webhook_receiver: Receiver, receiver_secret: str
) -> None:
    async with worker(redis, settings):
        job_id = await finished_job(redis, webhook_receiver.url("/ok"))
        summary = await until_over(redis, job_id)
    assert summary["state"] == "delivered" and summary["attempts"] == 1
    [got] = webhook_receiver.received(job_id)
    assert got.verified_with == [receiver_secret]
    assert got.headers["host"] == f"localhost:{webhook_receiver.port}"
    body = json.loads(got.body)
    assert body["type"] == "job.completed"
    assert body["data"] == {"job_id": job_id, "status": "completed", "result": {**RESULT, "job_id": job_id}}
    attempts = await WebhookStore(redis).attempts(job_id)
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 200)]
    names = keyspace(redis)
    shard = names.shard(job_id)
    assert await redis.zscore(names.webhook_scheduled(shard), got.webhook_id) is None
    assert not await redis.exists(names.webhook_delivery(got.webhook_id, shard))


async def test_failed_job_payload_carries_the_error(
    redis: Redis, settings: WebhookSettings, webhook_receiver: Receiver, receiver_secret: str
) -> None:
    async with worker(redis, settings):
        job_id = await finished_job(redis, webhook_receiver.url("/ok"), status="failed")
        await until_over(redis, job_id)
    [got] = webhook_receiver.received(job_id)
    data = json.loads(got.body)["data"]
    assert data == {
        "job_id": job_id,
        "status": "failed",
        "error_message": "Unsupported image",
        "error_code": "INVALID_IMAGE",
    }


async def test_a_500_is_retried_with_the_same_webhook_id(
    redis: Redis, settings: WebhookSettings, webhook_receiver: Receiver, receiver_secret: str
) -> None:
    async with worker(redis, settings):
        job_id = await finished_job(redis, webhook_receiver.url("/fail-once"))
        summary = await until_over(redis, job_id)
    assert summary["state"] == "delivered" and summary["attempts"] == 2
    first, second = webhook_receiver.received(job_id)
    assert first.webhook_id == second.webhook_id
    assert first.body == second.body
    attempts = await WebhookStore(redis).attempts(job_id)
    assert [a["status_code"] for a in attempts] == [500, 200]


async def test_retry_after_of_a_503_is_honoured(
    redis: Redis, settings: WebhookSettings, webhook_receiver: Receiver, receiver_secret: str
) -> None:
    async with worker(redis, settings):
        job_id = await finished_job(redis, webhook_receiver.url("/busy-once"))
        summary = await until_over(redis, job_id)
    assert summary["state"] == "delivered"
    first, second = webhook_receiver.received(job_id)
    assert first.webhook_id == second.webhook_id
    # the backoff alone would have retried after at most 0.05 s; Retry-After asked for 1 s
    assert second.at - first.at >= 0.95


async def test_gives_up_after_the_bounded_schedule(
    redis: Redis, settings: WebhookSettings, webhook_receiver: Receiver, receiver_secret: str
) -> None:
    async with worker(redis, settings):
        job_id = await finished_job(redis, webhook_receiver.url("/always-500"))
        summary = await until_over(redis, job_id)
        await asyncio.sleep(0.3)  # several poll periods: nothing more may be sent
    assert summary["state"] == "failed" and summary["attempts"] == 3
    assert len(webhook_receiver.received(job_id)) == 3
    assert len({r.webhook_id for r in webhook_receiver.received(job_id)}) == 1
    assert [a["status_code"] for a in await WebhookStore(redis).attempts(job_id)] == [500, 500, 500]
    assert await scheduled(redis) == 0


async def test_redirects_are_not_followed(
    redis: Redis, settings: WebhookSettings, webhook_receiver: Receiver, receiver_secret: str
) -> None:
    async with worker(redis, dataclasses.replace(settings, webhook_max_attempts=1)):
        job_id = await finished_job(redis, webhook_receiver.url("/redirect"))
        summary = await until_over(redis, job_id)
    assert summary["state"] == "failed" and summary["last_status_code"] == 302
    assert [r.path for r in webhook_receiver.received(job_id)] == ["/redirect"]


async def test_loopback_is_refused_by_default(
    redis: Redis, settings: WebhookSettings, webhook_receiver: Receiver, receiver_secret: str
) -> None:
    assert WebhookSettings().webhook_allow_loopback is False
    default_network = dataclasses.replace(settings, webhook_allow_loopback=WebhookSettings().webhook_allow_loopback)
    async with worker(redis, default_network):
        by_name = await finished_job(redis, webhook_receiver.url("/ok"))
        by_address = await finished_job(redis, f"https://127.0.0.1:{webhook_receiver.port}/ok")
        summaries = [await until_over(redis, by_name), await until_over(redis, by_address)]
    for summary in summaries:
        assert summary["state"] == "refused" and summary["attempts"] == 1
        assert "loopback" in summary["last_error"]
    assert webhook_receiver.received(by_name) == [] and webhook_receiver.received(by_address) == []


async def test_rotation_signs_with_both_secrets_during_the_grace_period(
    redis: Redis, settings: WebhookSettings, webhook_receiver: Receiver, receiver_secret: str
) -> None:
    rotated = await WebhookStore(redis).rotate(TENANT, grace_s=3600)
    assert rotated.previous == receiver_secret and rotated.current != receiver_secret
    webhook_receiver.secrets = [receiver_secret, rotated.current]
    async with worker(redis, settings):
        job_id = await finished_job(redis, webhook_receiver.url("/ok"))
        await until_over(redis, job_id)
    [got] = webhook_receiver.received(job_id)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert sorted(got.verified_with) == sorted([receiver_secret, rotated.current])


async def test_rotation_without_grace_signs_with_the_new_secret_only(
    redis: Redis, settings: WebhookSettings, webhook_receiver: Receiver, receiver_secret: str
) -> None:
    rotated = await WebhookStore(redis).rotate(TENANT, grace_s=0)
    webhook_receiver.secrets = [receiver_secret, rotated.current]
    async with worker(redis, settings):
        job_id = await finished_job(redis, webhook_receiver.url("/ok"))
        await until_over(redis, job_id)
    [got] = webhook_receiver.received(job_id)
    assert got.verified_with == [rotated.current]
    assert len(got.headers["webhook-signature"].split(" ")) == 1


async def test_an_entry_a_crashed_reader_left_unacknowledged_is_delivered(
    redis: Redis, settings: WebhookSettings, webhook_receiver: Receiver, receiver_secret: str
) -> None:
    job_id = str(uuid.uuid4())
    outbox = outbox_of(redis, job_id)
    with contextlib.suppress(ResponseError):  # BUSYGROUP: an earlier worker made it
        await redis.xgroup_create(outbox, keys.WEBHOOK_GROUP, id="$", mkstream=True)
    await finished_job(redis, webhook_receiver.url("/ok"), job_id=job_id)
    # a reader that took the entry and died before scheduling it
    taken = await redis.xreadgroup(keys.WEBHOOK_GROUP, "dead-reader", {outbox: ">"}, count=10)
    assert taken
    async with worker(redis, settings):
        summary = await until_over(redis, job_id)
    assert summary["state"] == "delivered"
    assert len(webhook_receiver.received(job_id)) == 1
    assert (await redis.xpending(outbox, keys.WEBHOOK_GROUP))["pending"] == 0


async def test_a_claim_whose_sender_died_is_retried_with_the_same_id(
    redis: Redis, settings: WebhookSettings, webhook_receiver: Receiver, receiver_secret: str
) -> None:
    store = WebhookStore(redis)
    job_id = await finished_job(redis, webhook_receiver.url("/ok"))
    entry_id = (await redis.xrevrange(outbox_of(redis, job_id), count=1))[0][0].decode()
    await store.enqueue(entry_id, job_id, "completed")
    [claimed] = await store.claim_due(10, lease_ms=300)  # a sender claims it, then dies without a word
    async with worker(redis, settings):
        summary = await until_over(redis, job_id)
    assert summary["state"] == "delivered"
    [got] = webhook_receiver.received(job_id)
    assert got.webhook_id == claimed.webhook_id


async def test_a_receiver_that_does_not_answer_in_time_is_a_timeout(
    redis: Redis, settings: WebhookSettings, webhook_receiver: Receiver, receiver_secret: str
) -> None:
    quick = dataclasses.replace(settings, webhook_max_attempts=2, webhook_timeout_s=0.5)
    async with worker(redis, quick):
        job_id = await finished_job(redis, webhook_receiver.url("/slow"))
        summary = await until_over(redis, job_id)
    assert summary["state"] == "failed" and summary["attempts"] == 2
    assert [a.get("error") for a in await WebhookStore(redis).attempts(job_id)] == ["timeout", "timeout"]


async def test_only_a_bounded_part_of_the_answer_is_read(
    redis: Redis, settings: WebhookSettings, webhook_receiver: Receiver, receiver_secret: str
) -> None:
    async with worker(redis, settings):
        job_id = await finished_job(redis, webhook_receiver.url("/huge"))
        summary = await until_over(redis, job_id)
    assert summary["state"] == "delivered"
    deadline = asyncio.get_running_loop().time() + 30
    while "/huge" not in webhook_receiver.aborted and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert "/huge" in webhook_receiver.aborted  # the sender hung up long before 64 MiB


async def test_an_unknown_event_is_dropped_not_retried_forever(
    redis: Redis, settings: WebhookSettings, webhook_receiver: Receiver, receiver_secret: str
) -> None:
    job_id = await finished_job(redis, webhook_receiver.url("/ok"))
    await redis.xadd(outbox_of(redis, job_id), {"job_id": job_id, "event": "exploded"})
    async with worker(redis, settings):
        await until_over(redis, job_id)  # the real 'completed' one
        store = WebhookStore(redis)
        async with asyncio.timeout(30):
            while len(await store.attempts(job_id)) < 2:
                await asyncio.sleep(0.02)
    attempts = await store.attempts(job_id)
    assert {a.get("error") for a in attempts} == {None, "unknown event 'exploded'"}
    assert await scheduled(redis) == 0
    assert len(webhook_receiver.received(job_id)) == 1
