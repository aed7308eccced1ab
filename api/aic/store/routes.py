"""Model routes in Redis: which Triton models serve each alias, by what weight, and each model's spec.

Whoever makes a model servable publishes it here through ``RouteStore.publish``: ``aic up`` for the models of
the local repository, the ModelVersion operator and ``aic models apply`` for ModelVersions. One script
(``lua/routes.lua``) writes all three hashes, so the aliases the API accepts, the weights dispatchers split
traffic by and the specs they preprocess with never disagree, and an alias a model no longer lists stops
routing to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, cast

from redis.asyncio import Redis

from aic.core import modelspec
from aic.core.modelspec import ModelSpec
from aic.store import scripts
from aic.store.connection import guarded, keyspace
from aic.store.scripts import Call, arg, key, rest

DEFAULT_WEIGHT = scripts.DEFAULT_WEIGHT


@dataclass(frozen=True)
class Route:
    """Where one alias goes: its models by weight (empty: no split) and the heaviest of them."""

    weights: dict[str, int]
    model: str | None


@dataclass(frozen=True, kw_only=True)
class SetRoutes(Call):
    """``lua/routes.lua``: the five ``models:*`` hashes share one slot on a cluster (``Keyspace``)."""

    SCRIPT: ClassVar[str] = "routes"
    weights: str = key()
    routes: str = key()
    specs: str = key()
    requested: str = key()
    overrides: str = key()
    model: str = arg()
    weight: str = arg()
    spec: bytes = arg()
    override: str = arg()
    aliases: tuple[str, ...] = rest()


@guarded
class RouteStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.keys = keyspace(redis)

    async def publish(self, spec: ModelSpec, weight: int | None = None, override: str = "") -> None:
        """Route every alias of ``spec`` to it with ``weight`` and store the spec; aliases it no longer has stop
        routing to it. ``None`` keeps the model's requested weight (``DEFAULT_WEIGHT`` when it has none).

        ``override`` changes the weight a progressive rollout imposes (see ``lua/routes.lua``): ``""`` leaves it,
        ``"clear"`` removes it, ``"init:N"`` sets N where none is set, ``"N"`` sets N (-1: the requested weight).
        """
        if weight is not None and weight < 0:
            raise ValueError(f"a traffic weight is >= 0, got {weight}")
        requested = "" if weight is None else str(weight)
        await scripts.run(
            self.redis, self._routes(spec.name, requested, modelspec.encode(spec), override, spec.aliases)
        )

    async def override(self, name: str, weight: int | None) -> bool:
        """Publish model ``name`` with ``weight`` in place of its requested weight (``None``: its requested weight
        again), under the aliases it has; False when the model is not published."""
        spec = await self.spec(name)
        if spec is None:
            return False
        await self.publish(spec, None, "clear" if weight is None else str(weight))
        return True

    async def withdraw(self, name: str) -> None:
        """Remove model ``name`` from every alias and drop its spec, requested weight and override."""
        await scripts.run(self.redis, self._routes(name, "-1", b"", "", ()))

    def _routes(self, model: str, weight: str, spec: bytes, override: str, aliases: Sequence[str]) -> SetRoutes:
        names = self.keys
        return SetRoutes(
            weights=names.model_weights, routes=names.model_routes, specs=names.model_specs,
            requested=names.model_requested, overrides=names.model_overrides,
            model=model, weight=weight, spec=spec, override=override, aliases=tuple(aliases),
        )  # fmt: skip

    async def aliases(self) -> dict[str, str]:
        """Every alias clients may pass as ``model_version`` -> the heaviest model serving it."""
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(self.keys.model_routes))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def routes(self, aliases: Iterable[str]) -> dict[str, Route]:
        """The route of each alias, read in one round trip."""
        wanted = sorted(set(aliases))
        async with self.redis.pipeline(transaction=False) as pipe:
            for alias in wanted:
                pipe.hget(self.keys.model_weights, alias)
                pipe.hget(self.keys.model_routes, alias)
            replies = await pipe.execute()
        found: dict[str, Route] = {}
        for i, alias in enumerate(wanted):
            raw_weights, model = replies[2 * i], replies[2 * i + 1]
            weights = {str(k): int(v) for k, v in json.loads(raw_weights).items()} if raw_weights else {}
            found[alias] = Route(weights, model.decode() if model else None)
        return found

    async def spec(self, name: str) -> ModelSpec | None:
        raw = await self.redis.hget(self.keys.model_specs, name)
        return modelspec.decode(raw) if raw is not None else None

    async def specs(self) -> list[ModelSpec]:
        """Every published model's spec, by name."""
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(self.keys.model_specs))
        return [modelspec.decode(raw[name]) for name in sorted(raw)]
