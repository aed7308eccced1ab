"""One tenant's jobs, newest first (``GET /jobs``): a sorted set per tenant, job ids scored by creation time (ms).

Order is (created desc, job id desc); a cursor is the position of the last job of a page, so jobs submitted
while a client pages arrive before its position and never shift a page (no duplicate, no skip). The creation
window (``created_after``/``created_before``) is the index's own range; status, priority and model_version are
not indexed: a page reads jobs in index order and keeps the matching ones, examining at most ``SCAN_BUDGET``
entries, and then answers what it found with a cursor to go on from (a short or even empty page with a cursor
means "keep following"). Entries whose job expired or was erased are removed as pages meet them, and by age on
submit (hourly per API process, ``JobStore``); the whole set expires when its tenant stops submitting.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, cast

from redis.asyncio import Redis

from aic.core.enums import JobStatus, Priority
from aic.core.errors import BadRequestError
from aic.store import keys
from aic.store.connection import guarded, keyspace
from aic.store.jobs import Job, find_jobs

SCAN_BUDGET: Final = 1000
"""Index entries one page examines at most when a filter that is not indexed skips jobs."""
_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_TOP = 2**53
"""A score above any creation time (ms): the start of the index."""


@dataclass(frozen=True, order=True)
class Position:
    """A place in a tenant's index: entries after it have a lower score, or the same score and a lower id."""

    score: int
    job_id: str = ""

    def cursor(self) -> str:
        return base64.urlsafe_b64encode(f"{self.score}:{self.job_id}".encode()).decode().rstrip("=")

    @classmethod
    def from_cursor(cls, raw: str) -> Position:
        """The position a cursor names; BadRequestError for anything this service did not hand out."""
        try:
            text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
            score, job_id = text.split(":", 1)
            position = cls(int(score), job_id)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise BadRequestError("Invalid cursor: pass the next_cursor of a previous page unchanged") from None
        if not 0 <= position.score <= _TOP or not _ID.match(position.job_id):
            raise BadRequestError("Invalid cursor: pass the next_cursor of a previous page unchanged")
        return position


@dataclass(frozen=True)
class JobFilter:
    status: JobStatus | None = None
    priority: Priority | None = None
    model_version: str | None = None
    created_after_ms: int | None = None
    """Inclusive."""
    created_before_ms: int | None = None
    """Exclusive."""

    @property
    def indexed_only(self) -> bool:
        return self.status is None and self.priority is None and self.model_version is None

    def matches(self, job: Job) -> bool:
        return (
            (self.status is None or job.status is self.status)
            and (self.priority is None or job.priority is self.priority)
            and (self.model_version is None or job.model_version == self.model_version)
        )


@guarded
class JobIndex:
    """Reads and trims the per-tenant index."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.keys = keyspace(redis)

    async def remove(self, tenant: str, job_ids: Sequence[str]) -> None:
        if job_ids:
            await self.redis.zrem(keys.tenant_jobs(tenant), *job_ids)

    async def page(
        self, tenant: str, limit: int, where: JobFilter, after: Position | None = None
    ) -> tuple[list[Job], Position | None]:
        """Up to ``limit`` of the tenant's jobs after ``after`` (from the newest without), and the position to go
        on from (None: nothing more)."""
        start = Position(_TOP)
        if where.created_before_ms is not None:
            start = Position(where.created_before_ms)  # "" sorts first: exactly the scores below it
        if after is not None:
            start = min(start, after)
        low = where.created_after_ms if where.created_after_ms is not None else 0
        chunk = limit + 1 if where.indexed_only else max(limit + 1, 100)
        found: list[tuple[Position, Job]] = []
        stale: list[str] = []
        examined = 0
        position = start
        try:
            while examined < SCAN_BUDGET:
                batch, exhausted = await self._after(tenant, position, low, min(chunk, SCAN_BUDGET - examined))
                jobs = await self._jobs([p.job_id for p in batch])
                for entry, job in zip(batch, jobs, strict=True):
                    examined += 1
                    position = entry
                    if job is None or job.tenant != tenant:
                        stale.append(entry.job_id)
                    elif where.matches(job):
                        found.append((entry, job))
                        if len(found) > limit:
                            return [j for _, j in found[:limit]], found[limit - 1][0]
                if exhausted:
                    return [j for _, j in found], None
            return [j for _, j in found], position
        finally:
            await self.remove(tenant, stale)

    async def _after(self, tenant: str, position: Position, low: int, count: int) -> tuple[list[Position], bool]:
        """Up to ``count`` entries after ``position`` with a score of at least ``low``; whether that was all."""
        key = keys.tenant_jobs(tenant)
        if position.score < low:
            return [], True
        async with self.redis.pipeline(transaction=False) as pipe:
            if position.job_id:  # the entries that share its score and have a lower id come first
                pipe.zrange(key, position.score, position.score, byscore=True)
            pipe.zrange(key, f"({position.score}", low, desc=True, byscore=True, offset=0, num=count, withscores=True)
            replies = await pipe.execute()
        ties: list[Position] = []
        if position.job_id:
            members = sorted((m.decode() for m in cast(list[bytes], replies[0])), reverse=True)
            ties = [Position(position.score, m) for m in members if m < position.job_id][:count]
        rest = [Position(int(score), member.decode()) for member, score in replies[-1]]
        batch = (ties + rest)[:count]
        return batch, len(rest) < count and len(ties) + len(rest) <= count

    async def _jobs(self, job_ids: Sequence[str]) -> list[Job | None]:
        """The jobs (None: gone); while migrating, those not found are looked up under the previous layout."""
        return [job for job, _ in await find_jobs(self.redis, job_ids)]
