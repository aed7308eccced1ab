"""Evidence on model versions: per (alias, version) outcomes and per (alias, candidate, reference) agreement, in
small time buckets that expire; the comparisons dispatchers are asked to make; the rollouts' published status.

Every write touches one key (a pipeline of HINCRBY/EXPIRE, no script, no transaction), never a job's script: in a
Redis Cluster each bucket is a key of its own, wherever its slot is. Dispatchers add; the operator reads a window
of buckets to decide a rollout's next step (``aic_operator.rollout``).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from redis.asyncio import Redis

from aic.store import keys
from aic.store.connection import guarded, keyspace

LATENCY_BOUNDS_MS: Final = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
"""Upper bounds of the latency histogram's buckets (ms); one more bucket holds everything slower."""
BUCKET_S: Final = keys.EVIDENCE_BUCKET_S
TTL_S: Final = keys.EVIDENCE_TTL_S


def bucket_of(at_s: float) -> int:
    return int(at_s // BUCKET_S) * BUCKET_S


def latency_slot(latency_s: float) -> int:
    """Index of the histogram bucket that holds ``latency_s``."""
    ms = latency_s * 1000
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        if ms <= bound:
            return i
    return len(LATENCY_BOUNDS_MS)


@dataclass
class Outcomes:
    """What one version did for one alias in a window: jobs answered, jobs failed by the model, latency."""

    jobs: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))
    latency_sum_ms: int = 0

    @property
    def error_rate(self) -> float:
        total = self.jobs + self.errors
        return self.errors / total if total else 0.0

    @property
    def p95_ms(self) -> float | None:
        """The upper bound of the histogram bucket holding the 95th percentile (inf above the last bound);
        None without jobs. Coarse by design: enough to tell 40 ms from 400 ms."""
        total = sum(self.latency)
        if not total:
            return None
        rank = math.ceil(0.95 * total)
        seen = 0
        for i, count in enumerate(self.latency):
            seen += count
            if seen >= rank:
                return float(LATENCY_BOUNDS_MS[i]) if i < len(LATENCY_BOUNDS_MS) else math.inf
        return math.inf

    def add(self, fields: Mapping[bytes, bytes]) -> None:
        for name, value in fields.items():
            key, count = name.decode(), int(value)
            if key == "jobs":
                self.jobs += count
            elif key == "errors":
                self.errors += count
            elif key == "lat_sum_ms":
                self.latency_sum_ms += count
            elif key.startswith("lat:") and key[4:].isdigit() and int(key[4:]) < len(self.latency):
                self.latency[int(key[4:])] += count


@dataclass
class Agreement:
    """How a candidate version's answers compared with a reference version's on the same jobs."""

    compared: int = 0
    top1: int = 0
    """Jobs whose most likely class (id and name) was the same on both."""
    top5_milli: int = 0
    """Sum over jobs of the share (x1000) of the reference's top 5 classes also in the candidate's top 5."""
    delta_micro: int = 0
    """Sum over jobs of candidate minus reference top-1 confidence (x1e6)."""
    errors: int = 0
    """Candidate runs that failed (timeouts, Triton errors): never a client's failure."""

    @property
    def agreement(self) -> float | None:
        return self.top1 / self.compared if self.compared else None

    @property
    def top5_overlap(self) -> float | None:
        return self.top5_milli / 1000 / self.compared if self.compared else None

    @property
    def confidence_delta(self) -> float | None:
        return self.delta_micro / 1e6 / self.compared if self.compared else None

    def add(self, fields: Mapping[bytes, bytes]) -> None:
        for name, value in fields.items():
            key = name.decode()
            if key in ("compared", "top1", "top5_milli", "delta_micro", "errors"):
                setattr(self, key, getattr(self, key) + int(value))

    def as_dict(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "agreement": _round(self.agreement),
            "top5Overlap": _round(self.top5_overlap),
            "confidenceDelta": _round(self.confidence_delta),
            "errors": self.errors,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


class Tally:
    """Counts added in memory (a dispatcher's since its last flush), by key and field."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def __bool__(self) -> bool:
        return bool(self.counts)

    def outcome(
        self, alias: str, model: str, at_s: float, latency_s: float | None, *, error: bool = False, jobs: int = 1
    ) -> None:
        """``jobs`` answered in ``latency_s`` each (or failed, ``error``)."""
        fields = self.counts[keys.evidence_outcomes(alias, model, bucket_of(at_s))]
        if error:
            fields["errors"] += jobs
            return
        fields["jobs"] += jobs
        if latency_s is not None:
            fields[f"lat:{latency_slot(latency_s)}"] += jobs
            fields["lat_sum_ms"] += round(latency_s * 1000) * jobs

    def comparison(
        self,
        alias: str,
        candidate: str,
        reference: str,
        at_s: float,
        outcome: tuple[bool, float, float] | None,
    ) -> None:
        """``outcome``: (same top-1, top-5 overlap 0-1, confidence delta); None: the candidate's run failed."""
        fields = self.counts[keys.evidence_agreement(alias, candidate, reference, bucket_of(at_s))]
        if outcome is None:
            fields["errors"] += 1
            return
        same, overlap, delta = outcome
        fields["compared"] += 1
        fields["top1"] += int(same)
        fields["top5_milli"] += round(overlap * 1000)
        fields["delta_micro"] += round(delta * 1e6)


@guarded
class EvidenceStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.keys = keyspace(redis)

    async def record(self, tally: Tally) -> None:
        """Add a tally: HINCRBY per field and one EXPIRE per key, pipelined without a transaction."""
        if not tally:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, fields in tally.counts.items():
                for name, count in fields.items():
                    pipe.hincrby(key, name, count)
                pipe.expire(key, TTL_S)
            await pipe.execute()

    async def outcomes(self, alias: str, model: str, since_s: float, until_s: float | None = None) -> Outcomes:
        found = Outcomes()
        for fields in await self._read(lambda b: keys.evidence_outcomes(alias, model, b), since_s, until_s):
            found.add(fields)
        return found

    async def agreement(
        self, alias: str, candidate: str, reference: str, since_s: float, until_s: float | None = None
    ) -> Agreement:
        found = Agreement()
        for fields in await self._read(
            lambda b: keys.evidence_agreement(alias, candidate, reference, b), since_s, until_s
        ):
            found.add(fields)
        return found

    async def _read(self, key_of: Any, since_s: float, until_s: float | None) -> list[dict[bytes, bytes]]:
        until = time.time() if until_s is None else until_s
        first = bucket_of(max(since_s, until - TTL_S))
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket in range(first, bucket_of(until) + 1, BUCKET_S):
                pipe.hgetall(key_of(bucket))
            return cast(list[dict[bytes, bytes]], await pipe.execute())

    # -- what dispatchers are asked to compare, and the rollouts' status ---------------------------------------

    async def set_comparison(self, model: str, rule: Mapping[str, Any] | None) -> None:
        """Make ``model`` a candidate (``rule``: mode shadow|mirror, percent, aliases, reference) or none."""
        if rule is None:
            await self.redis.hdel(self.keys.model_compare, model)
        else:
            await self.redis.hset(self.keys.model_compare, model, json.dumps(dict(rule), sort_keys=True))

    async def comparisons(self) -> dict[str, dict[str, Any]]:
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(self.keys.model_compare))
        return {name.decode(): json.loads(value) for name, value in raw.items()}

    async def set_rollout(self, model: str, status: Mapping[str, Any] | None) -> None:
        if status is None:
            await self.redis.hdel(self.keys.model_rollouts, model)
        else:
            await self.redis.hset(self.keys.model_rollouts, model, json.dumps(dict(status), sort_keys=True))

    async def rollouts(self) -> dict[str, dict[str, Any]]:
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(self.keys.model_rollouts))
        return {name.decode(): json.loads(value) for name, value in raw.items()}

    async def forget(self, models: Iterable[str]) -> None:
        """Drop the comparison and rollout entries of models that are gone."""
        names = list(models)
        if names:
            await self.redis.hdel(self.keys.model_compare, *names)
            await self.redis.hdel(self.keys.model_rollouts, *names)


OVERVIEW_WINDOW_S: Final = 900
"""``overview`` reports the last 15 minutes of evidence."""


async def overview(redis: Redis, window_s: float = OVERVIEW_WINDOW_S) -> dict[str, list[dict[str, Any]]]:
    """What ``aic models status`` and ``GET /models`` (admin) show: every alias's versions with their published,
    requested and overridden weights and recent outcomes; every comparison with its recent agreement; every
    rollout's status. Plain data (camelCase keys, as in ``status.rollout``)."""
    store = EvidenceStore(redis)
    names = store.keys
    since = time.time() - window_s
    raw_weights = cast(dict[bytes, bytes], await redis.hgetall(names.model_weights))
    by_alias = {alias.decode(): json.loads(value) for alias, value in sorted(raw_weights.items())}
    requested = cast(dict[bytes, bytes], await redis.hgetall(names.model_requested))
    overrides = cast(dict[bytes, bytes], await redis.hgetall(names.model_overrides))
    versions = []
    for alias, weights in by_alias.items():
        for model, weight in sorted(weights.items()):
            outcomes = await store.outcomes(alias, model, since)
            forced = overrides.get(model.encode())
            versions.append(
                {
                    "alias": alias,
                    "version": model,
                    "weight": int(weight),
                    "requestedWeight": int(requested.get(model.encode(), weight)),
                    "overridden": forced is not None and int(forced) >= 0,
                    "jobs": outcomes.jobs,
                    "errors": outcomes.errors,
                    "p95Ms": None if outcomes.p95_ms is None or math.isinf(outcomes.p95_ms) else outcomes.p95_ms,
                }
            )
    comparisons = []
    for candidate, rule in sorted((await store.comparisons()).items()):
        for alias in rule.get("aliases") or ():
            references = [rule["reference"]] if rule.get("reference") else sorted(by_alias.get(alias, {}))
            for reference in references:
                if reference == candidate:
                    continue
                agreement = await store.agreement(alias, candidate, reference, since)
                comparisons.append(
                    {
                        "alias": alias,
                        "candidate": candidate,
                        "reference": reference,
                        "mode": rule.get("mode"),
                        "percent": rule.get("percent"),
                        **agreement.as_dict(),
                    }
                )
    rollouts = [{"version": model, **state} for model, state in sorted((await store.rollouts()).items())]
    return {"versions": versions, "comparisons": comparisons, "rollouts": rollouts}
