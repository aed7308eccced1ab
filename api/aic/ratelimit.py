"""Rate limits per API key and per client IP: token buckets in Redis (``rate_limit:*``), so every API replica
enforces one shared limit. Both buckets are checked and charged in one Lua step, on Redis's clock.

A bucket holds ``RATE_LIMIT_BURST`` tokens and refills at ``RATE_LIMIT_PER_MINUTE``/60 per second; a request
takes one token from each of its buckets or is refused with 429, ``Retry-After`` and ``RateLimit-*`` headers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aic import keys
from aic.errors import RateLimitedError

log = logging.getLogger("aic.ratelimit")

# KEYS: one bucket hash per identity. ARGV: capacity, refill tokens per ms.
# Returns {allowed 0/1, tokens left (min over buckets), ms until the next token (max over refused buckets)}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local levels, allowed, left, wait = {}, 1, capacity, 0
for i, key in ipairs(KEYS) do
  local b = redis.call('HMGET', key, 'tokens', 'at')
  local tokens, at = tonumber(b[1]) or capacity, tonumber(b[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
  levels[i] = tokens
  if tokens < 1 then
    allowed = 0
    wait = math.max(wait, math.ceil((1 - tokens) / rate))
  end
end
local ttl = math.ceil(capacity / rate) + 1000
for i, key in ipairs(KEYS) do
  local tokens = levels[i]
  if allowed == 1 then tokens = tokens - 1 end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', key, ttl)
  left = math.min(left, math.floor(tokens))
end
return {allowed, left, wait}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after_s: int
    """Whole seconds until one request is allowed again (0 when allowed)."""


class RateLimiter:
    def __init__(self, redis: Redis, per_minute: int, burst: int) -> None:
        self.per_minute = per_minute
        self.capacity = max(1, burst)
        self._rate_per_ms = per_minute / 60_000
        self._take = redis.register_script(_TAKE)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    async def take(self, identities: list[str]) -> Decision:
        allowed, left, wait_ms = await self._take(keys=identities, args=[self.capacity, repr(self._rate_per_ms)])
        return Decision(bool(allowed), max(0, int(left)), math.ceil(int(wait_ms) / 1000) if not allowed else 0)

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


def identities(scope: Scope) -> list[str]:
    client = scope.get("client")
    found = [keys.rate_limit_ip(client[0] if client else "unknown")]
    user: Any = scope.get("user")
    key_id = getattr(user, "key_id", "")
    if key_id:
        found.append(keys.rate_limit_user(key_id))
    return found


class RateLimitMiddleware(ASGIMiddleware):
    """Runs after authentication; health, probes and the schema are excluded where it is configured."""

    scopes = ("http",)  # type: ignore[assignment]

    def __init__(self, exclude: tuple[str, ...] = ()) -> None:
        self.exclude_path_pattern = exclude

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        limiter: RateLimiter | None = getattr(scope["app"].state, "rate_limiter", None)
        if limiter is None or not limiter.enabled:
            await next_app(scope, receive, send)
            return
        try:
            decision = await limiter.take(identities(scope))
        except RedisError:
            log.warning("rate limiter cannot reach Redis; request let through")
            await next_app(scope, receive, send)
            return
        headers = limiter.headers(decision)
        if not decision.allowed:
            raise RateLimitedError("Rate limit exceeded; retry after the Retry-After seconds", headers=headers)
        encoded = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *encoded]
            await send(message)

        await next_app(scope, receive, send_with_headers)
