"""Model routes in Redis: which Triton model serves each alias, and each model's spec.

Whoever makes a model servable publishes it here (``aic up`` for the local stack, the operator in a
cluster); the API checks ``model_version`` against the aliases and dispatchers read the specs.
"""

from __future__ import annotations

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
    """A dispatcher's view of the published specs, read on first use of each model."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._specs: dict[str, ModelSpec] = {}

    async def for_alias(self, alias: str) -> ModelSpec | None:
        name = await resolve(self._redis, alias)
        if name is None:
            return None
        spec = self._specs.get(name)
        if spec is None:
            raw = await self._redis.hget(keys.MODEL_SPECS, name)
            if raw is None:
                return None
            spec = self._specs[name] = modelspec.decode(raw)
        return spec
