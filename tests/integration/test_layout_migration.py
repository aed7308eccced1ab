"""Key layouts against real Redis servers: the guard that keeps a process of another layout (cluster or not,
QUEUE_SHARDS) from starting, and migrations that lose no job: S=1 -> S=4 on one Redis without a drain, and a
standalone install's finished jobs copied into a cluster (``redis-cli --cluster import --cluster-copy``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from aic.core.enums import JobStatus, Priority, Stage
from aic.core.errors import JobNotFoundError
from aic.core.settings import RedisSettings
from aic.store import keys, layout
from aic.store.connection import bind, connect
from aic.store.events import EventSubscription, Message
from aic.store.jobs import Job, JobStore, NewJob
from aic.store.listing import JobFilter, JobIndex
from aic.store.queue import Entry, QueueConsumer, QueueStats
from aic.store.transitions import Completion, JobTransitions
from aic.store.webhooks import WebhookStore
from redis.asyncio import Redis
from redis_cluster import RedisCluster
from stack import RunningRedis

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TENANT = "acme"
FOUR = keys.Keyspace(shards=4)


@pytest.fixture
async def redis(own_redis: RunningRedis) -> AsyncIterator[Redis]:
    client = connect(RedisSettings(redis_url=own_redis.url))
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


async def marker(redis: Redis) -> object:
    raw = await redis.get(keys.LAYOUT_KEY)
    return json.loads(raw) if raw else None


def client(url: str, names: keys.Keyspace, before: keys.Keyspace | None = None) -> Redis:
    return bind(Redis.from_url(url), names, before)


async def submit(redis: Redis, count: int) -> list[Job]:
    store = JobStore(redis)
    await redis.hset(store.keys.model_routes, "latest", "m")
    jobs = []
    for _ in range(count):
        [job_id] = store.new_ids(1)
        new = NewJob(job_id, TENANT, b"img", {}, Priority.NORMAL, "latest", metadata={"n": job_id})
        jobs += await store.create([new])
    return jobs


async def process_all(redis: Redis) -> list[Entry]:
    """What a dispatcher does with every entry it reads, without a model: take, start, complete."""
    queue, transitions = QueueConsumer(redis, "d1"), JobTransitions(redis)
    await queue.ensure_groups()
    done: list[Entry] = []
    for shard in range(queue.shards):
        entries = await queue.read_blocking(100, 1, shard)
        taken = [t for t in await transitions.take(entries) if t.job is not None]
        await transitions.start(taken)  # type: ignore[arg-type]
        completions = [Completion(t.job, t.entry, json.dumps({"id": t.entry.job_id}).encode()) for t in taken if t.job]
        assert all(await transitions.complete(completions, through=Stage.INFERENCE))
        done += entries
    return done


# -- the guard ----------------------------------------------------------------------------------------------------


async def test_the_first_process_records_its_layout_and_a_peer_of_the_same_layout_starts(
    redis: Redis, own_redis: RunningRedis
) -> None:
    four = client(own_redis.url, FOUR)
    assert await layout.check(four) == FOUR
    assert await marker(redis) == {"cluster": False, "shards": 4}
    assert await layout.check(client(own_redis.url, FOUR)) == FOUR


async def test_a_process_of_another_layout_refuses_naming_both_and_the_migration_setting(
    redis: Redis, own_redis: RunningRedis
) -> None:
    await layout.check(redis)  # the deployment: standalone
    with pytest.raises(layout.LayoutMismatch) as refused:
        await layout.check(client(own_redis.url, FOUR))
    message = str(refused.value)
    assert "standalone" in message and "shards:4" in message and "KEY_LAYOUT_BEFORE=standalone" in message
    assert "\n" not in message
    assert await marker(redis) == {"cluster": False, "shards": 1}  # unchanged


async def test_an_install_older_than_the_marker_counts_as_standalone(redis: Redis, own_redis: RunningRedis) -> None:
    await submit(redis, 1)  # its queues exist, no marker
    await redis.delete(keys.LAYOUT_KEY)
    with pytest.raises(layout.LayoutMismatch, match="KEY_LAYOUT_BEFORE=standalone"):
        await layout.check(client(own_redis.url, FOUR))
    assert await redis.get(keys.LAYOUT_KEY) is None


async def test_a_migrating_process_accepts_the_previous_layout_and_records_its_own(
    redis: Redis, own_redis: RunningRedis
) -> None:
    await layout.check(redis)
    with pytest.raises(layout.LayoutMismatch, match="shards:8"):  # not the layout the migration names
        await layout.check(client(own_redis.url, keys.Keyspace(shards=8), FOUR))
    assert await layout.check(client(own_redis.url, FOUR, keys.LEGACY)) == keys.LEGACY
    assert await marker(redis) == {"cluster": False, "shards": 4}
    with pytest.raises(layout.LayoutMismatch):  # the old layout, once switched: refused
        await layout.check(redis)


async def test_the_api_command_refuses_another_layout_with_one_line_and_exit_2(
    redis: Redis, own_redis: RunningRedis
) -> None:
    await layout.check(redis)  # the deployment: standalone
    env = {**os.environ, "REDIS_URL": own_redis.url, "QUEUE_SHARDS": "4", "API_KEYS": ""}
    command = [sys.executable, "-m", "aic.cli", "api"]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, timeout=60, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("aic: Redis holds data in key layout standalone")
    assert "KEY_LAYOUT_BEFORE=standalone" in done.stderr


# -- migrations ---------------------------------------------------------------------------------------------------


async def test_standalone_to_four_shards_without_a_drain_finishes_the_old_jobs_and_reads_every_id(
    redis: Redis, own_redis: RunningRedis
) -> None:
    await layout.check(redis)
    finished_before = await submit(redis, 2)
    await process_all(redis)
    queued_before = await submit(redis, 5)  # accepted, no dispatcher running: waiting in queue:normal
    # the switch: API and dispatchers restarted with QUEUE_SHARDS=4, KEY_LAYOUT_BEFORE=standalone
    four = client(own_redis.url, FOUR, keys.LEGACY)
    assert await layout.check(four) == keys.LEGACY
    waiting = sum(info.waiting for info in await QueueStats(four).infos())
    assert waiting == 5  # the previous layout's queues count while a drain is watched
    new = await submit(four, 6)
    assert {FOUR.shard(job.job_id) for job in new} != {0}  # spread over the new shards
    done = await process_all(four)
    assert len(done) == 11
    assert sum(info.waiting + info.in_flight for info in await QueueStats(four).infos()) == 0

    store = JobStore(four)
    every = finished_before + queued_before + new
    found = await store.with_results([job.job_id for job in every], TENANT)
    assert [job.status for job, _ in found] == [JobStatus.COMPLETED] * len(every)
    assert all(json.loads(result or b"{}")["id"] == job.job_id for job, result in found)
    old = queued_before[0].job_id
    assert (await store.get(old)).names == keys.LEGACY
    assert (await store.get(new[0].job_id)).names is None
    assert await store.metadata(old) == {"n": old}
    assert await store.result(old) is not None
    assert await redis.exists(keys.LEGACY.job_result(old))  # finished where it was queued
    page, _ = await JobIndex(four).page(TENANT, 50, JobFilter())
    assert {job.job_id for job in page} == {job.job_id for job in every}

    await store.purge(await store.get(old))  # erased under the names it was found in
    assert not await redis.exists(keys.LEGACY.job_status(old), keys.LEGACY.job_result(old))
    with pytest.raises(JobNotFoundError):
        await store.get(old)


async def test_without_the_migration_setting_old_ids_are_not_found_and_old_queues_not_read(
    redis: Redis, own_redis: RunningRedis
) -> None:
    """What the guard prevents: the same switch without KEY_LAYOUT_BEFORE would lose the jobs; a dispatcher's start
    (``ensure_groups``) refuses it."""
    queued = await submit(redis, 2)
    four = client(own_redis.url, FOUR)
    with pytest.raises(layout.LayoutMismatch, match="KEY_LAYOUT_BEFORE=standalone"):
        await QueueConsumer(four, "d1").ensure_groups()
    with pytest.raises(JobNotFoundError):
        await JobStore(four).get(queued[0].job_id)


async def test_standalone_copied_into_a_cluster_keeps_finished_jobs_readable(
    redis: Redis, own_redis: RunningRedis, redis_cluster: RedisCluster
) -> None:
    redis_cluster.flushall()
    await layout.check(redis)
    finished = await submit(redis, 4)
    await process_all(redis)
    host_port = own_redis.url.removeprefix("redis://")
    node = redis_cluster.primaries()[0].url.removeprefix("redis://")
    copy = subprocess.run(
        ["redis-cli", "--cluster", "import", node, "--cluster-from", host_port, "--cluster-copy"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert copy.returncode == 0, copy.stdout + copy.stderr

    settings = RedisSettings(redis_url=redis_cluster.url, redis_cluster=True, key_layout_before="standalone")
    cluster = connect(settings)
    try:
        plain = connect(RedisSettings(redis_url=redis_cluster.url, redis_cluster=True))
        with pytest.raises(layout.LayoutMismatch, match="KEY_LAYOUT_BEFORE=standalone"):
            await layout.check(plain)
        await plain.aclose()
        assert await layout.check(cluster) == keys.LEGACY
        assert QueueConsumer(cluster, "d1").shards == 16  # the standalone queues are drained, not read
        store = JobStore(cluster)
        found = await store.with_results([job.job_id for job in finished], TENANT)
        assert [job.status for job, _ in found] == [JobStatus.COMPLETED] * 4
        assert all(json.loads(result or b"{}")["id"] == job.job_id for job, result in found)
        page, _ = await JobIndex(cluster).page(TENANT, 50, JobFilter())
        assert {job.job_id for job in page} == {job.job_id for job in finished}
        old = finished[0].job_id
        await store.purge(await store.get(old))
        with pytest.raises(JobNotFoundError):
            await store.get(old)
        fresh = await submit(cluster, 1)  # the new layout serves new jobs beside them
        assert (await store.get(fresh[0].job_id)).status is JobStatus.PENDING
    finally:
        await cluster.aclose()
        redis_cluster.flushall()


async def test_a_job_queued_before_the_switch_gets_its_webhook_after_it(redis: Redis, own_redis: RunningRedis) -> None:
    """Its end is queued in the old layout's outbox (its finish step runs on the old names): the webhook workers of
    the new layout read that outbox too while migrating, schedule the delivery there and build its payload from
    the job's old keys."""
    store = JobStore(redis)
    await redis.hset(store.keys.model_routes, "latest", "m")
    [job_id] = store.new_ids(1)
    new = NewJob(job_id, TENANT, b"img", {}, Priority.NORMAL, "latest", callback_url="https://hooks.example/x")
    await store.create([new])
    migrating = client(own_redis.url, FOUR, keys.LEGACY)
    assert [entry.job_id for entry in await process_all(migrating)] == [job_id]  # finished after the switch
    assert await redis.xlen(keys.LEGACY.webhook_outbox()) == 1  # on the old names

    webhooks = WebhookStore(migrating)
    await webhooks.ensure_outbox_group()
    [entry] = await webhooks.read_outbox("w1", 60_000, 10, 1)
    assert (entry.job_id, entry.event, entry.names) == (job_id, "completed", keys.LEGACY)
    await webhooks.enqueue(entry.entry_id, entry.job_id, entry.event, entry.names)
    assert await redis.xlen(keys.LEGACY.webhook_outbox()) == 0  # acknowledged and removed
    [delivery] = await webhooks.claim_due(10, 30_000)
    assert (delivery.job_id, delivery.names) == (job_id, keys.LEGACY)
    assert (await webhooks.job(job_id, delivery.names))["status"] == "completed"
    assert await webhooks.result(job_id, delivery.names) == {"id": job_id}
    await webhooks.record(delivery, {"attempt": 1, "status": 200}, {"state": "delivered"}, None)
    assert await webhooks.attempts(job_id) == [{"attempt": 1, "status": 200}]
    assert await webhooks.claim_due(10, 30_000) == [] and await webhooks.next_due_ms() is None


async def test_a_job_queued_before_the_switch_is_followed_live_after_it(redis: Redis, own_redis: RunningRedis) -> None:
    """Its steps publish on the old layout's channel names: a subscription of the new layout follows those too."""
    [job] = await submit(redis, 1)
    migrating = client(own_redis.url, FOUR, keys.LEGACY)
    subscription = EventSubscription(migrating)
    try:
        while (message := await subscription.next(1.0)) is None or not message.inbox:
            pass  # the inbox is confirmed: the reader is up
        await subscription.subscribe(job.job_id)
        confirmations = [message for _ in range(3) if (message := await subscription.next(0.3)) is not None]
        assert confirmations == [Message(job.job_id, None)]  # one, the new name's: the hub's counts stay exact
        await process_all(migrating)
        statuses: list[str] = []
        deadline = asyncio.get_running_loop().time() + 20
        while "completed" not in statuses and asyncio.get_running_loop().time() < deadline:
            message = await subscription.next(1.0)
            if message is not None and message.data is not None:
                assert message.job_id == job.job_id
                statuses.append(json.loads(message.data)["status"])
        assert statuses and statuses[0] == "processing" and statuses[-1] == "completed", statuses
    finally:
        await subscription.close()
