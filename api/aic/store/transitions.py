"""The dispatcher's side of a job's life: what a queue entry leads to, progress through the stages, completion
and failure. Every call is one round trip for a whole batch; completion and failure are one Lua step per job
(``lua/finish.lua``) that writes the result or error, acknowledges the queue entry and queues the webhook, and
refuses a job that already ended, so a redelivered or cancelled job never gets a second result.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from redis.asyncio import Redis

from aic.core.enums import STAGE_PROGRESS, JobStatus, Stage
from aic.core.errors import StoreUnavailable
from aic.core.timeutil import now_iso
from aic.store import keys, scripts, usage
from aic.store.calls import Advance, Finish
from aic.store.connection import UNAVAILABLE, guarded, keyspace
from aic.store.jobs import Job, deadline_set, statuses
from aic.store.objects import Uploads
from aic.store.queue import Entry

log = logging.getLogger("aic.store")


class Held(Protocol):
    """A job a dispatcher holds, with the queue entry that brought it."""

    @property
    def job(self) -> Job: ...

    @property
    def entry(self) -> Entry: ...


@dataclass(frozen=True)
class Taken:
    """What a queue entry leads to: its job and upload, or nothing (the job expired or never existed)."""

    entry: Entry
    job: Job | None
    image: bytes | None


@dataclass(frozen=True)
class Completion:
    """A finished job and its result body (ClassificationResult JSON)."""

    job: Job
    entry: Entry
    result: bytes
    model: str = ""
    """The Triton model that served it (the tenant's usage counts its inference time per model)."""
    inference_ms: float = 0.0
    """Its share of the Triton call's time."""


@guarded
class JobTransitions:
    """The dispatcher's side of jobs: every call is one round trip for a whole batch."""

    def __init__(self, redis: Redis, uploads: Uploads | None = None) -> None:
        self.redis = redis
        self.uploads = uploads
        """With an object store: uploads are read from there, and deleted once their jobs have ended."""
        self.keys = keyspace(redis)
        self._usage = usage.UsageWriter()

    async def take(self, entries: Sequence[Entry]) -> list[Taken]:
        """The job and upload of each entry, in order; StoreUnavailable while an upload cannot be read."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:  # an entry of the previous layout (migrating): its job is named the same way
                names = entry.names or self.keys
                pipe.hgetall(names.job_status(entry.job_id or "-"))
                pipe.get(names.job_image(entry.job_id or "-"))
            replies = await pipe.execute()
        raws = replies[::2]
        jobs = [
            Job.from_hash(raw, entry.names) if entry.job_id and raw else None
            for entry, raw in zip(entries, raws, strict=True)
        ]
        images: list[bytes | None] = replies[1::2]
        if self.uploads is None and any(job and job.upload for job in jobs):
            # a misconfigured dispatcher must not read a path as an image: the jobs wait, the log says why
            raise StoreUnavailable("uploads are in an object store but this process has no OBJECT_STORE_URL")
        if self.uploads is not None:  # a job keeps its object's path as long as it would keep the bytes
            pairs = zip(jobs, images, strict=True)
            paths = [job.upload if job and job.upload and image else None for job, image in pairs]
            if any(paths):
                found = await self.uploads.get(paths)
                images = [data if path else image for path, data, image in zip(paths, found, images, strict=True)]
        return [Taken(entry, job, image) for entry, job, image in zip(entries, jobs, images, strict=True)]

    async def start(self, held: Sequence[Held]) -> list[bool]:
        """Count one more delivery of each job and move it to processing (``initializing``); whether each is live."""
        return await self._advance_all(held, Stage.INITIALIZING, count_attempt=True)

    async def advance(self, held: Sequence[Held], stage: Stage) -> list[bool]:
        """Move live jobs to ``stage`` (a no-op for jobs cancelled meanwhile); whether each was still live."""
        return await self._advance_all(held, stage)

    async def _advance_all(self, held: Sequence[Held], stage: Stage, *, count_attempt: bool = False) -> list[bool]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in held:
                self._advance_call(pipe, item.job, stage, count_attempt=count_attempt)
            replies = await scripts.execute(self.redis, pipe)
        return [bool(reply) for reply in replies]

    def _advance_call(self, pipe: Any, job: Job, stage: Stage, *, count_attempt: bool = False) -> None:
        now = now_iso()
        status, progress = JobStatus.PROCESSING, STAGE_PROGRESS[stage]
        event = job.event(status=str(status), stage=str(stage), progress=progress, updated_at=now)
        fields = ("status", str(status), "stage", str(stage), "progress", str(progress), "updated_at", now)
        names = job.names or self.keys
        call = Advance(
            status=names.job_status(job.job_id), events=names.job_events(job.job_id),
            outbox=names.webhook_outbox(names.shard(job.job_id)), event=event,
            count_attempt="1" if count_attempt else "0", fields=fields,
        )  # fmt: skip
        scripts.queue(self.redis, pipe, call)

    async def still_live(self, held: Sequence[Held]) -> list[bool]:
        """Whether each job is still live (not cancelled meanwhile), in order."""
        found = await statuses(self.redis, [item.job.job_id for item in held])
        return [status is not None and status.live for status in found]

    async def complete(self, completions: Sequence[Completion], *, through: Stage | None = None) -> list[bool]:
        """Atomically per job: result, status, upload removal, event, webhook and acknowledgement. With ``through``
        each job first passes that stage (its event and progress), in the same round trip. Whether each job was
        completed by this call (False: it had ended already, e.g. cancelled or timed out: its result is dropped)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for done in completions:
                if through is not None:
                    self._advance_call(pipe, done.job, through)
                now = now_iso()
                fields = {"status": "completed", "stage": str(Stage.COMPLETED), "progress": "100", "updated_at": now}
                event = done.job.event(**{**fields, "progress": STAGE_PROGRESS[Stage.COMPLETED]})
                self._finish_call(pipe, done.job, done.entry, done.result, event, b"", fields)
            replies = await scripts.execute(self.redis, pipe)
        finished = [bool(reply) for reply in (replies[1::2] if through is not None else replies)]
        counts = [
            {**usage.ended("completed"), **usage.inference(done.model, done.inference_ms)} if done.model
            else usage.ended("completed")
            for done in completions
        ]  # fmt: skip
        await self._ended([done.job for done in completions], finished, counts)
        await self._delete_uploads([done.job for done, live in zip(completions, finished, strict=True) if live])
        return finished

    async def _ended(self, jobs: Sequence[Job], finished: Sequence[bool], counts: Sequence[dict[str, Any]]) -> None:
        """After the jobs' own steps: count the ends that happened in their tenants' usage, forget their deadlines.
        Outside the steps (not the jobs' keys); an outage here loses counts, never the jobs' ends."""
        tally = usage.Tally()
        for job, done, count in zip(jobs, finished, counts, strict=True):
            if done:
                tally.add(job.tenant, count)
        if not tally.counts:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                self._usage.add(pipe, tally.counts)
                for job, done in zip(jobs, finished, strict=True):
                    if done:
                        pipe.zrem(deadline_set(job, self.keys), job.job_id)
                await pipe.execute()
        except UNAVAILABLE as exc:
            log.warning("usage of %d ended jobs not counted: %s", sum(finished), exc)

    async def fail(self, held: Sequence[Held], error: str, code: str, *, dead_letter: bool = False) -> list[bool]:
        """Atomically per job: failed status, event, webhook and acknowledgement; with ``dead_letter`` the job
        is copied to the dead-letter stream and keeps its upload for a retry. Whether each job was failed by this
        call (False: it had ended already)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in held:
                job, entry = item.job, item.entry
                now = now_iso()
                fields = {"status": "failed", "error": error, "error_code": code, "updated_at": now}
                event = job.event(status="failed", error_message=error, error_code=code, updated_at=now)
                letter = b""
                if dead_letter:
                    body = {"job_id": job.job_id, "stream": entry.stream, "error": error, "code": code}
                    letter = msgspec.json.encode(body)
                self._finish_call(pipe, job, entry, b"", event, letter, fields)
            replies = await scripts.execute(self.redis, pipe)
        finished = [bool(reply) for reply in replies]
        await self._ended([item.job for item in held], finished, [usage.ended("failed", code)] * len(held))
        if not dead_letter:  # a dead letter keeps its upload for a retry; the sweep deletes it once that expired
            await self._delete_uploads([item.job for item, live in zip(held, finished, strict=True) if live])
        return finished

    async def sweep_uploads(self, interval_s: float, older_than_s: float) -> int | None:
        """Remove stray upload objects (``Uploads.sweep``), by one dispatcher of all per ``interval_s``: how many,
        or None when it was another's turn (or uploads are kept in Redis)."""
        if self.uploads is None:
            return None
        return await self.uploads.sweep_once_per_interval(self.redis, interval_s, older_than_s)

    async def _delete_uploads(self, ended: Sequence[Job]) -> None:
        """After the atomic finish (an object cannot be deleted inside it): the uploads of the jobs it ended."""
        if self.uploads is not None:
            await self.uploads.delete([job.upload for job in ended if job.upload])

    def _finish_call(
        self, pipe: Any, job: Job, entry: Entry, result: bytes, event: bytes, letter: bytes, fields: dict[str, str]
    ) -> None:
        job_id, names = job.job_id, job.names or self.keys
        shard = names.shard(job_id)
        call = Finish(
            status=names.job_status(job_id), result=names.job_result(job_id), image=names.job_image(job_id),
            metadata=names.job_metadata(job_id), stream=entry.stream, events=names.job_events(job_id),
            waiter=job.waiter or names.job_events(job_id), dead_stream=names.dead_letter_stream(shard),
            outbox=names.webhook_outbox(shard), dead_index=names.dead_letter_index(shard), group=keys.QUEUE_GROUP,
            entry_id=entry.entry_id, result_body=result, ttl=keys.JOB_RESULT_TTL_S, event=event, dead_letter=letter,
            image_ttl=keys.JOB_IMAGE_TTL_S, fields=tuple(part for pair in fields.items() for part in pair),
        )  # fmt: skip
        scripts.queue(self.redis, pipe, call)

    async def drop(self, entries: Sequence[Entry]) -> None:
        """Acknowledge and remove entries whose job no longer needs them (expired, cancelled, already ended)."""
        if not entries:
            return
        async with self.redis.pipeline(transaction=False) as pipe:  # per entry: XDEL after its XACK
            for entry in entries:
                pipe.xack(entry.stream, keys.QUEUE_GROUP, entry.entry_id)
                pipe.xdel(entry.stream, entry.entry_id)
            await pipe.execute()
