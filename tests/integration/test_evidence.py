"""Evidence and weight overrides against a real redis-server: counts land in expiring, time-bucketed keys (one key
per write) and read back by window; a rollout's override wins over the requested weight, survives every
re-publish, and goes with the model."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
from aic.core.settings import RedisSettings
from aic.local.modelbuild import default_spec
from aic.store import keys
from aic.store.connection import connect
from aic.store.evidence import BUCKET_S, TTL_S, EvidenceStore, Tally, overview
from aic.store.routes import RouteStore
from redis.asyncio import Redis
from stack import RunningRedis

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
async def redis(own_redis: RunningRedis) -> AsyncIterator[Redis]:
    client = connect(RedisSettings(redis_url=own_redis.url))
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


async def weights(redis: Redis, alias: str) -> dict[str, int]:
    raw = await redis.hget(keys.LEGACY.model_weights, alias)
    return dict(json.loads(raw)) if raw else {}


async def test_counts_land_in_expiring_buckets_and_read_back_by_window(redis: Redis) -> None:
    store = EvidenceStore(redis)
    now = time.time()
    earlier = now - 3 * BUCKET_S
    tally = Tally()
    for _ in range(3):
        tally.outcome("latest", "v2", now, 0.020)
    tally.outcome("latest", "v2", now, None, error=True)
    tally.outcome("latest", "v2", earlier, 0.020)
    tally.comparison("latest", "v2", "v1", now, (True, 1.0, 0.02))
    tally.comparison("latest", "v2", "v1", now, (False, 0.6, -0.1))
    tally.comparison("latest", "v2", "v1", now, None)
    await store.record(tally)
    await store.record(tally)  # a second flush adds
    keys_written = [key async for key in redis.scan_iter("models:*:latest:*")]
    assert len(keys_written) == 3  # two outcome buckets, one agreement bucket
    ttls = [await redis.ttl(key) for key in keys_written]
    assert all(0 < ttl <= TTL_S for ttl in ttls), ttls
    recent = await store.outcomes("latest", "v2", now - 1)
    assert (recent.jobs, recent.errors, recent.p95_ms) == (6, 2, 25.0)
    assert (await store.outcomes("latest", "v2", earlier)).jobs == 8
    agreement = await store.agreement("latest", "v2", "v1", now - 1)
    assert (agreement.compared, agreement.top1, agreement.errors) == (4, 2, 2)
    assert agreement.agreement == 0.5 and agreement.top5_overlap == 0.8
    assert agreement.confidence_delta == pytest.approx(-0.04)


async def test_an_override_wins_over_every_republish_and_goes_with_the_model(redis: Redis) -> None:
    routes = RouteStore(redis)
    v1 = msgspec.structs.replace(default_spec(), name="v1", aliases=("latest",))
    v2 = msgspec.structs.replace(default_spec(), name="v2", aliases=("latest",))
    await routes.publish(v1, 100)
    await routes.publish(v2, 100, "init:0")  # a version with a rollout starts at 0
    assert await weights(redis, "latest") == {"v1": 100, "v2": 0}
    await routes.publish(v2, 100, "init:0")  # its resync: the override stays
    await routes.override("v2", 2500)
    await routes.override("v1", 7500)
    await routes.publish(v1, 100)  # the previous version's resync does not undo the rollout
    assert await weights(redis, "latest") == {"v1": 7500, "v2": 2500}
    await routes.override("v2", -1)  # promoted: its requested weight, and init: no longer resets it
    await routes.publish(v2, 100, "init:0")
    await routes.override("v1", None)
    assert await weights(redis, "latest") == {"v1": 100, "v2": 100}
    await routes.withdraw("v2")
    assert (
        await redis.hget(keys.LEGACY.model_overrides, "v2") is None
        and await redis.hget(keys.LEGACY.model_requested, "v2") is None
    )
    assert await routes.override("v2", 5) is False  # not published: nothing to override


async def test_the_overview_shows_weights_comparisons_and_rollouts(redis: Redis) -> None:
    routes, store = RouteStore(redis), EvidenceStore(redis)
    await routes.publish(msgspec.structs.replace(default_spec(), name="v1", aliases=("latest",)), 100)
    await routes.publish(msgspec.structs.replace(default_spec(), name="v2", aliases=("latest",)), 0)
    await store.set_comparison("v2", {"mode": "shadow", "percent": 10, "aliases": ["latest"]})
    await store.set_rollout("v3", {"phase": "RolledBack", "step": 1})
    tally = Tally()
    tally.comparison("latest", "v2", "v1", time.time(), (True, 1.0, 0.0))
    await store.record(tally)
    found = await overview(redis)
    assert [(v["version"], v["weight"]) for v in found["versions"]] == [("v1", 100), ("v2", 0)]
    [comparison] = found["comparisons"]
    assert (comparison["candidate"], comparison["reference"], comparison["agreement"]) == ("v2", "v1", 1.0)
    assert found["rollouts"] == [{"version": "v3", "phase": "RolledBack", "step": 1}]
