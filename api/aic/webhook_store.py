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

from aic import keys
from aic.webhooks import new_secret, webhook_id

# KEYS: delivery hash, scheduled set, outbox stream, job status. ARGV: group, entry id, webhook id, job id,
# event, due ms, summary json
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'job_id', ARGV[4], 'event', ARGV[5], 'entry_id', ARGV[2], 'attempts', 0)
  redis.call('ZADD', KEYS[2], 'NX', ARGV[6], ARGV[3])
  if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('HSET', KEYS[4], 'webhook', ARGV[7]) end
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[3], ARGV[2])
return 1
"""

# KEYS: scheduled set. ARGV: now ms, lease-until ms, limit
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], member) end
return due
"""

# KEYS: scheduled set, delivery hash, job status, job attempts list.
# ARGV: webhook id, attempt json, summary json, next due ms ('' when the delivery is over), attempts so far
_RECORD = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'webhook', ARGV[3])
  redis.call('RPUSH', KEYS[4], ARGV[2])
  local ttl = redis.call('PTTL', KEYS[3])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[4], ttl) end
end
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
else
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  redis.call('HSET', KEYS[2], 'attempts', ARGV[5])
end
return 1
"""

# KEYS: secret hash. ARGV: new secret, previous-until ms
_ROTATE = """
local old = redis.call('HGET', KEYS[1], 'current')
redis.call('HSET', KEYS[1], 'current', ARGV[1])
if old then
  redis.call('HSET', KEYS[1], 'previous', old, 'previous_until_ms', ARGV[2])
end
return 1
"""


async def read_hash(redis: Redis, key: str) -> dict[str, str]:
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
class TenantSecret:
    current: str
    previous: str | None
    previous_until_ms: int | None

    def signing(self, at_ms: int) -> list[str]:
        """Secrets to sign with at ``at_ms``: the current one, plus the previous during its grace period."""
        if self.previous and self.previous_until_ms and at_ms < self.previous_until_ms:
            return [self.current, self.previous]
        return [self.current]


class WebhookStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._enqueue = redis.register_script(_ENQUEUE)
        self._claim = redis.register_script(_CLAIM)
        self._record = redis.register_script(_RECORD)
        self._rotate = redis.register_script(_ROTATE)

    # -- secrets ---------------------------------------------------------------------------------------

    async def secret(self, tenant: str) -> TenantSecret:
        """The tenant's secret; the first call (from the API or the sender) creates it."""
        key = keys.webhook_secret(tenant)
        await self.redis.hsetnx(key, "current", new_secret())
        h = await read_hash(self.redis, key)
        until = h.get("previous_until_ms")
        return TenantSecret(h["current"], h.get("previous") or None, int(until) if until else None)

    async def rotate(self, tenant: str, grace_s: float) -> TenantSecret:
        """A new current secret; the old one keeps signing (alongside) for ``grace_s`` more seconds."""
        await self.secret(tenant)
        until = now_ms() + int(grace_s * 1000)
        await self._rotate(keys=[keys.webhook_secret(tenant)], args=[new_secret(), until])
        return await self.secret(tenant)

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
            h = await read_hash(self.redis, keys.webhook_delivery(wid))
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

    async def attempts(self, job_id: str) -> list[dict[str, Any]]:
        raw = cast(list[bytes], await self.redis.lrange(keys.job_webhooks(job_id), 0, -1))
        return [json.loads(item) for item in raw]

    async def summary(self, job_id: str) -> dict[str, Any] | None:
        raw = cast(bytes | None, await self.redis.hget(keys.job_status(job_id), "webhook"))
        return cast(dict[str, Any], json.loads(raw)) if raw else None
