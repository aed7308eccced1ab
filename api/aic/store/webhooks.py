"""Webhook state in Redis: tenants' signing secrets, scheduled deliveries and the attempts recorded on a job.

A delivery moves from its shard's outbox stream into that shard's ``webhooks:scheduled`` in one atomic step that
also acknowledges the stream entry, so from then on the sorted set (persisted with Redis) owns it: a worker claims
a due entry by pushing its score out by a lease, and a crash mid-send only means the lease runs out and another
worker retries it with the same webhook id.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from aic.core.webhooks import new_secret, webhook_id
from aic.store import keys, scripts
from aic.store.connection import guarded, keyspace, keyspaces
from aic.store.keys import Keyspace
from aic.store.queue import queue_shards
from aic.store.scripts import Call, arg, key
from aic.store.sealing import Sealer, open_unsealed

_Entries = list[tuple[bytes, dict[bytes, bytes]]]
SHARDED_IDLE_BLOCK_MS: Final = 50
"""With several shards an idle reader waits on one shard's outbox this long, then sweeps them all again."""


@dataclass(frozen=True, kw_only=True)
class Enqueue(Call):
    SCRIPT: ClassVar[str] = "webhook_enqueue"
    delivery: str = key()
    scheduled: str = key()
    outbox: str = key()
    status: str = key()
    group: str = arg()
    entry_id: str = arg()
    webhook_id: str = arg()
    job_id: str = arg()
    event: str = arg()
    due_ms: int = arg()
    summary: str = arg()


@dataclass(frozen=True, kw_only=True)
class Claim(Call):
    SCRIPT: ClassVar[str] = "webhook_claim"
    scheduled: str = key()
    now_ms: int = arg()
    lease_until_ms: int = arg()
    limit: int = arg()


@dataclass(frozen=True, kw_only=True)
class Record(Call):
    SCRIPT: ClassVar[str] = "webhook_record"
    scheduled: str = key()
    delivery: str = key()
    status: str = key()
    attempts: str = key()
    webhook_id: str = arg()
    attempt: str = arg()
    summary: str = arg()
    next_due_ms: str | int = arg()
    attempts_so_far: int = arg()


@dataclass(frozen=True, kw_only=True)
class Rotate(Call):
    SCRIPT: ClassVar[str] = "webhook_rotate"
    secret: str = key()
    new_secret: str = arg()
    until_ms: int = arg()


@dataclass(frozen=True, kw_only=True)
class Reseal(Call):
    SCRIPT: ClassVar[str] = "webhook_reseal"
    secret: str = key()
    field: str = arg()
    read: str = arg()
    resealed: str = arg()


async def _read_hash(redis: Redis, key: str) -> dict[str, str]:
    raw = cast(dict[bytes, bytes], await redis.hgetall(key))
    return {k.decode(): v.decode() for k, v in raw.items()}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Delivery:
    """One scheduled webhook: which job event, the outbox entry it came from, attempts made so far."""

    webhook_id: str
    job_id: str
    event: str
    entry_id: str
    attempts: int
    names: Keyspace | None = field(default=None, compare=False, repr=False)
    """While migrating (``KEY_LAYOUT_BEFORE``): the previous layout, for a delivery scheduled there."""


@dataclass(frozen=True)
class OutboxEntry:
    """One due webhook as the job store's scripts queued it."""

    entry_id: str
    job_id: str
    event: str
    names: Keyspace | None = field(default=None, compare=False, repr=False)
    """While migrating: the previous layout, for an entry of its outbox (its job's keys are named so too)."""


@dataclass(frozen=True)
class TenantSecret:
    current: str
    previous: str | None
    previous_until_ms: int | None

    def signing(self, at_ms: int) -> list[str]:
        """Secrets to sign with at ``at_ms``: the current one, plus the previous during its grace period."""
        if self.previous and self.previous_until_ms and at_ms < self.previous_until_ms:
            return [self.current, self.previous]
        return [self.current]


@guarded
class WebhookStore:
    def __init__(self, redis: Redis, sealer: Sealer | None = None) -> None:
        self.redis = redis
        self.sealer = sealer
        self.keys = keyspace(redis)
        self._shards = queue_shards(redis)
        """Every shard whose outbox and schedule this store serves: the deployment's, and while migrating
        (``KEY_LAYOUT_BEFORE``) the previous layout's, whose jobs queued before the switch still end there."""
        self._start = 0
        self._last_reclaim = -float("inf")
        """When this store last swept every outbox for entries a crashed reader left (monotonic s)."""
        """The shard whose outbox an idle reader waits on next (sharded: one at a time, briefly)."""

    # -- secrets ---------------------------------------------------------------------------------------

    async def secret(self, tenant: str) -> TenantSecret:
        """The tenant's secret; the first call (from the API or the sender) creates it. Stored sealed (see
        ``aic.store.sealing``); a value sealed with the previous key, or stored plain, is sealed again."""
        key = keys.webhook_secret(tenant)
        h = await _read_hash(self.redis, key)
        if "current" not in h:  # the first use: made (and sealed) once, not on every read
            await self.redis.hsetnx(key, "current", self._seal(new_secret(), tenant))
            h = await _read_hash(self.redis, key)
        until = h.get("previous_until_ms")
        current = await self._open(key, "current", h["current"], tenant)
        previous = await self._open(key, "previous", h["previous"], tenant) if h.get("previous") else None
        return TenantSecret(current, previous, int(until) if until else None)

    async def rotate(self, tenant: str, grace_s: float) -> TenantSecret:
        """A new current secret; the old one keeps signing (alongside) for ``grace_s`` more seconds."""
        await self.secret(tenant)
        until = now_ms() + int(grace_s * 1000)
        call = Rotate(secret=keys.webhook_secret(tenant), new_secret=self._seal(new_secret(), tenant), until_ms=until)
        await scripts.run(self.redis, call)
        return await self.secret(tenant)

    def _seal(self, value: str, tenant: str) -> str:
        return self.sealer.seal(value, tenant) if self.sealer else value

    async def _open(self, key: str, field: str, stored: str, tenant: str) -> str:
        if self.sealer is None:
            return open_unsealed(stored)
        plain, reseal = self.sealer.open(stored, tenant)
        if reseal:  # plain from before sealing, or sealed with the previous key: seal it with the current one
            call = Reseal(secret=key, field=field, read=stored, resealed=self.sealer.seal(plain, tenant))
            await scripts.run(self.redis, call)
        return plain

    # -- the outbox: (job, event) pairs written with the state change -------------------------------------

    async def ensure_outbox_group(self) -> None:
        """The consumer group ``webhooks`` on every shard's outbox, created where missing."""
        for names, shard, _ in self._shards:
            try:
                await self.redis.xgroup_create(names.webhook_outbox(shard), keys.WEBHOOK_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read_outbox(self, consumer: str, claim_idle_ms: int, count: int, block_ms: int) -> list[OutboxEntry]:
        """Outbox entries for ``consumer``: first those a crashed reader left for ``claim_idle_ms`` (``_reclaim``),
        else new ones (waiting up to ``block_ms``; with several shards, sweeping all of them and waiting on one at a
        time for a short while). Entries deleted while pending are acknowledged here and not returned."""
        found = await self._reclaim(consumer, claim_idle_ms, count)
        if found:
            return found
        if len(self._shards) > 1:
            for i in range(len(self._shards)):
                found += await self._read(consumer, i, count - len(found), None)
                if len(found) >= count:
                    return found
            if found:
                return found
            self._start = (self._start + 1) % len(self._shards)
            return await self._read(consumer, self._start, count, min(block_ms, SHARDED_IDLE_BLOCK_MS))
        return await self._read(consumer, 0, count, block_ms)

    async def _reclaim(self, consumer: str, claim_idle_ms: int, count: int) -> list[OutboxEntry]:
        """Entries a crashed reader left idle for ``claim_idle_ms``, from every shard; swept once every quarter of
        that (an entry is taken over at most a quarter late), not on every read: one XAUTOCLAIM per shard."""
        now = time.monotonic()
        if now - self._last_reclaim < claim_idle_ms / 4000:
            return []
        found: list[OutboxEntry] = []
        for names, shard, carried in self._shards:
            outbox = names.webhook_outbox(shard)
            claimed = await self.redis.xautoclaim(outbox, keys.WEBHOOK_GROUP, consumer, claim_idle_ms, count=count)
            found += await self._entries(outbox, cast(_Entries, list(claimed[1])), carried)
            if len(found) >= count:
                return found  # the rest of the sweep next time: not marked as swept
        self._last_reclaim = now
        return found

    async def _read(self, consumer: str, i: int, count: int, block_ms: int | None) -> list[OutboxEntry]:
        names, shard, carried = self._shards[i]
        outbox = names.webhook_outbox(shard)
        read = cast(
            list[tuple[bytes, _Entries]],
            await self.redis.xreadgroup(keys.WEBHOOK_GROUP, consumer, {outbox: ">"}, count=count, block=block_ms),
        )
        entries = [entry for _, stream_entries in read or [] for entry in stream_entries]
        return await self._entries(outbox, entries, carried)

    async def _entries(self, outbox: str, entries: _Entries, carried: Keyspace | None) -> list[OutboxEntry]:
        found: list[OutboxEntry] = []
        for entry_id, fields in entries:
            if not fields:  # deleted while pending: acknowledge the empty shell
                await self.redis.xack(outbox, keys.WEBHOOK_GROUP, entry_id)
                continue
            job_id, event = fields[b"job_id"].decode(), fields[b"event"].decode()
            found.append(OutboxEntry(entry_id.decode(), job_id, event, carried))
        return found

    # -- deliveries ------------------------------------------------------------------------------------

    async def enqueue(self, entry_id: str, job_id: str, event: str, names: Keyspace | None = None) -> None:
        """Move one outbox entry into the schedule (due now) and acknowledge it, atomically and idempotently;
        ``names``: the layout the entry came from (``OutboxEntry.names``)."""
        wid = webhook_id(job_id, event)
        summary = json.dumps({"event": event, "webhook_id": wid, "state": "pending", "attempts": 0})
        names = names or self.keys
        shard = names.shard(job_id)
        call = Enqueue(
            delivery=names.webhook_delivery(wid, shard), scheduled=names.webhook_scheduled(shard),
            outbox=names.webhook_outbox(shard), status=names.job_status(job_id), group=keys.WEBHOOK_GROUP,
            entry_id=entry_id, webhook_id=wid, job_id=job_id, event=event, due_ms=now_ms(), summary=summary,
        )  # fmt: skip
        await scripts.run(self.redis, call)

    async def claim_due(self, limit: int, lease_ms: int) -> list[Delivery]:
        """Due deliveries of every shard, each pushed ``lease_ms`` into the future so no other worker takes it
        meanwhile."""
        now = now_ms()
        found: list[Delivery] = []
        for names, shard, carried in self._shards:
            if len(found) >= limit:
                break
            scheduled = names.webhook_scheduled(shard)
            call = Claim(scheduled=scheduled, now_ms=now, lease_until_ms=now + lease_ms, limit=limit - len(found))
            for member in cast(list[bytes], await scripts.run(self.redis, call)):
                wid = member.decode()
                h = await _read_hash(self.redis, names.webhook_delivery(wid, shard))
                if not h:  # finished by another worker whose lease had run out: nothing left to do
                    await self.redis.zrem(scheduled, wid)
                    continue
                attempts = int(h.get("attempts", 0))
                found.append(Delivery(wid, h["job_id"], h["event"], h["entry_id"], attempts, carried))
        return found

    async def next_due_ms(self) -> int | None:
        """When the soonest delivery of any shard is due (None: none scheduled)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for names, shard, _ in self._shards:
                pipe.zrange(names.webhook_scheduled(shard), 0, 0, withscores=True)
            replies = await pipe.execute()
        due = [int(first[0][1]) for first in replies if first]
        return min(due) if due else None

    async def record(
        self, delivery: Delivery, attempt: dict[str, Any], summary: dict[str, Any], next_due_ms: int | None
    ) -> None:
        """Append the attempt to the job, update its summary, then reschedule or finish the delivery."""
        wid, job_id = delivery.webhook_id, delivery.job_id
        names = delivery.names or self.keys
        shard = names.shard(job_id)
        call = Record(
            scheduled=names.webhook_scheduled(shard), delivery=names.webhook_delivery(wid, shard),
            status=names.job_status(job_id), attempts=names.job_webhooks(job_id), webhook_id=wid,
            attempt=json.dumps(attempt), summary=json.dumps(summary),
            next_due_ms="" if next_due_ms is None else next_due_ms, attempts_so_far=attempt["attempt"],
        )  # fmt: skip
        await scripts.run(self.redis, call)

    async def job(self, job_id: str, names: Keyspace | None = None) -> dict[str, str]:
        """The job's status hash as text (empty once it expired): what a payload is built from; ``names``: the
        layout its delivery came from (``Delivery.names``)."""
        return await _read_hash(self.redis, (names or self.keys).job_status(job_id))

    async def result(self, job_id: str, names: Keyspace | None = None) -> dict[str, Any] | None:
        """The job's stored result, for a ``job.completed`` payload."""
        stored = await self.redis.get((names or self.keys).job_result(job_id))
        return cast(dict[str, Any], json.loads(stored)) if stored else None

    async def attempts(self, job_id: str) -> list[dict[str, Any]]:
        """The job's delivery attempts (while migrating, under the layout that has them)."""
        for names in keyspaces(self.redis):
            raw = cast(list[bytes], await self.redis.lrange(names.job_webhooks(job_id), 0, -1))
            if raw:
                return [json.loads(item) for item in raw]
        return []

    async def summary(self, job_id: str) -> dict[str, Any] | None:
        for names in keyspaces(self.redis):
            raw = cast(bytes | None, await self.redis.hget(names.job_status(job_id), "webhook"))
            if raw:
                return cast(dict[str, Any], json.loads(raw))
        return None
