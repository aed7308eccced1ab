"""A dispatcher's side of the queue: weighted reads, lease renewal, reclaiming and releasing entries.

Every entry read through the consumer group stays in the group's pending list until the job's result or
failure is written (the job store acknowledges it in the same atomic step). While an entry is being worked
on its idle time is reset every third of the lease; an entry idle longer than the lease belongs to a dead
dispatcher and is claimed by a live one.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from aic import keys
from aic.enums import PRIORITY_WEIGHTS, Priority
from aic.settings import DispatcherSettings

log = logging.getLogger("aic.dispatcher")

STREAMS = [keys.queue(p) for p in Priority]  # most urgent first


@dataclass(frozen=True)
class Entry:
    stream: str
    entry_id: str
    job_id: str


def quotas(want: int) -> dict[str, int]:
    """Entries to take from each stream for a batch of ``want``: by weight, at least one each, so the least
    urgent queue always moves however full the others are."""
    total = sum(PRIORITY_WEIGHTS.values())
    return {keys.queue(p): max(1, want * w // total) for p, w in PRIORITY_WEIGHTS.items()}


def _entries(reply: Iterable[tuple[object, list[tuple[object, dict[bytes, bytes] | None]]]]) -> list[Entry]:
    found: list[Entry] = []
    for stream, messages in reply or []:
        name = stream.decode() if isinstance(stream, bytes) else str(stream)
        for entry_id, fields in messages:
            eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            found.append(Entry(name, eid, (fields or {}).get(b"job_id", b"").decode()))
    return found


class Intake:
    """Reads entries for one consumer (one dispatcher process) and tracks the ones it holds."""

    def __init__(self, redis: Redis, consumer: str, settings: DispatcherSettings) -> None:
        self.redis = redis
        self.consumer = consumer
        self.settings = settings
        self.held: dict[str, set[str]] = defaultdict(set)
        self._retry: list[Entry] = []
        self._last_reclaim = 0.0

    def count(self) -> int:
        return sum(len(ids) for ids in self.held.values())

    def hold(self, entry: Entry) -> None:
        self.held[entry.stream].add(entry.entry_id)

    def let_go(self, entry: Entry) -> None:
        self.held[entry.stream].discard(entry.entry_id)

    def retry_later(self, entries: Iterable[Entry]) -> None:
        """Entries still pending for us after a failure (e.g. Redis went away): take them again next."""
        self._retry.extend(entries)

    async def next_batch(self) -> list[Entry]:
        """Up to ``batch_max_size`` entries, most urgent first: own retries, reclaimed, then new ones."""
        want = self.settings.batch_max_size
        found, self._retry = self._retry[:want], self._retry[want:]
        if len(found) < want:
            found += await self._reclaim(want - len(found))
        if len(found) < want:
            found += await self._read_weighted(want - len(found))
        if not found:
            found = await self._read_blocking(want, block_ms=1000)
        if found and len(found) < want and self.settings.batch_max_wait_ms > 0:
            found += await self._read_blocking(want - len(found), block_ms=self.settings.batch_max_wait_ms)
        return found

    async def _read_weighted(self, want: int) -> list[Entry]:
        share = quotas(want)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in STREAMS:
                pipe.xreadgroup(keys.QUEUE_GROUP, self.consumer, {stream: ">"}, count=share[stream])
            replies = await pipe.execute()
        found = [e for reply in replies for e in _entries(reply)]
        if len(found) < want:  # spare room goes to the most urgent queue that has more
            for stream, reply in zip(STREAMS, replies, strict=True):
                got = len(_entries(reply))
                if got == share[stream]:
                    more = await self.redis.xreadgroup(
                        keys.QUEUE_GROUP, self.consumer, {stream: ">"}, count=want - len(found)
                    )
                    found += _entries(more)  # type: ignore[arg-type]
                if len(found) >= want:
                    break
        return found

    async def _read_blocking(self, want: int, block_ms: int) -> list[Entry]:
        reply = await self.redis.xreadgroup(
            keys.QUEUE_GROUP, self.consumer, dict.fromkeys(STREAMS, ">"), count=want, block=block_ms
        )
        return _entries(reply)  # type: ignore[arg-type]

    async def _reclaim(self, want: int) -> list[Entry]:
        """Entries a dispatcher took but stopped renewing (it died): they are ours now."""
        now = time.monotonic()
        if now - self._last_reclaim < self.settings.lease_ms / 4000:
            return []
        self._last_reclaim = now
        found: list[Entry] = []
        for stream in STREAMS:
            _next, messages, _deleted = await self.redis.xautoclaim(
                stream, keys.QUEUE_GROUP, self.consumer, self.settings.lease_ms, "0-0", count=want - len(found)
            )
            found += _entries([(stream, messages)])
            if len(found) >= want:
                break
        if found:
            log.info("reclaimed %d entries whose lease expired", len(found))
        return found

    async def renew(self) -> None:
        """Reset the idle time of every entry we hold, so no live dispatcher reclaims a slow job."""
        for stream, ids in list(self.held.items()):
            if ids:
                await self.redis.xclaim(stream, keys.QUEUE_GROUP, self.consumer, 0, list(ids), justid=True)

    async def release(self) -> None:
        """Hand back everything we hold (shutdown past its grace): mark it idle for a whole lease, so any live
        dispatcher claims it at once instead of waiting for the lease to run out."""
        for stream, ids in list(self.held.items()):
            if ids:
                await self.redis.xclaim(
                    stream, keys.QUEUE_GROUP, self.consumer, 0, list(ids), idle=self.settings.lease_ms, justid=True
                )
                log.info("released %d entries of %s", len(ids), stream)
        self.held.clear()
