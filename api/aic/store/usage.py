"""Per-tenant usage: a hash of counters per tenant and UTC day, a few increments per job, kept ``USAGE_TTL_S``.

Counts are written outside the jobs' Lua steps (one key per tenant and day: Redis Cluster never needs a script
across slots) and only for a transition that happened: a submit whose jobs were created, and an end that the
job's own script reports it made (``finish.lua``, ``cancel.lua``, ``timeout.lua`` return whether the job was
still live). A redelivered job, refused by its script as already ended, is not counted again. A process that
dies between the script and the count leaves that one job uncounted: counters may miss, never double.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from redis.asyncio import Redis

from aic.core.schemas import TenantUsage, UsageCounts, UsageDay, UsageModel
from aic.store import keys
from aic.store.connection import guarded

MAX_DAYS = keys.USAGE_MAX_DAYS
"""The longest range a report covers."""
COUNTERS = ("submitted", "completed", "failed", "cancelled", "timed_out", "image_bytes")
JOBS_PREFIX = "jobs:"
INFERENCE_PREFIX = "inference_ms:"


def day_of(epoch_ms: int | None = None) -> str:
    """The UTC day (``YYYY-MM-DD``) of a moment, now by default."""
    seconds = time.time() if epoch_ms is None else epoch_ms / 1000
    return datetime.fromtimestamp(seconds, UTC).date().isoformat()


class UsageWriter:
    """Queues usage increments on a pipeline: all the counts of one round trip added up per tenant and day first
    (a batch of 16 jobs of one tenant is 3 increments, not 48). The key's TTL and the tenant's place in
    ``usage:tenants`` are set on the first write of each day by this writer (one per store object, so per
    process and Redis client), not on every write: each command costs the writing process ~0.1 ms here."""

    def __init__(self) -> None:
        self._touched: set[tuple[str, str]] = set()
        self._day = ""

    def add(self, pipe: Any, counts: Mapping[tuple[str, str], Mapping[str, int | float]]) -> None:
        """Queue ``counts`` ((tenant, day) -> counter name -> amount) on ``pipe``."""
        for (tenant, day), amounts in counts.items():
            key = keys.usage(tenant, day)
            for name, amount in amounts.items():
                if isinstance(amount, float):
                    pipe.hincrbyfloat(key, name, amount)
                else:
                    pipe.hincrby(key, name, amount)
            if day != self._day:
                self._touched.clear()  # yesterday's keys have their TTL: forget them, so the set stays small
                self._day = day
            if (tenant, day) not in self._touched:
                pipe.expire(key, keys.USAGE_TTL_S)
                pipe.sadd(keys.USAGE_TENANTS, tenant)
                self._touched.add((tenant, day))


class Tally:
    """Counts of one round trip, summed per (tenant, day)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], dict[str, int | float]] = {}

    def add(self, tenant: str, amounts: Mapping[str, int | float], day: str | None = None) -> None:
        into = self.counts.setdefault((tenant, day or day_of()), {})
        for name, amount in amounts.items():
            into[name] = into.get(name, 0) + amount


def ended(status: str, error_code: str | None = None) -> dict[str, int]:
    """The counters a job's end adds to: its status, and ``timed_out`` for a TIMEOUT failure."""
    counts = {status: 1}
    if error_code == "TIMEOUT":
        counts["timed_out"] = 1
    return counts


def inference(model: str, inference_ms: float) -> dict[str, int | float]:
    """The counters a completed job adds to for the model that served it."""
    return {f"{JOBS_PREFIX}{model}": 1, f"{INFERENCE_PREFIX}{model}": round(inference_ms, 3)}


def days_between(start: date, end: date) -> list[str]:
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def _counts(fields: Mapping[str, float]) -> UsageCounts:
    by_model = {
        k.removeprefix(INFERENCE_PREFIX): round(v, 3) for k, v in fields.items() if k.startswith(INFERENCE_PREFIX)
    }
    jobs = {k.removeprefix(JOBS_PREFIX): int(v) for k, v in fields.items() if k.startswith(JOBS_PREFIX)}
    return UsageCounts(
        **{name: int(fields.get(name, 0)) for name in COUNTERS},
        inference_ms=round(sum(by_model.values()), 3),
        inference_ms_by_model=by_model,
        jobs_by_model=jobs,
    )


def _sum(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for row in rows:
        for name, value in row.items():
            total[name] = total.get(name, 0) + value
    return total


@guarded
class UsageStore:
    """Reads the counters back for ``GET /usage``."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def tenants(self) -> list[str]:
        members = cast(set[bytes], await self.redis.smembers(keys.USAGE_TENANTS))
        return sorted(m.decode() for m in members)

    async def report(self, tenants: Sequence[str], start: date, end: date, group_by: str) -> list[TenantUsage]:
        """Each tenant's totals over the days ``start``..``end`` (inclusive), grouped by day or by model: one round
        trip per tenant, of one read per day (the range bounded by ``USAGE_MAX_DAYS``)."""
        days = days_between(start, end)
        found = []
        for tenant in tenants:
            async with self.redis.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(keys.usage(tenant, day))
                replies = await pipe.execute()
            rows = [{k.decode(): float(v) for k, v in reply.items()} for reply in replies]
            usage = TenantUsage(tenant=tenant, totals=_counts(_sum(rows)))
            if group_by == "day":
                usage.days = [
                    UsageDay(date=day, **_struct_fields(_counts(row)))
                    for day, row in zip(days, rows, strict=True)
                    if row
                ]
            else:
                totals = usage.totals
                usage.models = [
                    UsageModel(model=model, jobs=totals.jobs_by_model.get(model, 0), inference_ms=ms)
                    for model, ms in sorted(totals.inference_ms_by_model.items())
                ]
            found.append(usage)
        return found


def _struct_fields(counts: UsageCounts) -> dict[str, Any]:
    return {name: getattr(counts, name) for name in counts.__struct_fields__}
