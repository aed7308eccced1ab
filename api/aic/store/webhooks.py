"""Webhook state in Redis: tenants' signing secrets, scheduled deliveries and the attempts recorded on a job.

A delivery moves from the outbox stream into ``webhooks:scheduled`` in one atomic step that also acknowledges
the stream entry, so from then on the sorted set (persisted with Redis) owns it: a worker claims a due entry by
pushing its score out by a lease, and a crash mid-send only means the lease runs out and another worker
retries it with the same webhook id.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from aic.core.webhooks import new_secret, webhook_id
from aic.store import keys, scripts
from aic.store.connection import guarded
from aic.store.sealing import Sealer, open_unsealed


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


@dataclass(frozen=True)
class OutboxEntry:
    """One due webhook as the job store's scripts queued it."""

    entry_id: str
    job_id: str
    event: str


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
        self._enqueue = scripts.register(redis, "webhook_enqueue")
        self._claim = scripts.register(redis, "webhook_claim")
        self._record = scripts.register(redis, "webhook_record")
        self._rotate = scripts.register(redis, "webhook_rotate")
        self._reseal = scripts.register(redis, "webhook_reseal")

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
        await self._rotate(keys=[keys.webhook_secret(tenant)], args=[self._seal(new_secret(), tenant), until])
        return await self.secret(tenant)

    def _seal(self, value: str, tenant: str) -> str:
        return self.sealer.seal(value, tenant) if self.sealer else value

    async def _open(self, key: str, field: str, stored: str, tenant: str) -> str:
        if self.sealer is None:
            return open_unsealed(stored)
        plain, reseal = self.sealer.open(stored, tenant)
        if reseal:  # plain from before sealing, or sealed with the previous key: seal it with the current one
            await self._reseal(keys=[key], args=[field, stored, self.sealer.seal(plain, tenant)])
        return plain

    # -- the outbox: (job, event) pairs written with the state change -------------------------------------

    async def ensure_outbox_group(self) -> None:
        """The consumer group ``webhooks`` on the outbox, created where missing."""
        try:
            await self.redis.xgroup_create(keys.WEBHOOK_OUTBOX, keys.WEBHOOK_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_outbox(self, consumer: str, claim_idle_ms: int, count: int, block_ms: int) -> list[OutboxEntry]:
        """Outbox entries for ``consumer``: first those a crashed reader left for ``claim_idle_ms``, else new ones
        (waiting up to ``block_ms``). Entries deleted while pending are acknowledged here and not returned."""
        claimed = await self.redis.xautoclaim(
            keys.WEBHOOK_OUTBOX, keys.WEBHOOK_GROUP, consumer, claim_idle_ms, count=count
        )
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], list(claimed[1]))
        if not entries:
            read = cast(
                list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
                await self.redis.xreadgroup(
                    keys.WEBHOOK_GROUP, consumer, {keys.WEBHOOK_OUTBOX: ">"}, count=count, block=block_ms
                ),
            )
            entries = [entry for _, stream_entries in read or [] for entry in stream_entries]
        found: list[OutboxEntry] = []
        for entry_id, fields in entries:
            if not fields:  # deleted while pending: acknowledge the empty shell
                await self.redis.xack(keys.WEBHOOK_OUTBOX, keys.WEBHOOK_GROUP, entry_id)
                continue
            found.append(OutboxEntry(entry_id.decode(), fields[b"job_id"].decode(), fields[b"event"].decode()))
        return found

    # -- deliveries ------------------------------------------------------------------------------------

    async def enqueue(self, entry_id: str, job_id: str, event: str) -> None:
        """Move one outbox entry into the schedule (due now) and acknowledge it, atomically and idempotently."""
        wid = webhook_id(job_id, event)
        summary = json.dumps({"event": event, "webhook_id": wid, "state": "pending", "attempts": 0})
        await self._enqueue(
            keys=[keys.webhook_delivery(wid), keys.WEBHOOK_SCHEDULED, keys.WEBHOOK_OUTBOX, keys.job_status(job_id)],
            args=[keys.WEBHOOK_GROUP, entry_id, wid, job_id, event, now_ms(), summary],
        )

    async def claim_due(self, limit: int, lease_ms: int) -> list[Delivery]:
        """Due deliveries, each pushed ``lease_ms`` into the future so no other worker takes it meanwhile."""
        now = now_ms()
        members = await self._claim(keys=[keys.WEBHOOK_SCHEDULED], args=[now, now + lease_ms, limit])
        found: list[Delivery] = []
        for member in cast(list[bytes], members):
            wid = member.decode()
            h = await _read_hash(self.redis, keys.webhook_delivery(wid))
            if not h:  # finished by another worker whose lease had run out: nothing left to do
                await self.redis.zrem(keys.WEBHOOK_SCHEDULED, wid)
                continue
            found.append(Delivery(wid, h["job_id"], h["event"], h["entry_id"], int(h.get("attempts", 0))))
        return found

    async def next_due_ms(self) -> int | None:
        first = await self.redis.zrange(keys.WEBHOOK_SCHEDULED, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def record(
        self, delivery: Delivery, attempt: dict[str, Any], summary: dict[str, Any], next_due_ms: int | None
    ) -> None:
        """Append the attempt to the job, update its summary, then reschedule or finish the delivery."""
        wid = delivery.webhook_id
        await self._record(
            keys=[
                keys.WEBHOOK_SCHEDULED,
                keys.webhook_delivery(wid),
                keys.job_status(delivery.job_id),
                keys.job_webhooks(delivery.job_id),
            ],
            args=[
                wid,
                json.dumps(attempt),
                json.dumps(summary),
                "" if next_due_ms is None else next_due_ms,
                attempt["attempt"],
            ],
        )

    async def job(self, job_id: str) -> dict[str, str]:
        """The job's status hash as text (empty once it expired): what a payload is built from."""
        return await _read_hash(self.redis, keys.job_status(job_id))

    async def result(self, job_id: str) -> dict[str, Any] | None:
        """The job's stored result, for a ``job.completed`` payload."""
        stored = await self.redis.get(keys.job_result(job_id))
        return cast(dict[str, Any], json.loads(stored)) if stored else None

    async def attempts(self, job_id: str) -> list[dict[str, Any]]:
        raw = cast(list[bytes], await self.redis.lrange(keys.job_webhooks(job_id), 0, -1))
        return [json.loads(item) for item in raw]

    async def summary(self, job_id: str) -> dict[str, Any] | None:
        raw = cast(bytes | None, await self.redis.hget(keys.job_status(job_id), "webhook"))
        return cast(dict[str, Any], json.loads(raw)) if raw else None
