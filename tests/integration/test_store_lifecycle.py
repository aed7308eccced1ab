"""The job lifecycle in the store against a real Redis: the per-tenant index and its cursors, deadlines (the sweep,
a late result), retention, erasure, and usage counted once per transition."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aic.core.enums import JobStatus, Priority, Stage
from aic.store import keys, listing
from aic.store.connection import keyspace
from aic.store.deadlines import DeadlineSweep
from aic.store.jobs import JobStore, NewJob
from aic.store.listing import JobFilter, JobIndex
from aic.store.queue import QueueConsumer
from aic.store.transitions import Completion, JobTransitions
from aic.store.usage import UsageStore, day_of
from conftest import RedisTarget, on_every_primary
from redis.asyncio import Redis

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
async def redis(redis_target: RedisTarget) -> AsyncIterator[Redis]:
    """A client of a standalone Redis (the seed's key names), then of the session's Redis Cluster (16 shards)."""
    client = redis_target.connect()
    await client.hset(keyspace(client).model_routes, "latest", "efficientnet-lite0")
    try:
        yield client
    finally:
        await client.aclose()


def new_job(tenant: str = "acme", **options: object) -> NewJob:
    return NewJob(
        job_id=str(uuid.uuid4()),
        tenant=tenant,
        image=b"pixels",
        image_metadata={"format": "JPEG"},
        priority=Priority.HIGH,
        model_version="latest",
        metadata={"k": "v"},
        callback_url="https://hooks.example/aic",
        **options,  # type: ignore[arg-type]
    )


async def every_page(index: JobIndex, tenant: str, limit: int, where: JobFilter | None = None) -> list[list[str]]:
    pages, after = [], None
    while True:
        jobs, after = await index.page(tenant, limit, where or JobFilter(), after)
        pages.append([job.job_id for job in jobs])
        if after is None:
            return pages


async def held(redis: Redis) -> list[Completion]:
    """Every queued job (of every shard) taken by a test consumer, as a dispatcher holds it."""
    consumer = QueueConsumer(redis, "test")
    await consumer.ensure_groups()
    entries = [
        e
        for shard in keyspace(redis).all_shards()
        for e in (await consumer.read({Priority.HIGH: 100}, shard))[Priority.HIGH]
    ]
    return [Completion(t.job, t.entry, b'{"predictions": []}') for t in await JobTransitions(redis).take(entries)
            if t.job is not None]  # fmt: skip


async def job_keys(redis: Redis, job_id: str) -> set[str]:
    """Every key of one job left in Redis (any layout: the id is in each of its names)."""
    return {k.decode() for k in await on_every_primary(redis, "KEYS", f"job:*{job_id}*")}


async def counters(redis: Redis, tenant: str = "acme") -> dict[str, float]:
    raw = await redis.hgetall(keys.usage(tenant, day_of()))
    return {k.decode(): float(v) for k, v in raw.items()}


# -- the index ------------------------------------------------------------------------------------------------


async def test_pages_are_newest_first_and_stable_while_jobs_arrive(redis: Redis) -> None:
    store, index = JobStore(redis), JobIndex(redis)
    first = [new_job() for _ in range(7)]
    for job in first:
        await store.create([job])
    # one millisecond apart, in creation order (jobs created within one millisecond are ordered by id instead)
    minute_ago = int(time.time() * 1000) - 60_000  # (a score older than any job can live would be trimmed)
    await redis.zadd(keys.tenant_jobs("acme"), {job.job_id: minute_ago + i for i, job in enumerate(first)})
    page, after = await index.page("acme", 3, JobFilter())
    assert after is not None
    arrived = [new_job() for _ in range(4)]
    for job in arrived:  # newer than every job of the first page: before the cursor, never on a later page
        await store.create([job])
    rest = [page]
    while after is not None:
        jobs, after = await index.page("acme", 3, JobFilter(), after)
        rest.append(jobs)
    seen = [job.job_id for jobs in rest for job in jobs]
    assert seen == [job.job_id for job in reversed(first)]
    assert [len(jobs) for jobs in rest] == [3, 3, 1]


async def test_jobs_created_in_the_same_millisecond_are_each_listed_once(redis: Redis) -> None:
    store, index = JobStore(redis), JobIndex(redis)
    jobs = [new_job() for _ in range(9)]
    await store.create(jobs[:5])
    await store.create(jobs[5:])
    await redis.zadd(keys.tenant_jobs("acme"), {job.job_id: 1_700_000_000_000 for job in jobs})  # one score for all
    pages = await every_page(index, "acme", 2)
    listed = [job_id for page in pages for job_id in page]
    assert listed == sorted((job.job_id for job in jobs), reverse=True)  # ties: by id, newest-first order kept


async def test_another_tenants_jobs_are_never_listed(redis: Redis) -> None:
    store, index = JobStore(redis), JobIndex(redis)
    mine, theirs = new_job("acme"), new_job("globex")
    await store.create([mine])
    await store.create([theirs])
    assert await every_page(index, "acme", 10) == [[mine.job_id]]
    assert await every_page(index, "globex", 10) == [[theirs.job_id]]


async def test_a_filter_that_is_not_indexed_examines_a_bounded_number_of_entries_per_page(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, index = JobStore(redis), JobIndex(redis)
    jobs = [new_job() for _ in range(12)]
    for job in jobs:
        await store.create([job])
    cancelled = [jobs[1], jobs[10]]
    for job in cancelled:
        await store.cancel(await store.get(job.job_id))
    monkeypatch.setattr(listing, "SCAN_BUDGET", 4)
    pages = await every_page(index, "acme", 10, JobFilter(status=JobStatus.CANCELLED))
    assert len(pages) >= 3  # 12 entries, at most 4 examined a page: short pages with a cursor, then the end
    assert [job_id for page in pages for job_id in page] == [jobs[10].job_id, jobs[1].job_id]


async def test_the_creation_window_is_the_index_range(redis: Redis) -> None:
    store, index = JobStore(redis), JobIndex(redis)
    jobs = [new_job() for _ in range(3)]
    for job in jobs:
        await store.create([job])
    await redis.zadd(keys.tenant_jobs("acme"), {job.job_id: 1_000 * (i + 1) for i, job in enumerate(jobs)})
    where = JobFilter(created_after_ms=2_000, created_before_ms=3_000)
    assert await every_page(index, "acme", 10, where) == [[jobs[1].job_id]]


async def test_entries_of_expired_jobs_are_trimmed_when_a_page_meets_them(redis: Redis) -> None:
    names = keyspace(redis)
    store, index = JobStore(redis), JobIndex(redis)
    kept, expired = new_job(), new_job()
    await store.create([kept])
    await store.create([expired])
    await redis.delete(names.job_status(expired.job_id))  # as its TTL would
    assert await every_page(index, "acme", 10) == [[kept.job_id]]
    assert await redis.zscore(keys.tenant_jobs("acme"), expired.job_id) is None
    assert await redis.ttl(keys.tenant_jobs("acme")) > 0  # the index itself expires with an idle tenant


# -- deadlines, retention -------------------------------------------------------------------------------------


async def test_the_sweep_times_out_a_running_job_once_and_its_late_result_is_discarded(redis: Redis) -> None:
    store, transitions, sweep = JobStore(redis), JobTransitions(redis), DeadlineSweep(redis)
    names = keyspace(redis)
    job = new_job(deadline_s=30)
    await store.create([job])
    [item] = await held(redis)
    assert await transitions.start([item]) == [True]
    deadline_ms = (await store.get(job.job_id)).deadline_ms
    assert await sweep.sweep(now_ms=deadline_ms - 1) == []  # not yet
    assert [j.job_id for j in await sweep.sweep(now_ms=deadline_ms)] == [job.job_id]
    assert await sweep.sweep(now_ms=deadline_ms + 1) == []  # once
    ended = await store.get(job.job_id)
    assert (ended.status, ended.error_code) == ("failed", "TIMEOUT")
    assert await transitions.complete([item], through=Stage.INFERENCE) == [False]  # the late result
    assert await store.result(job.job_id) is None
    assert (await store.get(job.job_id)).status == "failed"
    outbox = await redis.xrange(names.webhook_outbox(names.shard(job.job_id)))
    assert [fields[b"event"] for _, fields in outbox] == [b"failed"]  # job.failed, once
    assert await redis.exists(names.job_image(job.job_id)) == 0
    assert await redis.zscore(names.deadlines(names.shard(job.job_id)), job.job_id) is None
    counts = await counters(redis)
    assert (counts.get("failed"), counts.get("timed_out"), counts.get("completed")) == (1, 1, None)


async def test_a_live_job_lives_past_its_deadline_only_by_the_slack(redis: Redis) -> None:
    names = keyspace(redis)
    store = JobStore(redis)
    job = new_job(deadline_s=90)
    await store.create([job])
    ttl = await redis.ttl(names.job_status(job.job_id))
    assert 90 < ttl <= 90 + keys.LIVE_SLACK_S
    assert 90 < await redis.ttl(names.job_image(job.job_id)) <= 90 + keys.LIVE_SLACK_S
    status = (await store.get(job.job_id)).status_response()
    assert status.deadline_at is not None and status.expires_at is None


async def test_an_ended_job_lives_as_long_as_its_retention(redis: Redis) -> None:
    names = keyspace(redis)
    store, transitions = JobStore(redis), JobTransitions(redis)
    job = new_job(retention_s=40)
    await store.create([job])
    [item] = await held(redis)
    await transitions.start([item])
    assert await transitions.complete([item]) == [True]
    for key in (names.job_status(job.job_id), names.job_result(job.job_id), names.job_metadata(job.job_id)):
        assert 0 < await redis.ttl(key) <= 40, key
    status = (await store.get(job.job_id)).status_response()
    assert status.expires_at is not None
    left_s = (datetime.fromisoformat(status.expires_at) - datetime.fromisoformat(status.updated_at)).total_seconds()
    assert left_s == 40
    assert datetime.fromisoformat(status.expires_at) > datetime.now(UTC)


# -- erasure ---------------------------------------------------------------------------------------------------


async def test_purge_erases_every_key_of_a_dead_lettered_job_and_its_entries(redis: Redis) -> None:
    names = keyspace(redis)
    store, transitions = JobStore(redis), JobTransitions(redis)
    job, other = new_job(), new_job()
    await store.create([job])
    await store.create([other])
    items = await held(redis)
    await transitions.fail([i for i in items if i.job.job_id == job.job_id], "no", "MODEL_ERROR", dead_letter=True)
    await redis.rpush(names.job_webhooks(job.job_id), "{}")
    await store.purge(await store.get(job.job_id))
    assert await job_keys(redis, job.job_id) == set()
    assert await redis.hexists(names.dead_letter_index(names.shard(job.job_id)), job.job_id) == 0
    assert await redis.xlen(names.dead_letter_stream(names.shard(job.job_id))) == 0
    assert await redis.zscore(keys.tenant_jobs("acme"), job.job_id) is None
    assert await redis.zscore(names.deadlines(names.shard(job.job_id)), job.job_id) is None
    assert (await store.get(other.job_id)).status == "pending"  # the other job is untouched


async def test_purging_a_live_job_cancels_it_first_and_a_late_dispatcher_leaves_nothing_behind(redis: Redis) -> None:
    store, transitions = JobStore(redis), JobTransitions(redis)
    job = new_job()
    await store.create([job])
    [item] = await held(redis)
    await store.purge(await store.get(job.job_id))
    assert await transitions.start([item]) == [False]  # a dispatcher that took it just before
    assert await transitions.complete([item]) == [False]
    assert await job_keys(redis, job.job_id) == set()
    assert (await counters(redis)).get("cancelled") == 1


# -- usage -----------------------------------------------------------------------------------------------------


async def test_a_redelivered_job_is_counted_once(redis: Redis) -> None:
    store, transitions = JobStore(redis), JobTransitions(redis)
    jobs = [new_job(), new_job()]
    await store.create(jobs)
    items = await held(redis)
    timed = [Completion(i.job, i.entry, i.result, model="efficientnet-lite0", inference_ms=12.5) for i in items]
    await transitions.start(timed)
    assert await transitions.complete(timed) == [True, True]
    assert await transitions.complete(timed) == [False, False]  # redelivered after the first finish
    assert await transitions.fail(timed, "again", "MODEL_ERROR") == [False, False]
    counts = await counters(redis)
    assert counts == {
        "submitted": 2,
        "image_bytes": 2 * len(b"pixels"),
        "completed": 2,
        "jobs:efficientnet-lite0": 2,
        "inference_ms:efficientnet-lite0": 25,
    }
    [report] = await UsageStore(redis).report(["acme"], datetime.now(UTC).date(), datetime.now(UTC).date(), "model")
    assert report.models is not None
    assert [(m.model, m.jobs, m.inference_ms) for m in report.models] == [("efficientnet-lite0", 2, 25.0)]
    assert await redis.ttl(keys.usage("acme", day_of())) > 90 * 86400
