"""Model routes in Redis: which Triton model serves each alias, and each model's spec.

Whoever makes a model servable publishes it here (``aic up`` for the local stack, the operator in a
cluster); the API checks ``model_version`` against the aliases and dispatchers read the specs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from aic import keys, modelspec
from aic.modelspec import ModelSpec


async def publish(redis: Redis, spec: ModelSpec) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.MODEL_SPECS, spec.name, modelspec.encode(spec))
        for alias in spec.aliases:
            pipe.hset(keys.MODEL_ROUTES, alias, spec.name)
        await pipe.execute()


async def aliases(redis: Redis) -> dict[str, str]:
    raw: dict[bytes, bytes] = await redis.hgetall(keys.MODEL_ROUTES)  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


async def resolve(redis: Redis, alias: str) -> str | None:
    name: bytes | None = await redis.hget(keys.MODEL_ROUTES, alias)  # type: ignore[assignment]
    return name.decode() if name else None


class SpecCache:
    """A dispatcher's view of the published routes and specs.

    A spec is re-read after ``ttl_s``, so a changed ModelVersion (preprocessing, labels) reaches running
    dispatchers. Where an alias has weights (``models:weights``), each call picks one of its models by weight.
    """

    def __init__(self, redis: Redis, ttl_s: float = 5.0) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._specs: dict[str, tuple[float, ModelSpec]] = {}
        self._credit: dict[str, dict[str, int]] = {}

    async def for_jobs(self, aliases: Sequence[str]) -> list[ModelSpec | None]:
        """The model of each job, given the aliases the jobs asked for: routes and weights are read once per
        call, the weighted choice is made per job, so a canary's share holds however jobs are batched."""
        routes: dict[str, tuple[dict[str, int], str | None]] = {}
        for alias in set(aliases):
            raw: bytes | None = await self._redis.hget(keys.MODEL_WEIGHTS, alias)  # type: ignore[assignment]
            weights = {str(k): int(v) for k, v in json.loads(raw).items()} if raw is not None else {}
            routes[alias] = (weights, await resolve(self._redis, alias))
        specs: list[ModelSpec | None] = []
        for alias in aliases:
            weights, route = routes[alias]
            name = (pick_weighted(weights, self._credit.setdefault(alias, {})) if weights else None) or route
            specs.append(await self._spec(name) if name else None)
        return specs

    async def _spec(self, name: str) -> ModelSpec | None:
        cached = self._specs.get(name)
        if cached is None or time.monotonic() - cached[0] > self._ttl_s:
            raw = await self._redis.hget(keys.MODEL_SPECS, name)
            if raw is None:
                return None
            cached = self._specs[name] = (time.monotonic(), modelspec.decode(raw))
        return cached[1]


def pick_weighted(weights: Mapping[str, int], credit: dict[str, int]) -> str | None:
    """Smooth weighted round-robin (as nginx balances upstreams), ``credit`` being the caller's state.

    Over any ``sum(weights)`` consecutive picks each model is chosen exactly its weight's times, interleaved
    rather than in runs; weight 0 is never chosen. None when no model has a positive weight.
    """
    live = {name: weight for name, weight in weights.items() if weight > 0}
    for name in [n for n in credit if n not in live]:
        del credit[name]
    if not live:
        return None
    for name, weight in live.items():
        credit[name] = credit.get(name, 0) + weight
    chosen = max(sorted(live), key=lambda name: credit[name])
    credit[chosen] -= sum(live.values())
    return chosen
