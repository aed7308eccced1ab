"""Reading a sharded queue on a real Redis Cluster (16 shards over 3 primaries): a skewed load cannot starve a shard,
the priority weights hold within a shard, and what operators see (depth, dead letters) is summed over the shards."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aic.core.enums import Priority
from aic.core.settings import DispatcherSettings, RedisSettings
from aic.dispatch.intake import Intake
from aic.store import keys
from aic.store.connection import connect, keyspace
from aic.store.jobs import JobStore, NewJob
from aic.store.queue import QueueConsumer, QueueStats
from aic.store.transitions import Completion, JobTransitions
from redis.asyncio import Redis
from redis_cluster import RedisCluster

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

BUSY = 7
"""The shard the skewed load falls in: one in the middle, so shards both before and after it must be reached."""


@pytest.fixture
async def redis(redis_cluster: RedisCluster) -> AsyncIterator[Redis]:
    redis_cluster.flushall()
    client = connect(RedisSettings(redis_url=redis_cluster.url, redis_cluster=True))
    await client.hset(keyspace(client).model_routes, "latest", "efficientnet-lite0")
    try:
        yield client
    finally:
        await client.aclose()


def id_in(shard: int, shards: int) -> str:
    while True:
        job_id = str(uuid.uuid4())
        if keys.shard_of(job_id, shards) == shard:
            return job_id


def new_job(job_id: str, priority: Priority = Priority.NORMAL) -> NewJob:
    return NewJob(
        job_id=job_id,
        tenant="acme",
        image=b"pixels",
        image_metadata={},
        priority=priority,
        model_version="latest",
    )


async def create_in(redis: Redis, shard: int, count: int, priority: Priority = Priority.NORMAL) -> list[str]:
    """``count`` jobs of one shard, in requests of up to 50 (one step each)."""
    ids = [id_in(shard, keyspace(redis).shards) for _ in range(count)]
    store = JobStore(redis)
    for start in range(0, count, 50):
        await store.create([new_job(job_id, priority) for job_id in ids[start : start + 50]])
    return ids


async def test_a_skewed_load_does_not_starve_the_other_shards(redis: Redis) -> None:
    names = keyspace(redis)
    assert names.shards == 16
    busy = await create_in(redis, BUSY, 200)
    lone = {shard: (await create_in(redis, shard, 1))[0] for shard in names.all_shards() if shard != BUSY}
    consumer = QueueConsumer(redis, "test")
    await consumer.ensure_groups()
    intake = Intake(consumer, DispatcherSettings(batch_max_size=16, batch_max_wait_ms=0))
    batches: list[list[str]] = []
    while len(batches) < 20 and not set(lone.values()) <= {job for batch in batches for job in batch}:
        batches.append([entry.job_id for entry in await intake.next_batch()])
    delivered_in = {shard: next(i for i, b in enumerate(batches) if job in b) for shard, job in lone.items()}
    assert max(delivered_in.values()) <= 1, f"batch (0-based) each lone job came in, by shard: {delivered_in}"
    taken_busy = sum(1 for batch in batches for job in batch if job in set(busy))
    assert taken_busy > 0, "the busy shard was not read at all"


async def test_priority_weights_hold_within_a_shard(redis: Redis) -> None:
    names = keyspace(redis)
    for priority in Priority:
        await create_in(redis, BUSY, 40, priority)
    consumer = QueueConsumer(redis, "test")
    await consumer.ensure_groups()
    intake = Intake(consumer, DispatcherSettings(batch_max_size=30, batch_max_wait_ms=0))
    batch = await intake.next_batch()
    by_priority = Counter(entry.stream for entry in batch)
    assert len(batch) == 30
    counts = [by_priority[names.queue(p, BUSY)] for p in Priority]
    assert counts == sorted(counts, reverse=True) and counts[-1] >= 1, counts  # most urgent most, every one moves
    assert counts[0] > counts[1] > counts[2], counts


async def test_queue_depth_and_dead_letters_are_summed_over_the_shards(redis: Redis) -> None:
    created = {shard: await create_in(redis, shard, shard % 3 + 1, Priority.HIGH) for shard in (0, 5, 15)}
    consumer = QueueConsumer(redis, "test")
    await consumer.ensure_groups()
    stats = QueueStats(redis)
    high = {info.priority: info for info in await stats.infos()}[Priority.HIGH]
    assert (high.length, high.waiting, high.in_flight) == (5, 5, 0)
    assert high.oldest_age_s is not None
    # take one job of each shard and dead-letter it
    transitions = JobTransitions(redis)
    dead: list[str] = []
    for shard, ids in created.items():
        entries = (await consumer.read({Priority.HIGH: 1}, shard))[Priority.HIGH]
        taken = [t for t in await transitions.take(entries) if t.job is not None]
        await transitions.fail([Completion(t.job, t.entry, b"") for t in taken if t.job], "no", "MODEL_ERROR",
                               dead_letter=True)  # fmt: skip
        dead += [t.entry.job_id for t in taken]
        assert [t.entry.job_id for t in taken] == ids[:1]
    high = {info.priority: info for info in await stats.infos()}[Priority.HIGH]
    assert (high.length, high.waiting, high.in_flight) == (2, 2, 0)
    assert await stats.dead_letter_count() == 3
    letters = await stats.dead_letters(10)
    assert sorted(letter.job_id for letter in letters) == sorted(dead)
    assert [letter.job_id for letter in letters] == dead[::-1]  # newest first, over the shards
    assert [letter.job_id for letter in await stats.dead_letters(2)] == dead[:0:-1]


async def test_reading_the_queue_asks_no_node_for_the_keys_of_a_command(
    redis: Redis, redis_cluster: RedisCluster
) -> None:
    """redis-py's cluster client would ask a node ``COMMAND GETKEYS`` before every XREADGROUP (a round trip, always
    on one node: bench/store_scale.py); the store's client finds the stream's slot itself."""

    def getkeys_calls() -> int:
        total = 0
        for node in redis_cluster.primaries():
            stats = redis_cluster.client(node).info("commandstats")
            total += int(stats.get("cmdstat_command|getkeys", {}).get("calls", 0))
        return total

    consumer = QueueConsumer(redis, "d1")
    await consumer.ensure_groups()
    await JobStore(redis).create([new_job(id_in(3, 16))])
    before = getkeys_calls()
    found = [entry for shard in range(16) for entry in await consumer.read_blocking(8, 1, shard)]
    found += [
        e for shard in range(16) for got in (await consumer.read({Priority.HIGH: 1}, shard)).values() for e in got
    ]
    assert len(found) == 1
    assert getkeys_calls() == before
