"""Dispatcher heartbeats: ``worker:{id}:status`` (the seed's key, JSON with counters and readiness) and the
sorted set ``workers:heartbeats`` indexing them by time, so ``/health`` reads the live ones directly
instead of scanning the keyspace."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis

from aic.store import keys
from aic.store.connection import guarded, is_cluster


@dataclass(frozen=True)
class Heartbeat:
    """What one dispatcher last said about itself."""

    worker_id: str
    ready: bool
    problems: list[str] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)


@guarded
class Heartbeats:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def beat(self, worker_id: str, body: dict[str, Any]) -> None:
        """Record a heartbeat (``body`` carries ``ready`` and ``problems``) and forget dispatchers that stopped."""
        now_ms = int(time.time() * 1000)
        # the body and the index are two slots on a cluster (no transaction across slots): written in this order,
        # and ``live`` skips a listed dispatcher whose body is missing
        async with self.redis.pipeline(transaction=not is_cluster(self.redis)) as pipe:
            pipe.set(keys.worker_status(worker_id), json.dumps(body), ex=keys.WORKER_STATUS_TTL_S)
            pipe.zadd(keys.WORKER_HEARTBEATS, {worker_id: now_ms})
            pipe.zremrangebyscore(keys.WORKER_HEARTBEATS, "-inf", now_ms - keys.WORKER_STATUS_TTL_S * 1000)
            await pipe.execute()

    async def gone(self, worker_id: str) -> None:
        """A dispatcher that stops says so at once."""
        async with self.redis.pipeline(transaction=not is_cluster(self.redis)) as pipe:
            pipe.delete(keys.worker_status(worker_id))
            pipe.zrem(keys.WORKER_HEARTBEATS, worker_id)
            await pipe.execute()

    async def live(self) -> list[Heartbeat]:
        """The dispatchers that beat within ``WORKER_STATUS_TTL_S``, with what they last reported."""
        since_ms = int(time.time() * 1000) - keys.WORKER_STATUS_TTL_S * 1000
        ids = cast(list[bytes], await self.redis.zrangebyscore(keys.WORKER_HEARTBEATS, since_ms, "+inf"))
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:  # not MGET: on a cluster the bodies are many slots
            for worker_id in ids:
                pipe.get(keys.worker_status(worker_id.decode()))
            bodies = cast(list[bytes | None], await pipe.execute())
        beats = []
        for worker_id, raw in zip(ids, bodies, strict=True):
            if raw is None:  # stopped between the two reads
                continue
            body: dict[str, Any] = json.loads(raw)
            ready = bool(body.get("ready", True))
            beats.append(Heartbeat(worker_id.decode(), ready, list(body.get("problems") or []), body))
        return beats
