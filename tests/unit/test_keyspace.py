"""The key layout: the seed's names on one Redis, one slot per job and its shard elsewhere, shards spread evenly."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from aic.core.settings import CLUSTER_DEFAULT_SHARDS, RedisSettings, SettingsError
from aic.store.connection import bind
from aic.store.jobs import JobStore
from aic.store.keys import LEGACY, Keyspace, shard_of, shard_tags
from redis.asyncio import Redis
from redis.crc import key_slot

JOB = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"


def test_one_redis_with_one_shard_keeps_the_seed_names() -> None:
    assert LEGACY.job_status(JOB) == f"job:{{{JOB}}}:status"
    assert LEGACY.job_events(JOB) == f"job:{{{JOB}}}:events"
    assert LEGACY.queues() == ("queue:urgent", "queue:high", "queue:normal", "queue:low")
    assert (LEGACY.dead_letter_stream(), LEGACY.dead_letter_index()) == ("queue:dead", "queue:dead:index")
    assert (LEGACY.webhook_outbox(), LEGACY.webhook_scheduled()) == ("webhooks:outbox", "webhooks:scheduled")
    assert LEGACY.model_routes == "models:routes"
    assert LEGACY.hub_channel("t", 3) == "aic:hub:t"
    assert LEGACY.job_id_of_events(LEGACY.job_events(JOB)) == JOB


@pytest.mark.parametrize("layout", [Keyspace(16, cluster=True), Keyspace(4), Keyspace(1, cluster=True)])
def test_every_key_of_a_job_shares_a_slot_with_its_shards_queues(layout: Keyspace) -> None:
    for _ in range(200):
        job = str(uuid.uuid4())
        shard = layout.shard(job)
        names = [layout.job_status(job), layout.job_result(job), layout.job_image(job), layout.job_metadata(job)]
        names += [layout.job_webhooks(job), layout.job_events(job), layout.direct_upload(job)]
        names += [*layout.queues(shard), layout.dead_letter_stream(shard), layout.dead_letter_index(shard)]
        names += [layout.webhook_outbox(shard), layout.webhook_scheduled(shard), layout.webhook_delivery("w", shard)]
        if layout.cluster:
            names.append(layout.hub_channel("token", shard))
        assert len({key_slot(name.encode()) for name in names}) == 1, names
        assert layout.job_id_of_events(layout.job_events(job)) == job


def test_the_models_hashes_share_a_slot_on_a_cluster() -> None:
    layout = Keyspace(16, cluster=True)
    names = [layout.model_weights, layout.model_routes, layout.model_specs, layout.model_requested]
    names += [layout.model_overrides, layout.model_compare, layout.model_rollouts]
    assert len({key_slot(name.encode()) for name in names}) == 1


@pytest.mark.parametrize("shards", [1, 3, 16, 48, 64, 1024])
def test_shard_tags_fall_in_equal_parts_of_the_slot_space(shards: int) -> None:
    tags = shard_tags(shards)
    assert len(set(tags)) == shards
    for i, tag in enumerate(tags):
        assert i * 16384 // shards <= key_slot(tag.encode()) < (i + 1) * 16384 // shards


@pytest.mark.parametrize("primaries", [3, 6])
def test_shards_spread_evenly_over_primaries_holding_equal_slot_ranges(primaries: int) -> None:
    """48 shards: the same number on every primary of 1, 3 or 6 (16 shards on 3 primaries: 6, 5, 5)."""
    owner = [slot * primaries // 16384 for slot in range(16384)]
    per_primary = Counter(owner[key_slot(tag.encode())] for tag in shard_tags(48))
    assert set(per_primary.values()) == {48 // primaries}


def test_job_ids_spread_evenly_over_shards() -> None:
    counts = Counter(shard_of(str(uuid.uuid4()), 16) for _ in range(16_000))
    assert len(counts) == 16 and max(counts.values()) / min(counts.values()) < 1.25
    assert shard_of("f" + JOB[1:], 16) == 15 and shard_of("0" + JOB[1:], 16) == 0  # the first hex digit


def test_settings_pick_the_shards_and_refuse_nonsense() -> None:
    assert RedisSettings().shards == 1
    assert RedisSettings(redis_cluster=True).shards == CLUSTER_DEFAULT_SHARDS
    assert RedisSettings(redis_cluster=True, queue_shards=48).shards == 48
    with pytest.raises(SettingsError, match="QUEUE_SHARDS"):
        RedisSettings(queue_shards=5000)
    with pytest.raises(SettingsError, match="REDIS_DB must be 0"):
        RedisSettings(redis_cluster=True, redis_db=2)


def test_a_request_of_several_jobs_gets_ids_of_one_shard() -> None:
    store = JobStore(bind(Redis(), Keyspace(16, cluster=True)))
    ids = store.new_ids(10)
    assert len(set(ids)) == 10 and len({shard_of(job_id, 16) for job_id in ids}) == 1
