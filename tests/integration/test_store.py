"""The store against a real Redis: the one route publisher, the webhook events a job asked for, the dead-letter
index and the heartbeat index behind ``/health``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
from aic.core.enums import Priority, Stage
from aic.core.errors import BadRequestError, ServiceUnavailableError
from aic.core.modelspec import ModelSpec
from aic.core.settings import QueueSettings, RedisSettings
from aic.dispatch.models import SpecCache
from aic.local.triton import LocalTriton
from aic.modelrepo import layout
from aic.store import keys, scripts
from aic.store.connection import connect, keyspace
from aic.store.jobs import JobStore, NewJob
from aic.store.queue import QueueConsumer
from aic.store.routes import RouteStore
from aic.store.sealing import SealedSecretError, Sealer
from aic.store.transitions import Completion, JobTransitions
from aic.store.webhooks import Reseal, WebhookStore
from aic.store.workers import Heartbeats
from conftest import ADMIN_KEY, API_KEY, RedisTarget, Stack, on_every_primary, publish_models
from helpers import jpeg
from redis.asyncio import Redis

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
async def redis(redis_target: RedisTarget) -> AsyncIterator[Redis]:
    """A client of a standalone Redis (the seed's key names), then of the session's Redis Cluster (16 shards)."""
    client = redis_target.connect()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def default_model(triton_server: LocalTriton) -> ModelSpec:
    return layout.load(triton_server.repository / "efficientnet-lite0")


async def weights(redis: Redis, alias: str) -> dict[str, int]:
    raw = await redis.hget(keyspace(redis).model_weights, alias)
    return dict(json.loads(raw)) if raw else {}


def publish_again(target: RedisTarget, triton: LocalTriton) -> None:
    """What `aic up` (standalone) or the operator (cluster) publishes when it (re)starts."""
    publish_models(target.url, triton.repository, cluster=target.cluster)


# -- one publisher ------------------------------------------------------------------------------------------


async def test_aic_up_publishing_beside_a_canary_keeps_routes_and_weights_in_agreement(
    redis: Redis, redis_target: RedisTarget, triton_server: LocalTriton, default_model: ModelSpec
) -> None:
    routes = RouteStore(redis)
    canary = msgspec.structs.replace(default_model, name="efficientnet-lite0-v2", aliases=("latest",))
    await routes.publish(canary, 10)  # `aic models apply` of a canary
    await asyncio.to_thread(publish_again, redis_target, triton_server)  # `aic up` (re)starts
    assert await weights(redis, "latest") == {"efficientnet-lite0": 100, "efficientnet-lite0-v2": 10}
    assert (await routes.aliases())["latest"] == "efficientnet-lite0"  # the heaviest, as the weights say
    chosen = await SpecCache(routes).for_jobs(["latest"] * 110)
    assert Counter(spec.name for spec in chosen if spec) == {"efficientnet-lite0": 100, "efficientnet-lite0-v2": 10}


async def test_a_restart_of_aic_up_keeps_the_weight_a_model_was_given(
    redis: Redis, redis_target: RedisTarget, triton_server: LocalTriton, default_model: ModelSpec
) -> None:
    await RouteStore(redis).publish(default_model, 30)
    await asyncio.to_thread(publish_again, redis_target, triton_server)
    assert await weights(redis, "latest") == {"efficientnet-lite0": 30}


async def test_an_alias_the_model_no_longer_lists_stops_routing_to_it(
    redis: Redis, redis_target: RedisTarget, triton_server: LocalTriton, default_model: ModelSpec
) -> None:
    routes = RouteStore(redis)
    await routes.publish(msgspec.structs.replace(default_model, aliases=(*default_model.aliases, "beta")))
    assert "beta" in await routes.aliases()
    await asyncio.to_thread(publish_again, redis_target, triton_server)
    assert set(await routes.aliases()) == set(default_model.aliases)
    assert await weights(redis, "beta") == {}


async def test_withdrawing_a_model_leaves_the_others_of_its_alias(redis: Redis, default_model: ModelSpec) -> None:
    routes = RouteStore(redis)
    other = msgspec.structs.replace(default_model, name="other", aliases=("latest",))
    await routes.publish(default_model, 1)
    await routes.publish(other, 5)
    await routes.withdraw("other")
    assert await weights(redis, "latest") == {"efficientnet-lite0": 1}
    assert (await routes.aliases())["latest"] == "efficientnet-lite0"
    assert await routes.spec("other") is None


# -- the webhook events a job asked for -----------------------------------------------------------------------


async def run_job(redis: Redis, webhook_events: str, *, fail: bool = False) -> list[str]:
    """A job with a callback, taken from the queue and finished as a dispatcher does; the events it queued."""
    job_id = str(uuid.uuid4())
    new = NewJob(
        job_id=job_id,
        tenant="acme",
        image=b"...",
        image_metadata={},
        priority=Priority.LOW,
        model_version="latest",
        callback_url="https://example.com/hook",
        webhook_events=webhook_events,
    )
    names = keyspace(redis)
    await redis.hset(names.model_routes, "latest", "efficientnet-lite0")  # as a published model routes it
    await JobStore(redis).create([new])
    transitions = JobTransitions(redis)
    consumer = QueueConsumer(redis, "test")
    await consumer.ensure_groups()
    entries = (await consumer.read({Priority.LOW: 10}, names.shard(job_id)))[Priority.LOW]
    [taken] = [t for t in await transitions.take(entries) if t.entry.job_id == job_id]
    assert taken.job is not None
    held = [Completion(taken.job, taken.entry, b"{}")]
    await transitions.start(held)
    if fail:
        await transitions.fail(held, "boom", "MODEL_ERROR")
    else:
        await transitions.complete(held)
    outbox = await redis.xrange(names.webhook_outbox(names.shard(job_id)))
    return [f[b"event"].decode() for _, f in outbox if f[b"job_id"].decode() == job_id]


@pytest.mark.parametrize(
    ("asked", "fail", "queued"),
    [
        ("started", False, ["started"]),
        ("started", True, ["started"]),
        ("started,completed", False, ["started", "completed"]),
        ("failed", False, []),
        ("completed,failed,cancelled", True, ["failed"]),
        ("", False, ["completed"]),  # a job stored before webhook_events existed: the terminal default
    ],
)
async def test_only_the_events_a_job_asked_for_are_queued(
    redis: Redis, asked: str, fail: bool, queued: list[str]
) -> None:
    assert await run_job(redis, asked, fail=fail) == queued


# -- creating a request's jobs: one step, all or none ------------------------------------------------------


def new_job(model_version: str = "latest", metadata: dict[str, str] | None = None, job_id: str | None = None) -> NewJob:
    return NewJob(
        job_id=job_id or str(uuid.uuid4()),
        tenant="acme",
        image=b"pixels",
        image_metadata={"format": "JPEG"},
        priority=Priority.HIGH,
        model_version=model_version,
        metadata=metadata,
    )


def request(redis: Redis, count: int, model_version: str = "latest") -> list[NewJob]:
    """The jobs of one request, as the API makes them: ids of one queue shard (``JobStore.new_ids``)."""
    return [new_job(model_version, job_id=job_id) for job_id in JobStore(redis).new_ids(count)]


def high_queue(redis: Redis, jobs: list[NewJob]) -> str:
    """The urgent-but-one stream of the shard the request's jobs fall in."""
    names = keyspace(redis)
    return names.queue(Priority.HIGH, names.shard(jobs[0].job_id))


async def stored_keys(redis: Redis) -> set[str]:
    return {k.decode() for k in await on_every_primary(redis, "KEYS", "job:*")}


async def test_create_stores_and_enqueues_every_job_of_a_request(redis: Redis) -> None:
    names = keyspace(redis)
    await redis.hset(names.model_routes, "latest", "efficientnet-lite0")
    first_id, second_id = JobStore(redis).new_ids(2)
    jobs = [new_job(metadata={"order": "7"}, job_id=first_id), new_job(job_id=second_id)]
    # exactly room for them (on a cluster each shard holds its share of the depth: 32 / 16)
    created = await JobStore(redis).create(jobs, QueueSettings(queue_max_depth=2 * names.shards))
    assert [job.job_id for job in created] == [new.job_id for new in jobs]
    first = await JobStore(redis).get(jobs[0].job_id, "acme")
    assert (first.status, first.priority, first.image_metadata) == ("pending", Priority.HIGH, {"format": "JPEG"})
    assert await redis.get(names.job_image(jobs[1].job_id)) == b"pixels"
    assert await JobStore(redis).metadata(jobs[0].job_id) == {"order": "7"}
    assert await redis.exists(names.job_metadata(jobs[1].job_id)) == 0
    assert 0 < await redis.ttl(names.job_status(jobs[0].job_id)) <= keys.JOB_STATUS_TTL_S + keys.LIVE_SLACK_S
    queued = await redis.xrange(high_queue(redis, jobs))
    assert [fields[b"job_id"].decode() for _, fields in queued] == [new.job_id for new in jobs]


async def test_create_refuses_an_alias_that_routes_nowhere_and_stores_nothing(redis: Redis) -> None:
    routes = {"latest": "efficientnet-lite0", "v1.0": "efficientnet-lite0"}
    await redis.hset(keyspace(redis).model_routes, mapping=routes)
    jobs = request(redis, 2, "v9")
    with pytest.raises(BadRequestError, match=r"Unknown model_version 'v9' \(available: latest, v1\.0\)"):
        await JobStore(redis).create(jobs)
    assert await stored_keys(redis) == set()
    assert await redis.xlen(high_queue(redis, jobs)) == 0


async def test_create_refuses_jobs_that_would_pass_the_queue_depth_and_stores_none(redis: Redis) -> None:
    """On a cluster (16 shards) each shard holds its share of the depth (48 / 16 = 3), and the refusal says so."""
    names = keyspace(redis)
    await redis.hset(names.model_routes, "latest", "efficientnet-lite0")
    store = JobStore(redis)
    settings = QueueSettings(queue_max_depth=3 * names.shards, queue_full_retry_after_s=7)
    ids = store.new_ids(5)  # five ids of one shard: three requests in the same shard
    full = (
        r"Queue is full \(2 jobs waiting in its shard, limit 3 per queue shard: 48 over 16 shards\)"
        if names.sharded
        else r"Queue is full \(2 jobs waiting, limit 3\)"
    )
    await store.create([new_job(job_id=ids[0]), new_job(job_id=ids[1])], settings)
    with pytest.raises(ServiceUnavailableError, match=full) as refused:
        await store.create([new_job(job_id=ids[2]), new_job(job_id=ids[3])], settings)  # 2 + 2 > 3: neither of them
    assert refused.value.headers == {"Retry-After": "7"}
    assert len(await stored_keys(redis)) == 4  # the first request's statuses and images only
    await store.create([new_job(job_id=ids[4])], settings)  # 2 + 1 fits
    assert await redis.xlen(names.queue(Priority.HIGH, names.shard(ids[0]))) == 3


async def test_a_resent_create_changes_nothing_and_drops_only_the_uploads_nobody_needs(redis: Redis) -> None:
    """redis-py sends a transaction again when its reply was lost (Redis shut down after applying it): the resend
    must not reset the jobs, queue them twice, or leave an upload behind that nothing will delete."""
    names = keyspace(redis)
    await redis.hset(names.model_routes, "latest", "efficientnet-lite0")
    store = JobStore(redis)
    running, done, dead = jobs = request(redis, 3)
    await store.create(jobs)
    await redis.hset(names.job_status(running.job_id), mapping={"status": "processing", "progress": "40"})
    await redis.hset(names.job_status(done.job_id), "status", "completed")
    await redis.delete(names.job_image(done.job_id))
    await redis.hset(names.job_status(dead.job_id), "status", "failed")
    await redis.hset(
        names.dead_letter_index(names.shard(dead.job_id)), dead.job_id, "1-0"
    )  # dead-lettered: kept for an operator's retry
    again = await store.create(jobs)  # the same request, as the retry sends it
    assert [job.job_id for job in again] == [new.job_id for new in jobs]
    assert await redis.xlen(high_queue(redis, jobs)) == 3, "queued again: the jobs would run twice"
    assert ((await store.get(running.job_id)).status, (await store.get(running.job_id)).progress) == ("processing", 40)
    assert (await store.get(done.job_id)).status == "completed"
    assert await redis.get(names.job_image(running.job_id)) == b"pixels", "a live job lost its upload"
    assert await redis.exists(names.job_image(done.job_id)) == 0, "the resend left an upload nobody will delete"
    assert await redis.get(names.job_image(dead.job_id)) == b"pixels", "a dead letter lost the upload kept for it"


async def test_advance_says_which_jobs_are_live_and_completion_passes_its_stage_first(redis: Redis) -> None:
    names = keyspace(redis)
    await redis.hset(names.model_routes, "latest", "efficientnet-lite0")
    store, transitions = JobStore(redis), JobTransitions(redis)
    jobs = request(redis, 2)
    await store.create(jobs)
    consumer = QueueConsumer(redis, "test")
    await consumer.ensure_groups()
    entries = (await consumer.read({Priority.HIGH: 10}, names.shard(jobs[0].job_id)))[Priority.HIGH]
    taken = [t for t in await transitions.take(entries) if t.job is not None]
    held = [Completion(t.job, t.entry, b'{"predictions": []}') for t in taken if t.job is not None]
    assert await transitions.start(held) == [True, True]
    await store.cancel(await store.get(jobs[1].job_id))
    pubsub = redis.pubsub()
    if names.sharded_pubsub:  # a cluster's scripts SPUBLISH: sharded pub/sub, the channel's node only
        await pubsub.ssubscribe(names.job_events(jobs[0].job_id))  # type: ignore[attr-defined]
    else:
        await pubsub.subscribe(names.job_events(jobs[0].job_id))
    assert await transitions.advance(held, Stage.PREPROCESSING) == [True, False]  # the cancelled one is untouched
    await transitions.complete(held[:1], through=Stage.INFERENCE)
    seen = []
    while len(seen) < 3:
        message = await (
            pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=5)  # type: ignore[attr-defined]
            if names.sharded_pubsub
            else pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        )
        if message is not None:
            seen.append(json.loads(message["data"]))
    await pubsub.aclose()
    assert [(e["status"], e["stage"]) for e in seen] == [
        ("processing", "preprocessing"),
        ("processing", "inference"),
        ("completed", "completed"),
    ]
    assert (await store.get(jobs[1].job_id)).status == "cancelled"


async def test_scripts_lost_by_a_restarted_redis_are_loaded_again_and_run_once(redis: Redis) -> None:
    names = keyspace(redis)
    await redis.hset(names.model_routes, "latest", "efficientnet-lite0")
    store, transitions = JobStore(redis), JobTransitions(redis)
    await on_every_primary(redis, "SCRIPT", "FLUSH")  # as after a restart: Redis knows none of the scripts
    [job] = await store.create([new_job()])
    consumer = QueueConsumer(redis, "test")
    await consumer.ensure_groups()
    entries = (await consumer.read({Priority.HIGH: 10}, names.shard(job.job_id)))[Priority.HIGH]
    held = [Completion(t.job, t.entry, b"{}") for t in await transitions.take(entries) if t.job is not None]
    await on_every_primary(redis, "SCRIPT", "FLUSH")
    assert await transitions.start(held) == [True]
    await on_every_primary(redis, "SCRIPT", "FLUSH")
    await transitions.complete(held, through=Stage.INFERENCE)
    done = await store.get(job.job_id)
    assert (done.status, done.attempts) == ("completed", 1)  # each call made once: one delivery counted
    assert await redis.xlen(names.queue(Priority.HIGH, names.shard(job.job_id))) == 0


# -- the dead-letter index ------------------------------------------------------------------------------------


async def test_a_dead_letter_older_than_ten_thousand_others_is_retried(quiet_stack: Stack) -> None:
    redis = connect(RedisSettings(redis_url=quiet_stack.redis.url))
    try:
        async with httpx.AsyncClient(base_url=quiet_stack.base_url, timeout=60) as client:
            upload = {"file": ("cat.jpg", jpeg(), "image/jpeg")}
            answer = await client.post(
                "/classify", files=upload, data={"priority": "urgent"}, headers={"X-API-Key": API_KEY}
            )
            job_id = answer.json()["job_id"]
            # a dispatcher took it and dead-lettered it (as Triton refusing the model would)
            consumer = QueueConsumer(redis, "test")
            await consumer.ensure_groups()
            entries = (await consumer.read({Priority.URGENT: 100}))[Priority.URGENT]
            [taken] = [t for t in await JobTransitions(redis).take(entries) if t.entry.job_id == job_id]
            assert taken.job is not None
            await JobTransitions(redis).fail([Completion(taken.job, taken.entry, b"")], "gone", "MODEL_ERROR",
                                             dead_letter=True)  # fmt: skip
            async with redis.pipeline(transaction=False) as pipe:  # then 10,001 other jobs died after it
                for n in range(10_001):
                    pipe.xadd(keys.LEGACY.dead_letter_stream(), {"job": json.dumps({"job_id": f"other-{n}"})})
                await pipe.execute()
            retried = await client.post(f"/admin/jobs/{job_id}/retry", headers={"X-API-Key": ADMIN_KEY})
            assert retried.status_code == 200, retried.text
            assert retried.json()["status"] == "pending"
            assert await redis.hget(keys.LEGACY.dead_letter_index(), job_id) is None
            await client.delete(f"/jobs/{job_id}")
    finally:
        await redis.aclose()


# -- the heartbeat index behind /health ------------------------------------------------------------------------


async def test_health_counts_dispatchers_from_the_heartbeat_index_without_scanning(quiet_stack: Stack) -> None:
    redis = connect(RedisSettings(redis_url=quiet_stack.redis.url))
    heartbeats = Heartbeats(redis)
    try:
        await redis.config_resetstat()
        async with httpx.AsyncClient(base_url=quiet_stack.base_url, timeout=30) as client:
            alone = (await client.get("/health")).json()
            await heartbeats.beat("probe-dispatcher", {"ready": True, "problems": []})
            one = (await client.get("/health")).json()
            await heartbeats.gone("probe-dispatcher")
            none = (await client.get("/health")).json()
        stats = await redis.info("commandstats")
    finally:
        await redis.aclose()
    assert alone["services"]["dispatchers"] == "no active dispatchers"
    assert one["services"]["dispatchers"] == "healthy (1 dispatchers)" and one["status"] == "healthy"
    assert none["services"]["dispatchers"] == "no active dispatchers" and none["status"] == "degraded"
    assert "cmdstat_scan" not in stats, "a probe must not walk the keyspace"


# -- webhook secrets at rest --------------------------------------------------------------------------------


async def test_rotating_the_sealing_key_reseals_each_secret_on_its_next_read(redis: Redis) -> None:
    old = Sealer.from_settings("old-sealing-key-0123456789abcdef")
    new = Sealer.from_settings("new-sealing-key-0123456789abcdef", "old-sealing-key-0123456789abcdef")
    only_new = Sealer.from_settings("new-sealing-key-0123456789abcdef")
    assert old and new and only_new
    secret = (await WebhookStore(redis, old).secret("acme")).current
    stored = await redis.hget(keys.webhook_secret("acme"), "current")
    assert stored and stored.decode().startswith(f"sealed:v1:{Sealer.key_id(old.keys[0])}:")
    with pytest.raises(SealedSecretError):  # the new key alone cannot read what the old one sealed...
        await WebhookStore(redis, only_new).secret("acme")
    assert (await WebhookStore(redis, new).secret("acme")).current == secret  # ...until both are set once
    resealed = await redis.hget(keys.webhook_secret("acme"), "current")
    assert resealed and resealed.decode().startswith(f"sealed:v1:{Sealer.key_id(only_new.keys[0])}:")
    assert (await WebhookStore(redis, only_new).secret("acme")).current == secret


async def test_a_secret_stored_plain_before_sealing_is_sealed_when_read(redis: Redis) -> None:
    await redis.hset(keys.webhook_secret("acme"), "current", "whsec_from_an_older_release")
    sealer = Sealer.from_settings("sealing-key-0123456789abcdef")
    assert (await WebhookStore(redis, sealer).secret("acme")).current == "whsec_from_an_older_release"
    stored = await redis.hget(keys.webhook_secret("acme"), "current")
    assert stored and stored.startswith(b"sealed:v1:") and b"whsec_" not in stored


async def test_a_reseal_never_overwrites_a_secret_rotated_meanwhile(redis: Redis) -> None:
    store = WebhookStore(redis, Sealer.from_settings("sealing-key-0123456789abcdef"))
    await redis.hset(keys.webhook_secret("acme"), "current", "rotated-in-between")
    call = Reseal(secret=keys.webhook_secret("acme"), field="current", read="as-read-before", resealed="resealed")
    wrote = await scripts.run(redis, call)
    assert store.keys == keyspace(redis)
    assert wrote == 0
    assert await redis.hget(keys.webhook_secret("acme"), "current") == b"rotated-in-between"
