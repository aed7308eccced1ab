"""The job record: one job's keys in Redis, and the API's side of its life (create, read, cancel, retry).

The dispatcher's side is ``aic.store.transitions``. Changes that must not interleave with a concurrent cancel
or a redelivery run as Lua scripts; the outcome comes back as a value or a domain error, never as a Lua string.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
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
from aic.core.timeutil import now_iso
from aic.store import keys, scripts
from aic.store.connection import guard, guarded
from aic.store.objects import Uploads, upload_path

ESTIMATE_BASE_S = 30.0  # seed 5.1: base processing time scaled by priority


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
    upload: str | None = None
    """The upload's path in the object store (``aic.store.objects``); None: its bytes are in Redis."""

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> Job:
        h = {k.decode(): v.decode() for k, v in raw.items()}
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
            upload=h.get("upload") or None,
        )

    def status_response(self) -> JobStatusResponse:
        """The job as ``GET /status/{id}`` shows it."""
        return JobStatusResponse(
            job_id=self.job_id,
            status=self.status,
            progress=self.progress,
            stage=self.stage,
            updated_at=self.updated_at,
            error_message=self.error,
            error_code=self.error_code,
        )

    def event(self, **changes: Any) -> bytes:
        """The message published on the job's events channel: its status as the API shows it."""
        body = msgspec.structs.asdict(self.status_response())
        body.pop("metadata")
        body.update(changes)
        return msgspec.json.encode(body)


@guard
async def statuses(redis: Redis, job_ids: Sequence[str]) -> list[JobStatus | None]:
    """Each job's status (None: gone), in order, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(keys.job_status(job_id), "status")
        replies = await pipe.execute()
    return [JobStatus(reply.decode()) if reply is not None else None for reply in replies]


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
    waiter: str = ""
    """The inbox channel of the API process that waits for the job to end (``Prefer: wait``; ``aic.live.hub``), told
    the job's id when it ends; empty: nobody waits that way."""


@guarded
class JobStore:
    """The API's side of jobs. One per process, sharing the process's connection pool."""

    def __init__(self, redis: Redis, uploads: Uploads | None = None) -> None:
        self.redis = redis
        self.uploads = uploads
        """With an object store: uploads are written there first, and the jobs keep their paths."""
        self._cancel = scripts.register(redis, "cancel")
        self._retry = scripts.register(redis, "retry")
        self._create = scripts.register(redis, "create")

    async def create(self, new_jobs: Sequence[NewJob], queue: QueueSettings | None = None) -> list[Job]:
        """Store the uploads and job records of one request and enqueue them, in one atomic step: all or none.

        Refused with BadRequestError when the request's alias routes to no model, and with
        ServiceUnavailableError (Retry-After) when the jobs would take the queues past ``queue_max_depth``.
        One round trip whatever the number of jobs: the uploads and ``lua/create.lua`` in one transaction. With an
        object store the uploads are written there first (StoreUnavailable: no job was created) and Redis gets
        their paths; a refusal deletes them again (a crash in between leaves them to the sweep).
        """
        queue = queue or QueueSettings()
        aliases = {new.model_version for new in new_jobs}
        if len(aliases) != 1:
            raise ValueError(f"the jobs of one request share one model_version, got {sorted(aliases)}")
        [alias] = aliases
        jobs: list[Job] = []
        stored = {new.job_id: new.image for new in new_jobs}
        if self.uploads is not None:
            paths = {new.job_id: new.upload or upload_path(new.tenant, new.job_id) for new in new_jobs}
            await self.uploads.put([(paths[new.job_id], new.image) for new in new_jobs if new.upload is None])
            stored = {job_id: path.encode() for job_id, path in paths.items()}
        job_keys = [keys.MODEL_ROUTES, *keys.QUEUES, keys.DEAD_LETTER_INDEX]
        args: list[str | bytes | int] = [alias, len(keys.QUEUES), queue.queue_max_depth]
        args += [keys.JOB_STATUS_TTL_S, keys.JOB_METADATA_TTL_S]
        for new in new_jobs:
            now = now_iso()
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
                upload=stored[new.job_id].decode() if self.uploads is not None else None,
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
            }
            if new.waiter:
                record["waiter"] = new.waiter
            if job.upload:
                record["upload"] = job.upload
            job_id = job.job_id
            job_keys += [keys.job_status(job_id), keys.job_image(job_id), keys.job_metadata(job_id)]
            job_keys.append(keys.queue(job.priority))
            args += [job_id, json.dumps(new.metadata) if new.metadata else "", len(record)]
            args += [part for pair in record.items() for part in pair]
            jobs.append(job)
        async with self.redis.pipeline(transaction=True) as pipe:
            for new in new_jobs:
                pipe.set(keys.job_image(new.job_id), stored[new.job_id], ex=keys.JOB_IMAGE_TTL_S)
            await self._create(keys=job_keys, args=args, client=pipe)
            reply = (await scripts.execute(self.redis, pipe))[-1]
        outcome = [_text(part) for part in reply]
        if outcome[0] != "ok":  # what this call wrote goes again; a direct upload stays for another submit
            await self.delete_uploads([job for job, new in zip(jobs, new_jobs, strict=True) if new.upload is None])
        if outcome[0] == "unknown-model":
            known = ", ".join(sorted(outcome[1:])) or "none published yet"
            raise BadRequestError(f"Unknown model_version {alias!r} (available: {known})")
        if outcome[0] == "full":
            raise ServiceUnavailableError(
                f"Queue is full ({outcome[1]} jobs waiting, limit {queue.queue_max_depth}); retry later",
                headers={"Retry-After": str(queue.queue_full_retry_after_s)},
            )
        return jobs

    async def get(self, job_id: str, tenant: str | None = None) -> Job:
        """The job, or JobNotFoundError; another tenant's job is reported exactly like an unknown one."""
        raw: dict[bytes, bytes] = await self.redis.hgetall(keys.job_status(job_id))  # type: ignore[assignment]
        if not raw:
            raise JobNotFoundError(job_id)
        job = Job.from_hash(raw)
        if tenant is not None and job.tenant != tenant:
            raise JobNotFoundError(job_id)
        return job

    async def with_results(self, job_ids: Sequence[str], tenant: str | None = None) -> list[tuple[Job, bytes | None]]:
        """Each job with its stored result (None until it completed), in one round trip; JobNotFoundError as
        ``get``."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(keys.job_status(job_id))
                pipe.get(keys.job_result(job_id))
            replies = await pipe.execute()
        found = []
        for job_id, raw, result in zip(job_ids, replies[::2], replies[1::2], strict=True):
            job = Job.from_hash(raw) if raw else None
            if job is None or (tenant is not None and job.tenant != tenant):
                raise JobNotFoundError(job_id)
            found.append((job, result))
        return found

    async def ended(self, job_ids: Sequence[str]) -> bool:
        """Whether every job has ended (or is gone), in one round trip."""
        return all(status is None or status.terminal for status in await statuses(self.redis, job_ids))

    async def metadata(self, job_id: str) -> dict[str, Any]:
        raw = await self.redis.get(keys.job_metadata(job_id))
        return cast(dict[str, Any], json.loads(raw)) if raw else {}

    async def result(self, job_id: str) -> bytes | None:
        """The stored result JSON of a completed job (None before completion or once expired)."""
        return cast(bytes | None, await self.redis.get(keys.job_result(job_id)))

    async def cancel(self, job: Job) -> None:
        """Cancel a live job atomically; JobNotFoundError when it is gone, JobEndedError once it has ended."""
        now = now_iso()
        event = job.event(status=str(JobStatus.CANCELLED), updated_at=now)
        job_keys = [
            keys.job_status(job.job_id),
            keys.job_image(job.job_id),
            keys.job_metadata(job.job_id),
            keys.job_events(job.job_id),
            keys.WEBHOOK_OUTBOX,
        ]
        outcome = _text(await self._cancel(keys=job_keys, args=[event, now, keys.JOB_RESULT_TTL_S]))
        if outcome == "ok":
            await self.delete_uploads([job])
        if outcome == "":
            raise JobNotFoundError(job.job_id)
        if outcome != "ok":
            raise JobEndedError(
                f"Job already {outcome}: only pending or processing jobs can be cancelled", status=outcome
            )

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
        job_keys = [
            keys.job_status(job.job_id),
            keys.job_image(job.job_id),
            keys.job_result(job.job_id),
            keys.queue(job.priority),
            keys.job_events(job.job_id),
            keys.DEAD_LETTER_STREAM,
            keys.DEAD_LETTER_INDEX,
        ]
        args: list[str | bytes | int] = [event, now, keys.JOB_STATUS_TTL_S, job.job_id]
        outcome = _text(await self._retry(keys=job_keys, args=args))
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


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)
