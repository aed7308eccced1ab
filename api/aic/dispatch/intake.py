"""A dispatcher's intake: which queue entries to take next, and the leases of the ones it holds.

Every entry read through the consumer group stays in the group's pending list until the job's result or
failure is written (the job store acknowledges it in the same atomic step). While an entry is being worked
on its idle time is reset every third of the lease; an entry idle longer than the lease belongs to a dead
dispatcher and is claimed by a live one.

With several queue shards (a Redis Cluster) every batch visits the shards in turn from a start that moves past the
shard that filled the last batch, so a busy shard cannot starve the others; the priority weights hold within each
shard. One Redis command cannot wait on streams of several slots, so an idle dispatcher waits on one shard at a
time, briefly (``SHARDED_IDLE_BLOCK_MS``), and sweeps them all between waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aic.core.enums import PRIORITY_WEIGHTS, Priority
from aic.core.settings import DispatcherSettings
from aic.store.queue import Entry, QueueConsumer

log = logging.getLogger("aic.dispatcher")

SHARDED_IDLE_BLOCK_MS = 50
"""How long an idle dispatcher of a sharded queue waits on one shard before sweeping all of them again: the most a
job arriving on another shard waits for an idle dispatcher (plus one sweep)."""


def quotas(want: int) -> dict[Priority, int]:
    """Entries to take from each queue for a batch of ``want``: by weight, at least one each, so the least
    urgent queue always moves however full the others are."""
    total = sum(PRIORITY_WEIGHTS.values())
    return {p: max(1, want * w // total) for p, w in PRIORITY_WEIGHTS.items()}


class Intake:
    """Reads entries for one consumer (one dispatcher process) and tracks the ones it holds."""

    def __init__(self, queue: QueueConsumer, settings: DispatcherSettings) -> None:
        self.queue = queue
        self.settings = settings
        self.held: set[Entry] = set()
        self._retry: list[Entry] = []
        self._last_reclaim = 0.0
        self._start = 0
        """The shard the next batch reads first."""

    def count(self) -> int:
        return len(self.held)

    def hold(self, entry: Entry) -> None:
        self.held.add(entry)

    def let_go(self, entry: Entry) -> None:
        self.held.discard(entry)

    def retry_later(self, entries: Iterable[Entry]) -> None:
        """Entries still pending for us after a failure (Redis or the object store went away): take them again
        next; held meanwhile, so their leases are renewed and no peer takes them over (or counts a delivery)."""
        self._retry.extend(entries)
        self.held.update(entries)

    async def next_batch(self) -> list[Entry]:
        """Up to ``batch_max_size`` entries, most urgent first: own retries, reclaimed, then new ones."""
        want = self.settings.batch_max_size
        found, self._retry = self._retry[:want], self._retry[want:]
        self.held.difference_update(found)  # held again once loaded (``hold``), or dropped
        if len(found) < want:
            found += await self._reclaim(want - len(found))
        if len(found) < want:
            found += await self._read_all(want - len(found))
        shards = self.queue.shards
        if not found:
            if shards == 1:
                found = await self.queue.read_blocking(want, block_ms=1000)
            else:
                found = await self.queue.read_blocking(want, SHARDED_IDLE_BLOCK_MS, shard=self._start)
                self._start = (self._start + 1) % shards
        if found and len(found) < want and self.settings.batch_max_wait_ms > 0:
            if shards == 1:
                found += await self.queue.read_blocking(want - len(found), block_ms=self.settings.batch_max_wait_ms)
            else:
                await asyncio.sleep(self.settings.batch_max_wait_ms / 1000)
                found += await self._read_all(want - len(found))
        return found

    async def _read_all(self, want: int) -> list[Entry]:
        """Up to ``want`` new entries, weighted by priority within each shard, the shards in turn from ``_start``.
        The next read starts after the shard that filled this one: a busy shard fills a batch at most once per
        round, so a job of any other shard waits at most one batch per busy shard (moving the start by one shard
        per batch made the shards after a busy one wait until the start passed it: up to S batches)."""
        shards = self.queue.shards
        first = self._start
        self._start = (first + 1) % shards
        found: list[Entry] = []
        for i in range(shards):
            shard = (first + i) % shards
            found += await self._read_weighted(want - len(found), shard)
            if len(found) >= want:
                self._start = (shard + 1) % shards
                break
        return found

    async def _read_weighted(self, want: int, shard: int) -> list[Entry]:
        share = quotas(want)
        got = await self.queue.read(share, shard)
        found = [entry for priority in Priority for entry in got[priority]]
        # spare room goes to the most urgent queue that had as many as it was offered (it may have more)
        for priority in Priority:
            if len(found) >= want:
                break
            if len(got[priority]) == share[priority]:
                found += (await self.queue.read({priority: want - len(found)}, shard))[priority]
        return found

    async def _reclaim(self, want: int) -> list[Entry]:
        """Entries a dispatcher took but stopped renewing (it died): they are ours now."""
        now = time.monotonic()
        if now - self._last_reclaim < self.settings.lease_ms / 4000:
            return []
        self._last_reclaim = now
        found: list[Entry] = []
        shards = self.queue.shards
        for i in range(shards):  # every shard, the first one moving so each gets its turn when many are stale
            for priority in Priority:
                shard = (self._start + i) % shards
                found += await self.queue.reclaim(priority, self.settings.lease_ms, want - len(found), shard)
                if len(found) >= want:
                    break
            if len(found) >= want:
                break
        if found:
            log.info("reclaimed %d entries whose lease expired", len(found))
        return found

    async def renew(self) -> None:
        """Reset the idle time of every entry we hold, so no live dispatcher reclaims a slow job."""
        if self.held:
            await self.queue.renew(list(self.held))

    async def release(self) -> None:
        """Hand back everything we hold (shutdown past its grace): idle for a whole lease, so any live
        dispatcher claims it at once instead of waiting for the lease to run out."""
        if self.held:
            await self.queue.release(list(self.held), idle_ms=self.settings.lease_ms)
            log.info("released %d entries", len(self.held))
        self.held.clear()
