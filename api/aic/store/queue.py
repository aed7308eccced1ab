"""The queue: one Redis stream per priority and queue shard, read through the consumer group ``dispatchers``.

With one shard (the default on one Redis) the streams are the seed's ``queue:<priority>``; on a cluster each shard
has its own four streams in its own slot (``aic.store.keys``), and a dispatcher reads all of them.

``QueueConsumer`` is a dispatcher's side (reads, lease renewal, reclaiming and handing back entries),
``QueueStats`` what operators see (depth, age, dead letters); the API's backpressure is part of creating jobs
(``JobStore.create``). An entry stays in the group's pending list until the job's result or failure is written:
the job store acknowledges it in the same atomic step (``finish.lua``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from aic.core.enums import Priority
from aic.core.schemas import DeadLetter, QueueInfo
from aic.core.timeutil import iso
from aic.store import keys, layout
from aic.store.connection import guarded, is_cluster, keyspace, previous_keyspace

_Entries = list[tuple[bytes, dict[bytes, bytes]]]


@dataclass(frozen=True)
class Entry:
    """One queue entry: a job waiting in, or taken from, the stream of its priority."""

    stream: str
    entry_id: str
    job_id: str
    names: keys.Keyspace | None = None
    """The key layout of a stream written before a migration (``KEY_LAYOUT_BEFORE``), whose job's keys are named
    the same way; None: the deployment's."""


def _entries(
    reply: Iterable[tuple[object, list[tuple[object, dict[bytes, bytes] | None]]]] | None,
    names: keys.Keyspace | None = None,
) -> list[Entry]:
    found: list[Entry] = []
    for stream, messages in reply or []:
        name = stream.decode() if isinstance(stream, bytes) else str(stream)
        for entry_id, fields in messages:
            eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            found.append(Entry(name, eid, (fields or {}).get(b"job_id", b"").decode(), names))
    return found


def queue_shards(redis: Redis) -> list[tuple[keys.Keyspace, int, keys.Keyspace | None]]:
    """Every queue shard to read: the deployment's, then while migrating (``KEY_LAYOUT_BEFORE``) the previous
    layout's, as (its names, its shard, the names its entries carry). A standalone layout's queues on a cluster are
    left out: its scripts would span slots (such a migration drains the queues first, README "Scaling")."""
    current, previous = keyspace(redis), previous_keyspace(redis)
    found: list[tuple[keys.Keyspace, int, keys.Keyspace | None]] = [(current, s, None) for s in current.all_shards()]
    if previous is not None and (previous.sharded or not is_cluster(redis)):
        found += [(previous, s, previous) for s in previous.all_shards()]
    return found


def _by_stream(entries: Iterable[Entry]) -> dict[str, list[str | bytes | int | memoryview[int]]]:
    grouped: dict[str, list[str | bytes | int | memoryview[int]]] = defaultdict(list)
    for entry in entries:
        grouped[entry.stream].append(entry.entry_id)
    return grouped


@guarded
class QueueConsumer:
    """Reads entries for one consumer of the group (one dispatcher process)."""

    def __init__(self, redis: Redis, consumer: str) -> None:
        self.redis = redis
        self.consumer = consumer
        self.keys = keyspace(redis)
        self._shards = queue_shards(redis)

    @property
    def shards(self) -> int:
        """How many shards a dispatcher reads in turn: the deployment's, and while migrating the previous layout's
        after them (``shard`` arguments count through both)."""
        return len(self._shards)

    async def ensure_groups(self) -> None:
        """The consumer group on every queue of every shard (and the dead-letter streams), created where missing;
        first, the layout guard (``aic.store.layout``: LayoutMismatch for a process naming keys unlike the data)."""
        await layout.check_once(self.redis)
        for names, shard, _ in self._shards:
            for stream in [*names.queues(shard), names.dead_letter_stream(shard)]:
                try:
                    await self.redis.xgroup_create(stream, keys.QUEUE_GROUP, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    async def read(self, counts: Mapping[Priority, int], shard: int = 0) -> dict[Priority, list[Entry]]:
        """New entries of one shard, up to ``counts[priority]`` of each priority, in one round trip (no blocking)."""
        wanted = [p for p in Priority if counts.get(p, 0) > 0]
        names, local, tag = self._shards[shard]
        async with self.redis.pipeline(transaction=False) as pipe:
            for priority in wanted:
                stream = names.queue(priority, local)
                pipe.xreadgroup(keys.QUEUE_GROUP, self.consumer, {stream: ">"}, count=counts[priority])
            replies = await pipe.execute()
        return {priority: _entries(reply, tag) for priority, reply in zip(wanted, replies, strict=True)}

    async def read_blocking(self, count: int, block_ms: int, shard: int = 0) -> list[Entry]:
        """Up to ``count`` new entries of one shard, of any priority, waiting up to ``block_ms`` for the first."""
        names, local, tag = self._shards[shard]
        reply = await self.redis.xreadgroup(
            keys.QUEUE_GROUP, self.consumer, dict.fromkeys(names.queues(local), ">"), count=count, block=block_ms
        )
        return _entries(reply, tag)  # type: ignore[arg-type]

    async def reclaim(self, priority: Priority, idle_ms: int, count: int, shard: int = 0) -> list[Entry]:
        """Entries of ``priority`` in one shard another consumer took but has not renewed for ``idle_ms``: ours
        now."""
        names, local, tag = self._shards[shard]
        stream = names.queue(priority, local)
        _next, messages, _deleted = await self.redis.xautoclaim(
            stream, keys.QUEUE_GROUP, self.consumer, idle_ms, "0-0", count=count
        )
        return _entries([(stream, messages)], tag)

    async def renew(self, entries: Iterable[Entry]) -> None:
        """Reset the idle time of entries we hold, so no live dispatcher reclaims a slow job."""
        for stream, ids in _by_stream(entries).items():
            await self.redis.xclaim(stream, keys.QUEUE_GROUP, self.consumer, 0, ids, justid=True)

    async def release(self, entries: Iterable[Entry], idle_ms: int) -> None:
        """Hand entries back: mark them idle for ``idle_ms`` (a whole lease), so any live dispatcher claims them
        at once instead of waiting for the lease to run out."""
        for stream, ids in _by_stream(entries).items():
            await self.redis.xclaim(stream, keys.QUEUE_GROUP, self.consumer, 0, ids, idle=idle_ms, justid=True)


def _entry_ms(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[0])


def _dead_letter(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    body: dict[str, Any] = msgspec.json.decode(fields.get(b"job", b"{}"))
    return DeadLetter(
        entry_id=entry_id.decode(),
        job_id=str(body.get("job_id", "")),
        stream=str(body.get("stream", "")),
        error=str(body.get("error", "")),
        code=str(body.get("code", "")),
        dead_at=iso(datetime.fromtimestamp(_entry_ms(entry_id) / 1000, UTC)),
    )


def _info(priority: Priority, length: int, groups: list[dict[Any, Any]], oldest: _Entries, now_ms: int) -> QueueInfo:
    waiting, in_flight = length, 0  # no group yet: no dispatcher has read the stream, every entry waits
    if length:
        for group in groups:
            if group["name"] in (keys.QUEUE_GROUP, keys.QUEUE_GROUP.encode()):
                in_flight = int(group.get("pending") or 0)
                lag = group.get("lag")
                waiting = int(lag) if lag is not None else max(0, length - in_flight)
    age = round((now_ms - _entry_ms(oldest[0][0])) / 1000, 3) if oldest else None
    return QueueInfo(priority=priority, length=length, waiting=waiting, in_flight=in_flight, oldest_age_s=age)


@guarded
class QueueStats:
    """What an operator sees of the queue: depth, in flight and age per priority; the dead letters."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.keys = keyspace(redis)
        self._shards = [(names, shard) for names, shard, _ in queue_shards(redis)]
        """While migrating, the previous layout's queues too: a drain waits until they are empty."""

    async def infos(self, now_ms: int | None = None) -> list[QueueInfo]:
        """Depth, in flight and oldest age of every priority, summed over the shards: lengths and oldest entries in
        one round trip (per node), then the consumer group of each stream that holds entries (an empty stream
        has nothing waiting or in flight; one no dispatcher has read yet has no group: nothing in flight). No
        command that can fail goes into the first round trip: a cluster pipeline retries a node's whole batch on
        an error reply."""
        wanted = [(priority, names.queue(priority, shard)) for priority in Priority for names, shard in self._shards]
        async with self.redis.pipeline(transaction=False) as pipe:
            for _priority, stream in wanted:
                pipe.xlen(stream)
                pipe.xrange(stream, count=1)
            replies = await pipe.execute()
        lengths, oldest = [int(n) for n in replies[::2]], replies[1::2]
        busy = [i for i, length in enumerate(lengths) if length]
        groups: dict[int, list[dict[Any, Any]]] = {}
        if busy:
            async with self.redis.pipeline(transaction=False) as pipe:
                for i in busy:
                    pipe.xinfo_groups(wanted[i][1])
                found = await pipe.execute(raise_on_error=False)
            for i, reply in zip(busy, found, strict=True):
                groups[i] = [] if isinstance(reply, ResponseError) else reply
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        per_priority: dict[Priority, list[QueueInfo]] = defaultdict(list)
        for i, (priority, _stream) in enumerate(wanted):
            per_priority[priority].append(_info(priority, lengths[i], groups.get(i, []), oldest[i], now_ms))
        return [_sum(priority, per_priority[priority]) for priority in Priority]

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """The newest ``limit`` dead letters of all shards, newest first."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for names, shard in self._shards:
                pipe.xrevrange(names.dead_letter_stream(shard), count=limit)
            replies = cast(list[_Entries], await pipe.execute())
        entries = sorted((entry for reply in replies for entry in reply), key=lambda e: _entry_key(e[0]), reverse=True)
        return [_dead_letter(entry_id, fields) for entry_id, fields in entries[:limit]]

    async def dead_letter_count(self) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for names, shard in self._shards:
                pipe.xlen(names.dead_letter_stream(shard))
            return sum(int(n) for n in await pipe.execute())


def _entry_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.decode().partition("-")
    return int(ms), int(seq or 0)


def _sum(priority: Priority, infos: list[QueueInfo]) -> QueueInfo:
    """One priority's figures over its shards: counts added, the oldest entry's age."""
    ages = [info.oldest_age_s for info in infos if info.oldest_age_s is not None]
    return QueueInfo(
        priority=priority,
        length=sum(info.length for info in infos),
        waiting=sum(info.waiting for info in infos),
        in_flight=sum(info.in_flight for info in infos),
        oldest_age_s=max(ages) if ages else None,
    )
