"""The job record: one job's keys in Redis, and the API's side of its life (create, read, cancel, retry).

The dispatcher's side is ``aic.store.transitions``. Changes that must not interleave with a concurrent cancel
or a redelivery run as Lua scripts; the outcome comes back as a value or a domain error, never as a Lua string.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
from redis.asyncio import Redis

from aic.core.enums import ESTIMATE_MULTIPLIER, JobStatus, Priority
from aic.core.errors import (
    BadRequestError,
    JobConflictError,
    JobEndedError,
    JobNotFoundError,
    ServiceUnavailableError,
)
from aic.core.schemas import JobStatusResponse
from aic.core.settings import QueueSettings
from aic.core.timeutil import iso, now_iso
from aic.store import keys, scripts, usage
from aic.store.calls import Cancel, Create, CreateJob, Purge, Retry
from aic.store.connection import UNAVAILABLE, guard, guarded, is_cluster, keyspace, keyspaces
from aic.store.objects import Uploads, upload_path

log = logging.getLogger("aic.store")

ESTIMATE_BASE_S = 30.0  # seed 5.1: base processing time scaled by priority
DEFAULT_DEADLINE_S = keys.JOB_STATUS_TTL_S
"""A job's deadline when neither the submit nor ``QUEUE_TTL_S`` says otherwise."""
INDEX_UPKEEP_S = 3600.0
"""How often a store trims a tenant's index by age and renews its TTL (the TTL is the longest job lifetime, days)."""
ROUTED_FOR_S = 1.0
"""How long a store trusts that an alias it found routed still is, before it asks Redis again: the routes are one
key every submit would read (one primary of a cluster); a withdrawn alias is accepted this much longer (its job then
fails at the dispatcher, as one taken in the instant before a withdrawal always could)."""
DEFAULT_RETENTION_S = keys.JOB_RESULT_TTL_S
"""How long an ended job stays readable when its submit gave no ``retention_s`` (the seed's 24 h)."""


@dataclass(frozen=True)
class Job:
    """A job as its status hash holds it."""

    job_id: str
    tenant: str
    status: JobStatus
    priority: Priority
    model_version: str
    progress: int = 0
    stage: str | None = None
    created_at: str = ""
    updated_at: str = ""
    estimated_completion: str | None = None
    error: str | None = None
    error_code: str | None = None
    callback_url: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    attempts: int = 0
    image_metadata: dict[str, Any] = field(default_factory=dict)
    created_ms: int = 0
    deadline_ms: int = 0
    """Not finished by then (epoch ms), the job fails with TIMEOUT; 0 for a job stored before deadlines."""
    deadline_s: int = 0
    retention_s: int = keys.JOB_RESULT_TTL_S
    upload: str | None = None
    """The upload's path in the object store (``aic.store.objects``); None: its bytes are in Redis."""
    image_url: str | None = None
    """Submitted by URL: the dispatcher fetches the image from here (no bytes are stored for it)."""
    waiter: str = ""
    """The inbox of the API process waiting for the job to end (``NewJob.waiter``); empty: none."""
    names: keys.Keyspace | None = field(default=None, compare=False, repr=False)
    """The key layout the job was found in, when not the deployment's (a job written before a migration,
    ``KEY_LAYOUT_BEFORE``): its later steps use the same names."""

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes], names: keys.Keyspace | None = None) -> Job | None:
        """The job, or None for a hash that is not a whole job record (a stray field written after it expired);
        ``names``: the previous layout, for a job found there."""
        h = {k.decode(): v.decode() for k, v in raw.items()}
        if "job_id" not in h or "status" not in h:
            return None
        return cls(
            job_id=h["job_id"],
            tenant=h.get("tenant", ""),
            status=JobStatus(h["status"]),
            priority=Priority(h.get("priority", Priority.NORMAL)),
            model_version=h.get("model_version", "latest"),
            progress=int(h.get("progress", 0)),
            stage=h.get("stage") or None,
            created_at=h.get("created_at", ""),
            updated_at=h.get("updated_at", ""),
            estimated_completion=h.get("estimated_completion") or None,
            error=h.get("error") or None,
            error_code=h.get("error_code") or None,
            callback_url=h.get("callback_url") or None,
            traceparent=h.get("traceparent") or None,
            tracestate=h.get("tracestate") or None,
            attempts=int(h.get("attempts", 0)),
            image_metadata=json.loads(h.get("image_metadata") or "{}"),
            created_ms=int(h.get("created_ms") or 0),
            deadline_ms=int(h.get("deadline_ms") or 0),
            deadline_s=int(h.get("deadline_s") or 0),
            retention_s=int(h.get("retention_s") or keys.JOB_RESULT_TTL_S),
            upload=h.get("upload") or None,
            image_url=h.get("image_url") or None,
            waiter=h.get("waiter", ""),
            names=names,
        )

    def past_deadline(self, now_ms: int | None = None) -> bool:
        """Whether the job's deadline has passed (a job without one never times out this way)."""
        return bool(self.deadline_ms) and (now_ms if now_ms is not None else now_ms_()) >= self.deadline_ms

    def status_response(self) -> JobStatusResponse:
        """The job as ``GET /status/{id}`` shows it."""
        expires_at = None
        if self.status.terminal and self.updated_at:
            with contextlib.suppress(ValueError):
                ended = datetime.fromisoformat(self.updated_at)
                expires_at = iso(ended + timedelta(seconds=self.retention_s))
        return JobStatusResponse(
            job_id=self.job_id,
            status=self.status,
            progress=self.progress,
            stage=self.stage,
            updated_at=self.updated_at,
            error_message=self.error,
            error_code=self.error_code,
            created_at=self.created_at or None,
            priority=str(self.priority),
            model_version=self.model_version,
            deadline_at=iso_ms(self.deadline_ms) if self.deadline_ms else None,
            expires_at=expires_at,
        )

    def event(self, **changes: Any) -> bytes:
        """The message published on the job's events channel: its status as the API shows it."""
        body = msgspec.structs.asdict(self.status_response())
        body.pop("metadata")
        body.update(changes)
        return msgspec.json.encode(body)


@guard
async def statuses(redis: Redis, job_ids: Sequence[str]) -> list[JobStatus | None]:
    """Each job's status (None: gone), in order, in one round trip (while migrating, another for the jobs not
    found: under the previous layout's names)."""
    found: list[JobStatus | None] = [None] * len(job_ids)
    for names in keyspaces(redis):
        missing = [i for i, status in enumerate(found) if status is None]
        if not missing:
            break
        async with redis.pipeline(transaction=False) as pipe:
            for i in missing:
                pipe.hget(names.job_status(job_ids[i]), "status")
            replies = await pipe.execute()
        for i, reply in zip(missing, replies, strict=True):
            found[i] = JobStatus(reply.decode()) if reply is not None else None
    return found


async def find_jobs(redis: Redis, job_ids: Sequence[str], *, results: bool = False) -> list[tuple[Job | None, Any]]:
    """Each job (None: gone) and, with ``results``, its stored result, in order: one round trip, and while
    migrating (``KEY_LAYOUT_BEFORE``) one more for the jobs not found, under the previous layout's names. For the
    store's guarded classes (redis-py's errors pass through it)."""
    found: list[tuple[Job | None, Any]] = [(None, None)] * len(job_ids)
    current = keyspace(redis)
    for names in keyspaces(redis):
        missing = [i for i, (job, _) in enumerate(found) if job is None]
        if not missing:
            break
        async with redis.pipeline(transaction=False) as pipe:
            for i in missing:
                pipe.hgetall(names.job_status(job_ids[i]))
                if results:
                    pipe.get(names.job_result(job_ids[i]))
            replies = await pipe.execute()
        step = 2 if results else 1
        for n, i in enumerate(missing):
            raw = replies[n * step]
            job = Job.from_hash(raw, None if names == current else names) if raw else None
            found[i] = (job, replies[n * step + 1] if results else None)
    return found


def now_ms_() -> int:
    return int(time.time() * 1000)


def iso_ms(epoch_ms: int) -> str:
    return iso(datetime.fromtimestamp(epoch_ms / 1000, UTC))


@dataclass(frozen=True)
class NewJob:
    """What a submit stores for one image; the jobs of one request share everything but the image."""

    job_id: str
    tenant: str
    image: bytes
    image_metadata: dict[str, Any]
    priority: Priority
    model_version: str
    metadata: dict[str, Any] | None = None
    callback_url: str | None = None
    webhook_events: str = ""
    traceparent: str | None = None
    """W3C trace context of the job's enqueue span: the dispatcher continues the trace from it."""
    tracestate: str | None = None
    upload: str | None = None
    """The path of an object already in the object store (a claimed direct upload, ``aic.store.direct``; its
    ``job_id`` is the upload id): nothing is written, ``image`` is ignored."""
    image_url: str | None = None
    """Submitted by URL: no bytes are stored (``image`` is ignored); the dispatcher fetches the image."""
    waiter: str = ""
    """The inbox channel of the API process that waits for the job to end (``Prefer: wait``; ``aic.live.hub``), told
    the job's id when it ends; empty: nobody waits that way."""
    deadline_s: int = DEFAULT_DEADLINE_S
    """Not finished this many seconds after its submit, the job fails with TIMEOUT."""
    retention_s: int = DEFAULT_RETENTION_S
    """Once ended, the job stays readable this long."""


@guarded
class JobStore:
    """The API's side of jobs. One per process, sharing the process's connection pool."""

    def __init__(self, redis: Redis, queue: QueueSettings | None = None, uploads: Uploads | None = None) -> None:
        self.redis = redis
        self.queue = queue or QueueSettings()
        self.uploads = uploads
        """With an object store: uploads are written there first, and the jobs keep their paths."""
        self.keys = keyspace(redis)
        self._usage = usage.UsageWriter()
        self._routed: dict[str, float] = {}
        """Alias -> when this store last found it routed (monotonic s)."""
        self._index_kept: dict[str, float] = {}
        """Tenant -> when this store last trimmed its index and renewed its TTL (monotonic s)."""

    @property
    def lifetime_s(self) -> int:
        """The longest any job can live: its longest deadline, the slack, then its longest retention."""
        return self.queue.max_deadline_s + keys.LIVE_SLACK_S + self.queue.max_retention_s

    async def _store_images(self, new_jobs: Sequence[NewJob]) -> dict[str, bytes]:
        """What each job's image key holds: its bytes, or with an object store the path they were written to (empty
        for a job submitted by URL: its image is fetched by the dispatcher)."""
        stored: dict[str, bytes] = {new.job_id: new.image for new in new_jobs}
        if self.uploads is not None:
            held = [new for new in new_jobs if not new.image_url]
            paths = {new.job_id: new.upload or upload_path(new.tenant, new.job_id) for new in held}
            await self.uploads.put([(paths[new.job_id], new.image) for new in held if new.upload is None])
            stored.update({job_id: path.encode() for job_id, path in paths.items()})
        for new in new_jobs:
            if new.image_url:  # an empty image key: the job's bytes are fetched, and it lives as long as one with bytes
                stored[new.job_id] = b""
        return stored

    async def create(self, new_jobs: Sequence[NewJob], queue: QueueSettings | None = None) -> list[Job]:
        """Store the uploads and job records of one request and enqueue them, in one atomic step: all or none.

        Refused with BadRequestError when the request's alias routes to no model, and with
        ServiceUnavailableError (Retry-After) when the jobs would take the queues past ``queue_max_depth``.
        The alias is checked against the routes first (one key of its own; once found, trusted for
        ``ROUTED_FOR_S``). Then one round trip per queue shard the jobs fall in (one, unless they are direct uploads
        of several shards): the uploads and ``lua/create.lua`` in one transaction; a shard refusing after another
        accepted erases what the other created. Then,
        outside it (not the jobs' keys), the tenant's index entries, the deadlines and the usage counters. With an
        object store the uploads are written there first (StoreUnavailable: no job was created) and Redis gets
        their paths; a refusal deletes them again (a crash in between leaves them to the sweep).
        """
        queue = queue or self.queue
        aliases = {new.model_version for new in new_jobs}
        if len(aliases) != 1:
            raise ValueError(f"the jobs of one request share one model_version, got {sorted(aliases)}")
        [alias] = aliases
        if time.monotonic() - self._routed.get(alias, -ROUTED_FOR_S) >= ROUTED_FOR_S:
            await self._check_routed(alias)
        jobs: list[Job] = []
        items: list[CreateJob] = []
        stored = await self._store_images(new_jobs)
        for new in new_jobs:
            job, item = self._new_job(new, stored[new.job_id])
            jobs.append(job)
            items.append(item)
        by_shard: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            by_shard.setdefault(self.keys.shard(job.job_id), []).append(i)
        share = -(-queue.queue_max_depth // self.keys.shards)  # each shard holds its share of the depth
        accepted: list[Job] = []
        for shard, members in by_shard.items():
            streams = self.keys.queues(shard)
            call = Create(
                urgent=streams[0], high=streams[1], normal=streams[2], low=streams[3],
                dead_index=self.keys.dead_letter_index(shard), max_depth=share,
                jobs=tuple(items[i] for i in members),
            )  # fmt: skip
            async with self.redis.pipeline(transaction=True) as pipe:
                for i in members:
                    pipe.set(items[i].image, stored[jobs[i].job_id], ex=items[i].ttl)
                scripts.queue(self.redis, pipe, call)
                reply = (await scripts.execute(self.redis, pipe, transaction=True))[-1]
            outcome = [_text(part) for part in reply]
            if outcome[0] == "ok":
                accepted += [jobs[i] for i in members]
                continue
            # refused: what this request wrote goes again (a direct upload stays for another submit)
            for done in accepted:
                with contextlib.suppress(JobNotFoundError, JobEndedError):
                    await self.purge(done, counted=False)
            await self.delete_uploads([job for job, new in zip(jobs, new_jobs, strict=True) if new.upload is None])
            limit = str(queue.queue_max_depth)
            if self.keys.shards > 1:
                limit = f"{share} per queue shard: {queue.queue_max_depth} over {self.keys.shards} shards"
            raise ServiceUnavailableError(
                f"Queue is full ({int(outcome[1])} jobs waiting{' in its shard' * (self.keys.shards > 1)}, limit "
                f"{limit}); retry later",
                headers={"Retry-After": str(queue.queue_full_retry_after_s)},
            )
        await self._created(jobs, [len(new.image) for new in new_jobs])
        return jobs

    def _new_job(self, new: NewJob, stored: bytes) -> tuple[Job, CreateJob]:
        """One job of a request: its record, and the keys and arguments ``lua/create.lua`` stores it with."""
        created_ms = now_ms_()
        now = iso_ms(created_ms)
        job = Job(
            job_id=new.job_id,
            tenant=new.tenant,
            status=JobStatus.PENDING,
            priority=new.priority,
            model_version=new.model_version,
            created_at=now,
            updated_at=now,
            estimated_completion=now_iso(ESTIMATE_BASE_S * ESTIMATE_MULTIPLIER[new.priority]),
            callback_url=new.callback_url,
            traceparent=new.traceparent,
            tracestate=new.tracestate,
            image_metadata=new.image_metadata,
            created_ms=created_ms,
            deadline_ms=created_ms + new.deadline_s * 1000,
            deadline_s=new.deadline_s,
            retention_s=new.retention_s,
            upload=stored.decode() or None if self.uploads is not None else None,
            image_url=new.image_url,
        )
        record = {
            "job_id": job.job_id,
            "tenant": job.tenant,
            "status": str(job.status),
            "progress": "0",
            "stage": "",
            "priority": str(job.priority),
            "model_version": job.model_version,
            "created_at": now,
            "updated_at": now,
            "estimated_completion": job.estimated_completion or "",
            "callback_url": job.callback_url or "",
            "webhook_events": new.webhook_events,
            "traceparent": job.traceparent or "",
            "tracestate": job.tracestate or "",
            "image_metadata": json.dumps(job.image_metadata),
            "attempts": "0",
            "created_ms": str(created_ms),
            "deadline_ms": str(job.deadline_ms),
            "deadline_s": str(new.deadline_s),
            "retention_s": str(new.retention_s),
        }
        if new.waiter:
            record["waiter"] = new.waiter
        if job.upload:
            record["upload"] = job.upload
        if job.image_url:
            record["image_url"] = job.image_url
        job_id = job.job_id
        return job, CreateJob(
            status=self.keys.job_status(job_id),
            image=self.keys.job_image(job_id),
            metadata=self.keys.job_metadata(job_id),
            queue=self.keys.queue(job.priority, self.keys.shard(job_id)),
            job_id=job_id,
            metadata_json=json.dumps(new.metadata) if new.metadata else "",
            ttl=live_ttl_s(new.deadline_s),
            record=json.dumps([part for pair in record.items() for part in pair]),
        )

    async def _check_routed(self, alias: str) -> None:
        """BadRequestError unless ``alias`` routes to a model now (then trusted for ``ROUTED_FOR_S``)."""
        if not await self.redis.hexists(self.keys.model_routes, alias):
            names = cast(list[bytes], await self.redis.hkeys(self.keys.model_routes))
            known = ", ".join(sorted(name.decode() for name in names))
            raise BadRequestError(f"Unknown model_version {alias!r} (available: {known or 'none published yet'})")
        self._routed[alias] = time.monotonic()

    def _by_deadlines(self, jobs: Sequence[Job]) -> dict[str, dict[str, float]]:
        """The jobs' deadline entries, by the deadline set of their shard."""
        found: dict[str, dict[str, float]] = {}
        for job in jobs:
            found.setdefault(deadline_set(job, self.keys), {})[job.job_id] = job.deadline_ms
        return found

    def new_ids(self, count: int) -> list[str]:
        """Ids for the jobs of one request, all of one queue shard, so one atomic step creates them all."""
        ids = [str(uuid.uuid4())]
        while len(ids) < count:
            candidate = str(uuid.uuid4())
            if self.keys.shard(candidate) == self.keys.shard(ids[0]):
                ids.append(candidate)
        return ids

    async def _created(self, jobs: Sequence[Job], sizes: Sequence[int]) -> None:
        """Index, deadline and usage of created jobs: idempotent writes outside the jobs' step. The jobs are
        accepted already: an outage here is logged, not raised (the client must not submit them again); such a
        job is missing from its tenant's list and counters, and still times out when taken."""
        tenant = jobs[0].tenant
        tally = usage.Tally()
        tally.add(tenant, {"submitted": len(jobs), "image_bytes": sum(sizes)})
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                index = keys.tenant_jobs(tenant)
                pipe.zadd(index, {job.job_id: job.created_ms for job in jobs})
                for deadlines, entries in self._by_deadlines(jobs).items():
                    pipe.zadd(deadlines, entries)
                if time.monotonic() - self._index_kept.get(tenant, -INDEX_UPKEEP_S) >= INDEX_UPKEEP_S:
                    # entries older than any job can live, and the index's own TTL: an hourly chore, not per submit
                    pipe.zremrangebyscore(index, "-inf", jobs[0].created_ms - self.lifetime_s * 1000)
                    pipe.expire(index, self.lifetime_s)
                    self._index_kept[tenant] = time.monotonic()
                self._usage.add(pipe, tally.counts)
                await pipe.execute()
        except UNAVAILABLE as exc:
            log.warning("jobs %s created but not indexed: %s", [job.job_id for job in jobs], exc)

    async def get(self, job_id: str, tenant: str | None = None) -> Job:
        """The job, or JobNotFoundError; another tenant's job is reported exactly like an unknown one. While
        migrating, a job not found under the deployment's names is looked up under the previous layout's."""
        [(job, _)] = await find_jobs(self.redis, [job_id])
        if job is None or (tenant is not None and job.tenant != tenant):
            raise JobNotFoundError(job_id)
        return job

    async def with_results(self, job_ids: Sequence[str], tenant: str | None = None) -> list[tuple[Job, bytes | None]]:
        """Each job with its stored result (None until it completed), in one round trip (two while migrating);
        JobNotFoundError as ``get``."""
        found = []
        for job_id, (job, result) in zip(job_ids, await find_jobs(self.redis, job_ids, results=True), strict=True):
            if job is None or (tenant is not None and job.tenant != tenant):
                raise JobNotFoundError(job_id)
            found.append((job, cast(bytes | None, result)))
        return found

    async def ended(self, job_ids: Sequence[str]) -> bool:
        """Whether every job has ended (or is gone), in one round trip."""
        return all(status is None or status.terminal for status in await statuses(self.redis, job_ids))

    async def metadata(self, job_id: str) -> dict[str, Any]:
        raw = await self._first([names.job_metadata(job_id) for names in keyspaces(self.redis)])
        return cast(dict[str, Any], json.loads(raw)) if raw else {}

    async def result(self, job_id: str) -> bytes | None:
        """The stored result JSON of a completed job (None before completion or once expired)."""
        return await self._first([names.job_result(job_id) for names in keyspaces(self.redis)])

    async def _first(self, names: Sequence[str]) -> bytes | None:
        """The value of the first of ``names`` that exists (a job's key under each layout it may be in)."""
        for name in names:
            value = cast(bytes | None, await self.redis.get(name))
            if value is not None:
                return value
        return None

    async def cancel(self, job: Job) -> None:
        """Cancel a live job atomically; JobNotFoundError when it is gone, JobEndedError once it has ended. A cancel
        that happened is counted in the tenant's usage (once: the script says whether it did)."""
        now = now_iso()
        event = job.event(status=str(JobStatus.CANCELLED), updated_at=now)
        job_id, names = job.job_id, job.names or self.keys
        call = Cancel(
            status=names.job_status(job_id), image=names.job_image(job_id), metadata=names.job_metadata(job_id),
            events=names.job_events(job_id), waiter=job.waiter or names.job_events(job_id),
            outbox=names.webhook_outbox(names.shard(job_id)), event=event, updated_at=now, ttl=keys.JOB_RESULT_TTL_S,
        )  # fmt: skip
        outcome = _text(await scripts.run(self.redis, call))
        if outcome == "ok":
            await self.delete_uploads([job])
        if outcome == "":
            raise JobNotFoundError(job.job_id)
        if outcome != "ok":
            raise JobEndedError(
                f"Job already {outcome}: only pending or processing jobs can be cancelled", status=outcome
            )
        tally = usage.Tally()
        tally.add(job.tenant, usage.ended(str(JobStatus.CANCELLED)))
        try:  # the cancel happened: an outage now costs the count, not the answer
            async with self.redis.pipeline(transaction=False) as pipe:
                self._usage.add(pipe, tally.counts)
                pipe.zrem(deadline_set(job, self.keys), job.job_id)
                await pipe.execute()
        except UNAVAILABLE as exc:
            log.warning("job %s cancelled but not counted: %s", job.job_id, exc)

    async def purge(self, job: Job, *, counted: bool = True) -> None:
        """Erase a job: cancel it if it is still live, then delete every key of it (status, result, upload,
        metadata, webhook attempts, dead letter) in one step, then its index and deadline entries. Afterwards the
        job is unknown everywhere. Its usage counts stay: they are the tenant's totals, not the job's data."""
        if job.status.live and counted:
            with contextlib.suppress(JobEndedError, JobNotFoundError):  # it ended or went meanwhile: erased anyway
                await self.cancel(job)
        job_id, names = job.job_id, job.names or self.keys
        shard = names.shard(job_id)
        if names.sharded or not is_cluster(self.redis):
            call = Purge(
                status=names.job_status(job_id), result=names.job_result(job_id), image=names.job_image(job_id),
                metadata=names.job_metadata(job_id), webhooks=names.job_webhooks(job_id),
                dead_stream=names.dead_letter_stream(shard), dead_index=names.dead_letter_index(shard), job_id=job_id,
            )  # fmt: skip
            await scripts.run(self.redis, call)
        else:  # a standalone install's job copied into a cluster: its keys and the shared ones are in other slots
            for name in (names.job_status, names.job_result, names.job_image, names.job_metadata, names.job_webhooks):
                await self.redis.delete(name(job_id))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.tenant_jobs(job.tenant), job_id)
            pipe.zrem(deadline_set(job, self.keys), job_id)
            await pipe.execute()
        await self.delete_uploads([job])  # an ended job's object (a dead letter keeps it): the record is gone now

    async def delete_uploads(self, jobs: Sequence[Job]) -> None:
        """Delete the upload objects of jobs that no longer need them (ended, cancelled, purged), best effort: one
        left behind is the sweep's. Call it after the step that ended the jobs, never before. A no-op for uploads
        kept in Redis (the job's own keys hold them)."""
        if self.uploads is not None:
            await self.uploads.delete([job.upload for job in jobs if job.upload])

    async def retry_dead(self, job: Job) -> None:
        """Put a dead-lettered job whose upload is still stored back on its queue (and out of the dead letters).

        JobNotFoundError when it is gone; JobConflictError when it is not dead-lettered, no longer failed, or
        its upload has expired.
        """
        now = now_iso()
        event = job.event(status=str(JobStatus.PENDING), stage=None, progress=0, updated_at=now,
                          error_message=None, error_code=None)  # fmt: skip
        deadline_s = job.deadline_s or self.queue.queue_ttl_s
        deadline_ms = now_ms_() + deadline_s * 1000
        job_id, names = job.job_id, job.names or self.keys
        shard = names.shard(job_id)
        call = Retry(
            status=names.job_status(job_id), image=names.job_image(job_id), result=names.job_result(job_id),
            queue=names.queue(job.priority, shard), events=names.job_events(job_id),
            dead_stream=names.dead_letter_stream(shard), dead_index=names.dead_letter_index(shard),
            event=event, updated_at=now, ttl=live_ttl_s(deadline_s), job_id=job_id, deadline_ms=deadline_ms,
        )  # fmt: skip
        outcome = _text(await scripts.run(self.redis, call))
        if outcome == "":
            raise JobNotFoundError(job.job_id)
        if outcome == "not-dead":
            raise JobConflictError(f"Job {job.job_id} is not dead-lettered (status {job.status})")
        if outcome == "no-image":
            raise JobConflictError(
                f"Job {job.job_id} cannot be retried: its upload is no longer stored; submit it again"
            )
        if outcome != str(JobStatus.PENDING):
            raise JobEndedError(f"Job {job.job_id} cannot be retried from status {outcome}", status=outcome)
        try:  # retried already: without its deadline entry it still times out when a dispatcher takes it late
            await self.redis.zadd(deadline_set(job, self.keys), {job.job_id: deadline_ms})
        except UNAVAILABLE as exc:
            log.warning("job %s retried without its deadline entry: %s", job.job_id, exc)


def deadline_set(job: Job, current: keys.Keyspace | None = None) -> str:
    """The deadline set a job's entry is in: its shard's, under the layout it was found in."""
    names = job.names or current or keys.LEGACY
    return names.deadlines(names.shard(job.job_id))


def live_ttl_s(deadline_s: int) -> int:
    """How long a live job's keys live: past its deadline by a slack, so the deadline sweep still finds it."""
    return deadline_s + keys.LIVE_SLACK_S


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)
