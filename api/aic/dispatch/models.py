"""Which model serves a job: the published routes, cached, with a smooth weighted choice among the models
sharing an alias (canaries), and the check that Triton serves each published model as its spec says."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from aic.core import modelspec
from aic.core.modelspec import ModelSpec
from aic.store.routes import RouteStore
from aic.triton.client import TritonRunner

log = logging.getLogger("aic.dispatcher")


class SpecCache:
    """A dispatcher's view of the published routes and specs.

    A spec is re-read after ``ttl_s``, so a changed ModelVersion (preprocessing, labels) reaches running
    dispatchers. Where an alias has weights, each job's model is picked by weight.
    """

    def __init__(self, routes: RouteStore, ttl_s: float = 5.0) -> None:
        self._routes = routes
        self._ttl_s = ttl_s
        self._specs: dict[str, tuple[float, ModelSpec]] = {}
        self._credit: dict[str, dict[str, int]] = {}

    async def for_jobs(self, aliases: Sequence[str]) -> list[ModelSpec | None]:
        """The model of each job, given the aliases the jobs asked for: routes and weights are read once per
        call, the weighted choice is made per job, so a canary's share holds however jobs are batched."""
        routes = await self._routes.routes(aliases)
        specs: list[ModelSpec | None] = []
        for alias in aliases:
            route = routes[alias]
            chosen = pick_weighted(route.weights, self._credit.setdefault(alias, {})) if route.weights else None
            name = chosen or route.model
            specs.append(await self._spec(name) if name else None)
        return specs

    async def spec(self, name: str) -> ModelSpec | None:
        """The published spec of model ``name`` (cached like the routes' own)."""
        return await self._spec(name)

    async def _spec(self, name: str) -> ModelSpec | None:
        cached = self._specs.get(name)
        if cached is None or time.monotonic() - cached[0] > self._ttl_s:
            spec = await self._routes.spec(name)
            if spec is None:
                return None
            cached = self._specs[name] = (time.monotonic(), spec)
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


class ModelChecks:
    """Whether Triton serves every published model as its spec says (names, data types, dims).

    Checked when the dispatcher starts and then on every heartbeat for specs that are new, changed or had a
    problem; the problems make the dispatcher report itself not ready.
    """

    def __init__(self, routes: RouteStore, runner: TritonRunner) -> None:
        self._routes = routes
        self._runner = runner
        self._checked: dict[str, tuple[bytes, str | None]] = {}

    async def refresh(self) -> list[str]:
        """Problems of the published models, one line each (empty: ready)."""
        specs = {spec.name: spec for spec in await self._routes.specs()}
        for name in [n for n in self._checked if n not in specs]:
            del self._checked[name]
        for name, spec in specs.items():
            fingerprint = modelspec.encode(spec)
            seen = self._checked.get(name)
            if seen is None or seen[0] != fingerprint or seen[1] is not None:
                problem = await self._runner.check(spec)
                if problem and (seen is None or seen[1] != problem):
                    log.warning("model not servable as published: %s", problem)
                self._checked[name] = (fingerprint, problem)
        return [problem for _, problem in self._checked.values() if problem]
