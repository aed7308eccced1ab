"""Rate limits per API key and per client IP: token buckets in Redis (``rate_limit:*``), so every API replica
enforces one shared limit. Both buckets are checked and charged in one Lua step (``lua/ratelimit.lua``), on
Redis's clock. On a cluster the two buckets hash to different slots: each is charged by its own step, the IP's
first (a request the key's bucket then refuses has still cost its IP one token).

A bucket holds ``RATE_LIMIT_BURST`` tokens and refills at ``RATE_LIMIT_PER_MINUTE``/60 per second; a request
takes one token from each of its buckets or is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from redis.asyncio import Redis

from aic.store import keys, scripts
from aic.store.connection import guarded, keyspace
from aic.store.scripts import Call, Item, arg, each, key


@dataclass(frozen=True, kw_only=True)
class Bucket(Item):
    bucket: str = key()


@dataclass(frozen=True, kw_only=True)
class Take(Call):
    """``lua/ratelimit.lua``: one token from each bucket, or from none."""

    SCRIPT: ClassVar[str] = "ratelimit"
    ITEM: ClassVar[type[Item] | None] = Bucket
    capacity: int = arg()
    rate_per_ms: str = arg()
    buckets: tuple[Bucket, ...] = each()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after_s: int
    """Whole seconds until one request is allowed again (0 when allowed)."""


@guarded
class RateLimiter:
    def __init__(self, redis: Redis, per_minute: int, burst: int) -> None:
        self.per_minute = per_minute
        self.capacity = max(1, burst)
        self._rate_per_ms = per_minute / 60_000
        self.redis = redis
        self.keys = keyspace(redis)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    async def take(self, ip: str, key_id: str | None = None) -> Decision:
        """One token from the client IP's bucket and, for an authenticated caller, from its key's bucket."""
        buckets = [keys.rate_limit_ip(ip)]
        if key_id:
            buckets.append(keys.rate_limit_user(key_id))
        return await self._charge(buckets)

    async def failed_authentication(self, ip: str) -> Decision:
        """One token from the IP's bucket of failed authentications (use a limiter built with their rates)."""
        return await self._charge([keys.rate_limit_auth(ip)])

    async def _charge(self, buckets: list[str]) -> Decision:
        groups = [[bucket] for bucket in buckets] if self.keys.cluster else [buckets]
        decision = Decision(True, self.capacity, 0)
        for group in groups:
            call = Take(
                capacity=self.capacity, rate_per_ms=repr(self._rate_per_ms),
                buckets=tuple(Bucket(bucket=bucket) for bucket in group),
            )  # fmt: skip
            allowed, left, wait_ms = await scripts.run(self.redis, call)
            decision = Decision(
                bool(allowed), min(decision.remaining, max(0, int(left))),
                math.ceil(int(wait_ms) / 1000) if not allowed else 0,
            )  # fmt: skip
            if not decision.allowed:
                break
        return decision

    def headers(self, decision: Decision) -> dict[str, str]:
        """IETF draft RateLimit headers, plus Retry-After on a refusal."""
        refill_s = math.ceil(60 / self.per_minute) if self.per_minute else 0
        out = {
            "RateLimit-Limit": str(self.capacity),
            "RateLimit-Remaining": str(decision.remaining),
            "RateLimit-Reset": str(decision.retry_after_s if not decision.allowed else refill_s),
            "RateLimit-Policy": f"{self.capacity};w={refill_s * self.capacity};burst={self.capacity};"
            f"per-minute={self.per_minute}",
        }
        if not decision.allowed:
            out["Retry-After"] = str(max(1, decision.retry_after_s))
        return out
