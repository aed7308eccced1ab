"""Deadlines: the sweep that fails every live job whose deadline passed, wherever it is, with TIMEOUT.

Jobs are found through ``jobs:deadlines`` (job id -> deadline ms), one key written outside the jobs' steps; each
job is then ended by its own step (``lua/timeout.lua``), which checks again that it is live and past its deadline,
so a job ends once whoever gets there first: the sweep, a dispatcher taking it from the queue, or a dispatcher
about to store its result (``aic.dispatch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, cast

from redis.asyncio import Redis

from aic.core.enums import ErrorCode, JobStatus
from aic.core.timeutil import now_iso
from aic.store import keys, scripts, usage
from aic.store.calls import Timeout
from aic.store.connection import guarded, keyspace, keyspaces
from aic.store.jobs import Job, deadline_set, find_jobs, now_ms_
from aic.store.objects import Uploads

SWEEP_BATCH: Final = 200
"""Due entries one sweep round takes; a longer backlog is worked off over the following rounds."""
TIMEOUT_MESSAGE: Final = "Deadline exceeded: the job did not finish before its deadline_at"


@guarded
class DeadlineSweep:
    def __init__(self, redis: Redis, uploads: Uploads | None = None) -> None:
        self.redis = redis
        self.uploads = uploads
        """With an object store: the uploads of the jobs a sweep timed out are deleted after their steps."""
        self.keys = keyspace(redis)
        self._usage = usage.UsageWriter()

    async def sweep(self, now_ms: int | None = None) -> list[Job]:
        """Fail the live jobs whose deadline passed (up to ``SWEEP_BATCH`` per shard, every shard's deadline set, and
        while migrating the previous layout's too); those it failed (as they were)."""
        now_ms = now_ms_() if now_ms is None else now_ms
        sets = [names.deadlines(shard) for names in keyspaces(self.redis) for shard in names.all_shards()]
        async with self.redis.pipeline(transaction=False) as pipe:
            for deadlines in dict.fromkeys(sets):
                pipe.zrangebyscore(deadlines, "-inf", now_ms, start=0, num=SWEEP_BATCH)
            replies = cast(list[list[bytes]], await pipe.execute())
        due = list(dict.fromkeys(member.decode() for reply in replies for member in reply))
        if not due:
            return []
        jobs = [job for job, _ in await find_jobs(self.redis, due)]  # while migrating: the previous layout's too
        live = [job for job in jobs if job is not None and job.status.live and job.past_deadline(now_ms)]
        timed_out = await self._time_out(live, now_ms)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, job in zip(due, jobs, strict=True):
                if job is not None and job.status.live and not job.past_deadline(now_ms):
                    pipe.zadd(
                        deadline_set(job, self.keys), {job_id: job.deadline_ms}
                    )  # moved on (a retried dead letter)
                else:
                    for deadlines in dict.fromkeys(
                        names.deadlines(names.shard(job_id)) for names in keyspaces(self.redis)
                    ):
                        pipe.zrem(deadlines, job_id)
            tally = usage.Tally()
            for job in timed_out:
                tally.add(job.tenant, usage.ended(str(JobStatus.FAILED), str(ErrorCode.TIMEOUT)))
            self._usage.add(pipe, tally.counts)
            await pipe.execute()
        if self.uploads is not None:  # after the jobs' own steps, as for a finish (aic.store.transitions)
            await self.uploads.delete([job.upload for job in timed_out if job.upload])
        return timed_out

    async def _time_out(self, jobs: Sequence[Job], now_ms: int) -> list[Job]:
        if not jobs:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                now = now_iso()
                code = str(ErrorCode.TIMEOUT)
                event = job.event(status="failed", error_message=TIMEOUT_MESSAGE, error_code=code, updated_at=now)
                job_id, names = job.job_id, job.names or self.keys
                call = Timeout(
                    status=names.job_status(job_id), image=names.job_image(job_id),
                    metadata=names.job_metadata(job_id), events=names.job_events(job_id),
                    waiter=job.waiter or names.job_events(job_id), outbox=names.webhook_outbox(names.shard(job_id)),
                    now_ms=now_ms, event=event, updated_at=now, message=TIMEOUT_MESSAGE, code=code,
                    ttl=keys.JOB_RESULT_TTL_S,
                )  # fmt: skip
                scripts.queue(self.redis, pipe, call)
            replies = await scripts.execute(self.redis, pipe)
        return [job for job, reply in zip(jobs, replies, strict=True) if reply]
