"""The job store: one job's keys in Redis, its queue entry, and every state change.

State changes that must not interleave with a concurrent cancel or a redelivery run as Lua scripts, so
"write result + status + acknowledge the queue entry" is one atomic step.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from aic import keys
from aic.enums import ESTIMATE_MULTIPLIER, JobStatus, Priority, Stage
from aic.errors import JobNotFoundError, ServiceUnavailableError
from aic.settings import QueueSettings
from aic.timeutil import now_iso

ESTIMATE_BASE_S = 30.0  # seed 5.1: base processing time scaled by priority

# Only a live (pending/processing) job may change; a cancelled or finished one stays as it is.
# KEYS: status, events channel, webhook outbox. ARGV: event json, then field/value pairs.
# The first move to processing queues a 'started' webhook when the job asked for one.
_ADVANCE = """
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'pending' and st ~= 'processing' then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PUBLISH', KEYS[2], ARGV[1])
if st == 'pending' and redis.call('HGET', KEYS[1], 'status') == 'processing' then
  local events = redis.call('HGET', KEYS[1], 'webhook_events') or ''
  local url = redis.call('HGET', KEYS[1], 'callback_url') or ''
  if url ~= '' and string.find(',' .. events .. ',', ',started,', 1, true) then
    redis.call('XADD', KEYS[3], '*', 'job_id', redis.call('HGET', KEYS[1], 'job_id'), 'event', 'started')
  end
end
return 1
"""

# KEYS: status, result, image, metadata, stream, events, dead-letter stream, webhook outbox
# ARGV: group, entry id, result body ('' when failing), ttl, event json, dead-letter json ('' for none),
#       image ttl when dead-lettered, then field/value pairs for the status hash
# A job with a callback_url gets its terminal event queued for webhook delivery in the same step.
_FINISH = """
local st = redis.call('HGET', KEYS[1], 'status')
local live = (st == 'pending' or st == 'processing')
if live then
  if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4]) end
  for i = 8, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[4], ARGV[4])
  if ARGV[6] ~= '' then
    -- dead-lettered: keep the upload for an operator's retry, for as long as a pending job would keep it
    redis.call('EXPIRE', KEYS[3], ARGV[7])
    redis.call('XADD', KEYS[7], '*', 'job', ARGV[6])
  else
    redis.call('DEL', KEYS[3])
  end
  redis.call('PUBLISH', KEYS[6], ARGV[5])
  if (redis.call('HGET', KEYS[1], 'callback_url') or '') ~= '' then
    local final = redis.call('HGET', KEYS[1], 'status')
    redis.call('XADD', KEYS[8], '*', 'job_id', redis.call('HGET', KEYS[1], 'job_id'), 'event', final)
  end
end
redis.call('XACK', KEYS[5], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[5], ARGV[2])
if live then return 1 end
return 0
"""

# KEYS: status, image, metadata, events channel, webhook outbox. ARGV: event json, updated_at, ttl.
# Cancels a live job exactly like _FINISH ends one: status kept as long as a result would be, image
# dropped, event published, webhook queued. Returns 'ok', or the status that forbade it ('' if gone).
_CANCEL = """
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'pending' and st ~= 'processing' then return st or '' end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updated_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', KEYS[4], ARGV[1])
local events = redis.call('HGET', KEYS[1], 'webhook_events') or ''
if events == '' then events = 'completed,failed,cancelled' end
if (redis.call('HGET', KEYS[1], 'callback_url') or '') ~= ''
   and string.find(',' .. events .. ',', ',cancelled,', 1, true) then
  redis.call('XADD', KEYS[5], '*', 'job_id', redis.call('HGET', KEYS[1], 'job_id'), 'event', 'cancelled')
end
return 'ok'
"""

# KEYS: status, image, result, queue stream, events channel, dead-letter stream.
# ARGV: event json, updated_at, ttl, then the dead-letter entry ids to drop.
# A failed job whose upload is still stored goes back to pending and onto its queue; returns 'pending',
# 'no-image', or the status that forbade it ('' if gone).
_RETRY = """
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'failed' then return st or '' end
if redis.call('EXISTS', KEYS[2]) == 0 then return 'no-image' end
redis.call('HSET', KEYS[1], 'status', 'pending', 'progress', '0', 'stage', '', 'error', '', 'error_code', '',
           'attempts', '0', 'updated_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('XADD', KEYS[4], '*', 'job_id', redis.call('HGET', KEYS[1], 'job_id'))
for i = 4, #ARGV do redis.call('XDEL', KEYS[6], ARGV[i]) end
redis.call('PUBLISH', KEYS[5], ARGV[1])
return 'pending'
"""


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
    attempts: int = 0
    image_metadata: dict[str, Any] = field(default_factory=dict)

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
            attempts=int(h.get("attempts", 0)),
            image_metadata=json.loads(h.get("image_metadata") or "{}"),
        )

    def event(self, **changes: Any) -> bytes:
        """The message published on the job's events channel: its status as the API shows it."""
        body = {
            "job_id": self.job_id,
            "status": str(self.status),
            "progress": self.progress,
            "stage": self.stage,
            "updated_at": self.updated_at,
            "error_message": self.error,
            "error_code": self.error_code,
        }
        body.update(changes)
        return msgspec.json.encode(body)


class JobStore:
    """Reads and changes jobs in Redis. One per process, sharing the process's connection pool."""

    def __init__(self, redis: Redis, queue: QueueSettings | None = None) -> None:
        self.redis = redis
        self.queue = queue or QueueSettings()
        self._advance = redis.register_script(_ADVANCE)
        self._finish = redis.register_script(_FINISH)
        self._cancel = redis.register_script(_CANCEL)
        self._retry = redis.register_script(_RETRY)

    async def queue_depth(self) -> int:
        """Jobs queued or in flight over every priority (acknowledged entries are deleted from the streams)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for priority in Priority:
                pipe.xlen(keys.queue(priority))
            return sum(await pipe.execute())

    async def admit(self, count: int = 1) -> None:
        """Backpressure: refuse new work with 503 + Retry-After while the queue is over QUEUE_MAX_DEPTH."""
        depth = await self.queue_depth()
        if depth + count > self.queue.queue_max_depth:
            raise ServiceUnavailableError(
                f"Queue is full ({depth} jobs waiting, limit {self.queue.queue_max_depth}); retry later",
                headers={"Retry-After": str(self.queue.queue_full_retry_after_s)},
            )

    async def create(
        self,
        *,
        tenant: str,
        image: bytes,
        priority: Priority,
        model_version: str,
        image_metadata: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        callback_url: str | None = None,
        traceparent: str | None = None,
        webhook_events: str = "",
        job_id: str | None = None,
    ) -> Job:
        """Store the upload and the job record and enqueue it, in one transaction."""
        now = now_iso()
        job = Job(
            job_id=job_id or str(uuid.uuid4()),
            tenant=tenant,
            status=JobStatus.PENDING,
            priority=priority,
            model_version=model_version,
            created_at=now,
            updated_at=now,
            estimated_completion=now_iso(ESTIMATE_BASE_S * ESTIMATE_MULTIPLIER[priority]),
            callback_url=callback_url,
            traceparent=traceparent,
            image_metadata=image_metadata,
        )
        record: dict[str | bytes, str | bytes] = {
            "job_id": job.job_id,
            "tenant": tenant,
            "status": str(job.status),
            "progress": "0",
            "stage": "",
            "priority": str(priority),
            "model_version": model_version,
            "created_at": now,
            "updated_at": now,
            "estimated_completion": job.estimated_completion or "",
            "callback_url": callback_url or "",
            "webhook_events": webhook_events,
            "traceparent": traceparent or "",
            "image_metadata": json.dumps(image_metadata),
            "attempts": "0",
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.job_image(job.job_id), image, ex=keys.JOB_IMAGE_TTL_S)
            pipe.hset(keys.job_status(job.job_id), mapping=record)  # type: ignore[arg-type]
            pipe.expire(keys.job_status(job.job_id), keys.JOB_STATUS_TTL_S)
            if metadata:
                pipe.set(keys.job_metadata(job.job_id), json.dumps(metadata), ex=keys.JOB_METADATA_TTL_S)
            pipe.xadd(keys.queue(priority), {"job_id": job.job_id})
            await pipe.execute()
        return job

    async def get(self, job_id: str, tenant: str | None = None) -> Job:
        """The job, or JobNotFoundError; another tenant's job is reported exactly like an unknown one."""
        raw: dict[bytes, bytes] = await self.redis.hgetall(keys.job_status(job_id))  # type: ignore[assignment]
        if not raw:
            raise JobNotFoundError(job_id)
        job = Job.from_hash(raw)
        if tenant is not None and job.tenant != tenant:
            raise JobNotFoundError(job_id)
        return job

    async def metadata(self, job_id: str) -> dict[str, Any]:
        raw = await self.redis.get(keys.job_metadata(job_id))
        return cast(dict[str, Any], json.loads(raw)) if raw else {}

    async def result(self, job_id: str) -> bytes | None:
        return cast(bytes | None, await self.redis.get(keys.job_result(job_id)))

    async def cancel(self, job: Job) -> str:
        """Cancel a live job atomically; returns 'ok' or the status that forbade it ('' when gone)."""
        now = now_iso()
        event = job.event(status=str(JobStatus.CANCELLED), updated_at=now)
        job_keys = [
            keys.job_status(job.job_id),
            keys.job_image(job.job_id),
            keys.job_metadata(job.job_id),
            keys.job_events(job.job_id),
            keys.WEBHOOK_OUTBOX,
        ]
        outcome = await self._cancel(keys=job_keys, args=[event, now, keys.JOB_RESULT_TTL_S])
        return outcome.decode() if isinstance(outcome, bytes) else str(outcome)

    async def retry_failed(self, job: Job, dead_entry_ids: list[str]) -> str:
        """Put a failed job whose upload is still stored back on its queue; 'pending', 'no-image' or its status."""
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
        ]
        outcome = await self._retry(keys=job_keys, args=[event, now, keys.JOB_STATUS_TTL_S, *dead_entry_ids])
        return outcome.decode() if isinstance(outcome, bytes) else str(outcome)

    async def advance(self, pipe: Pipeline, job: Job, status: JobStatus, stage: Stage, progress: int) -> None:
        """Queue a progress change of a live job on ``pipe`` (a no-op once it is cancelled or finished)."""
        now = now_iso()
        event = job.event(status=str(status), stage=str(stage), progress=progress, updated_at=now)
        args: list[str | bytes] = [event, "status", str(status), "stage", str(stage), "progress", str(progress)]
        args += ["updated_at", now]
        job_keys = [keys.job_status(job.job_id), keys.job_events(job.job_id), keys.WEBHOOK_OUTBOX]
        await self._advance(keys=job_keys, args=args, client=pipe)

    async def complete(self, pipe: Pipeline, job: Job, stream: str, entry_id: str, result: bytes) -> None:
        """Queue the atomic completion on ``pipe``: result, status, image removal and acknowledgement."""
        now = now_iso()
        fields = {"status": "completed", "stage": str(Stage.COMPLETED), "progress": "100", "updated_at": now}
        event = job.event(**{**fields, "progress": 100})
        await self._finish_call(pipe, job, stream, entry_id, result, event, b"", fields)

    async def fail(
        self, pipe: Pipeline, job: Job, stream: str, entry_id: str, error: str, code: str, dead_letter: bool
    ) -> None:
        """Queue the atomic failure on ``pipe``; with ``dead_letter`` the job is copied to the dead-letter stream."""
        now = now_iso()
        fields = {"status": "failed", "error": error, "error_code": code, "updated_at": now}
        event = job.event(status="failed", error_message=error, error_code=code, updated_at=now)
        letter = msgspec.json.encode({"job_id": job.job_id, "stream": stream, "error": error, "code": code})
        await self._finish_call(pipe, job, stream, entry_id, b"", event, letter if dead_letter else b"", fields)

    async def _finish_call(
        self,
        pipe: Pipeline,
        job: Job,
        stream: str,
        entry_id: str,
        result: bytes,
        event: bytes,
        letter: bytes,
        fields: dict[str, str],
    ) -> None:
        job_keys = [
            keys.job_status(job.job_id),
            keys.job_result(job.job_id),
            keys.job_image(job.job_id),
            keys.job_metadata(job.job_id),
            stream,
            keys.job_events(job.job_id),
            keys.DEAD_LETTER_STREAM,
            keys.WEBHOOK_OUTBOX,
        ]
        args: list[Any] = [keys.QUEUE_GROUP, entry_id, result, keys.JOB_RESULT_TTL_S, event, letter]
        args.append(keys.JOB_IMAGE_TTL_S)
        for name, value in fields.items():
            args += [name, value]
        await self._finish(keys=job_keys, args=args, client=pipe)

    async def drop_entry(self, stream: str, entry_id: str) -> None:
        """Acknowledge and remove a queue entry whose job no longer exists (expired)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, keys.QUEUE_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()
