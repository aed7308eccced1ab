"""The Redis Cluster fixture forms a real cluster that redis-py's asyncio cluster client uses, fails over on a SIGKILL,
and the Redis behaviours the cluster design rests on (``redis_cluster.py``'s docstring) still hold."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import ClusterPubSub
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.crc import key_slot
from redis_cluster import SLOTS, RedisCluster

pytestmark = pytest.mark.integration


def other_slot_key(cluster: RedisCluster, tag: str, *, same_node: bool) -> str:
    """A key outside ``tag``'s slot, served by the same primary or by another one."""
    slot = key_slot(tag.encode())
    home = cluster.primary_for_slot(slot).port
    for i in range(100_000):
        key = f"other-{i}"
        other = key_slot(key.encode())
        if other != slot and (cluster.primary_for_slot(other).port == home) == same_node:
            return key
    raise LookupError("no such key")


def test_slots_are_split_evenly_and_contiguously_over_the_primaries(redis_cluster: RedisCluster) -> None:
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3 and not redis_cluster.replicas()
    for i, node in enumerate(primaries):
        assert redis_cluster.primary_for_slot(i * SLOTS // 3).port == node.port
        assert redis_cluster.primary_for_slot((i + 1) * SLOTS // 3 - 1).port == node.port
        assert node.node_id and node.pid > 0


async def test_the_async_cluster_client_writes_and_reads_a_key_on_every_primary(redis_cluster: RedisCluster) -> None:
    client = AsyncRedisCluster.from_url(redis_cluster.url, decode_responses=True)
    try:
        for node in redis_cluster.primaries():
            key = f"{redis_cluster.hash_tag_for(node)}:fixture"
            assert await client.set(key, str(node.port))
            assert await client.get(key) == str(node.port)
            assert redis_cluster.client(node).get(key) == str(node.port)  # it lives on that primary
    finally:
        await client.aclose()


def test_a_shebang_script_is_refused_an_undeclared_key_of_another_slot(redis_cluster: RedisCluster) -> None:
    node = redis_cluster.primaries()[0]
    tag = redis_cluster.hash_tag_for(node)
    admin = redis_cluster.client(node)
    for same_node, error in ((True, "do not hash to the same slot"), (False, "non local key")):
        undeclared = other_slot_key(redis_cluster, tag, same_node=same_node)
        with pytest.raises(redis.ResponseError, match=error):
            admin.eval(f"#!lua\nreturn redis.call('GET', '{undeclared}')", 1, f"{tag}:declared")
    # without the shebang a key of another slot on the same node works by accident
    undeclared = other_slot_key(redis_cluster, tag, same_node=True)
    assert admin.eval(f"return redis.call('SET', '{undeclared}', 'v')", 1, f"{tag}:declared") == "OK"


def test_a_shebang_script_may_touch_an_undeclared_key_of_its_own_slot(redis_cluster: RedisCluster) -> None:
    """Redis 7.0 checks slots, not declarations: this is what a test of ours cannot catch on Redis's side."""
    node = redis_cluster.primaries()[1]
    tag = redis_cluster.hash_tag_for(node)
    script = f"#!lua\nreturn redis.call('SET', '{tag}:undeclared', 'v')"
    assert redis_cluster.client(node).eval(script, 1, f"{tag}:declared") == "OK"


def test_a_shebang_script_spublishes_only_to_a_channel_of_its_slot(redis_cluster: RedisCluster) -> None:
    node = redis_cluster.primaries()[2]
    tag = redis_cluster.hash_tag_for(node)
    admin = redis_cluster.client(node)
    assert admin.eval(f"#!lua\nreturn redis.call('SPUBLISH', '{tag}:events', 'm')", 1, f"{tag}:job") == 0
    elsewhere = other_slot_key(redis_cluster, tag, same_node=False)
    with pytest.raises(redis.ResponseError, match="non local key"):
        admin.eval(f"#!lua\nreturn redis.call('SPUBLISH', '{elsewhere}', 'm')", 1, f"{tag}:job")


async def test_a_transaction_pipeline_runs_scripts_and_commands_of_one_slot(redis_cluster: RedisCluster) -> None:
    client = AsyncRedisCluster.from_url(redis_cluster.url, decode_responses=True)
    tag = redis_cluster.hash_tag_for(redis_cluster.primaries()[1])
    try:
        sha = await client.script_load("#!lua\nreturn redis.call('INCR', KEYS[1])")
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(f"{tag}:n")
            pipe.evalsha(sha, 1, f"{tag}:n")
            pipe.evalsha(sha, 1, f"{tag}:n")
            pipe.hset(f"{tag}:h", mapping={"x": "1"})
            assert (await pipe.execute())[1:] == [1, 2, 1]
    finally:
        await client.aclose()


async def test_a_primary_killed_fails_over_to_its_replica_with_acknowledged_writes(
    redis_cluster_ha: RedisCluster,
) -> None:
    cluster = redis_cluster_ha
    victim = next(node for node in cluster.primaries() if cluster.replicas_of(node))
    tag = cluster.hash_tag_for(victim)
    client = AsyncRedisCluster.from_url(cluster.url, decode_responses=True)
    try:
        for i in range(20):
            await client.set(f"{tag}:k{i}", str(i))
        # WAIT on the victim itself: every write above is on its replica before the kill
        assert cluster.command(victim, "WAIT", 1, 0) == 1
        cluster.kill(victim)
        promoted = await asyncio.to_thread(cluster.wait_failover, victim, 20)
        assert promoted.port in {node.port for node in cluster.primaries()}
        assert victim.port not in {node.port for node in cluster.primaries()}
        assert cluster.primary_for_slot(key_slot(tag.encode())).port == promoted.port
        assert [await client.get(f"{tag}:k{i}") for i in range(20)] == [str(i) for i in range(20)]
    finally:
        await client.aclose()


async def test_a_cluster_pubsub_resubscribes_by_itself_after_a_failover(redis_cluster_ha: RedisCluster) -> None:
    """One ClusterPubSub holds shard channels on every node; kept polling, it follows a failover by itself and
    says so with a fresh ``ssubscribe`` message. What was published in between is lost (the caller re-reads)."""
    cluster = redis_cluster_ha
    victim = next(node for node in cluster.primaries() if cluster.replicas_of(node))
    channels = [f"{cluster.hash_tag_for(node)}:events" for node in cluster.primaries()]
    moved = channels[[node.port for node in cluster.primaries()].index(victim.port)]
    client = AsyncRedisCluster.from_url(cluster.url, decode_responses=True)
    pubsub = client.pubsub()
    try:
        await pubsub.ssubscribe(*channels)
        for channel in channels:
            assert await client.spublish(channel, "before") == 1
        seen = await read_messages(pubsub, lambda got: len([m for m in got if m["type"] == "smessage"]) == 3)
        assert {m["channel"] for m in seen if m["type"] == "smessage"} == set(channels)

        cluster.kill(victim)
        polling = asyncio.create_task(read_messages(pubsub, lambda got: any(
            m["type"] == "smessage" and m["data"] == "after" for m in got), timeout_s=30))  # fmt: skip
        await asyncio.to_thread(cluster.wait_failover, victim, 20)
        deadline = time.monotonic() + 10
        while await client.spublish(moved, "after") == 0:  # until the pubsub has resubscribed on the new primary
            assert time.monotonic() < deadline, "the cluster pubsub never resubscribed after the failover"
            await asyncio.sleep(0.05)
        after = await polling
        assert {"type": "ssubscribe", "channel": moved} in [{"type": m["type"], "channel": m["channel"]} for m in after]
    finally:
        await pubsub.aclose()
        await client.aclose()


async def read_messages(
    pubsub: ClusterPubSub, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """Poll ``get_sharded_message`` until ``done(messages)``; every message, subscribe confirmations included."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while not done(got):
        assert time.monotonic() < deadline, f"messages so far: {got}"
        message = await pubsub.get_sharded_message(timeout=0.1)
        if message:
            got.append(message)
    return got
