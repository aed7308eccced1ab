"""Operator routes (admin role only): queue depth and age per priority, dead letters, retrying a dead job."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import msgspec
from litestar import Controller, Request, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers import BaseRouteHandler
from litestar.params import Parameter
from redis.asyncio import Redis

from aic import keys
from aic.auth import Principal, Role
from aic.controllers import error_responses
from aic.enums import Priority
from aic.errors import ForbiddenError, JobConflictError, JobNotFoundError
from aic.jobs import JobStore
from aic.live import as_status
from aic.schemas import DeadLetter, DeadLettersResponse, JobStatusResponse, QueueInfo, QueuesResponse
from aic.timeutil import iso

DEAD_LETTER_SCAN = 10_000
Entries = list[tuple[bytes, dict[bytes, bytes]]]


def require_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: only principals with the admin role pass (OPTIONS, which is not authenticated, says what is allowed)."""
    if connection.scope.get("method") == "OPTIONS":
        return
    if getattr(connection.scope.get("user"), "role", None) != Role.ADMIN:
        raise ForbiddenError("This route needs an admin key (API_KEYS entry 'tenant:key:admin')")


def _entry_ms(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[0])


async def queue_info(redis: Redis, priority: Priority, now_ms: int) -> QueueInfo:
    stream = keys.queue(priority)
    length = int(await redis.xlen(stream))
    waiting = in_flight = 0
    if length:
        for group in await redis.xinfo_groups(stream):
            if group["name"] in (keys.QUEUE_GROUP, keys.QUEUE_GROUP.encode()):
                in_flight = int(group.get("pending") or 0)
                waiting = int(group.get("lag") or 0) if group.get("lag") is not None else max(0, length - in_flight)
    oldest = cast(Entries, await redis.xrange(stream, count=1))
    age = round((now_ms - _entry_ms(oldest[0][0])) / 1000, 3) if oldest else None
    return QueueInfo(priority=priority, length=length, waiting=waiting, in_flight=in_flight, oldest_age_s=age)


def _dead_letter(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    body: dict[str, Any] = msgspec.json.decode(fields.get(b"job", b"{}"))
    return DeadLetter(
        entry_id=entry_id.decode(),
        job_id=str(body.get("job_id", "")),
        stream=str(body.get("stream", "")),
        error=str(body.get("error", "")),
        code=str(body.get("code", "")),
        dead_at=iso_from_ms(_entry_ms(entry_id)),
    )


def iso_from_ms(ms: int) -> str:
    return iso(datetime.fromtimestamp(ms / 1000, UTC))


class AdminController(Controller):
    path = "/admin"
    tags = ["admin"]  # noqa: RUF012
    guards = [require_admin]  # noqa: RUF012
    security = [{"ApiKey": []}, {"Bearer": []}]  # noqa: RUF012

    @get(
        "/queues",
        operation_id="adminQueues",
        summary="Depth and oldest age per priority",
        responses=error_responses(403),
    )
    async def queues(self, redis: Redis) -> QueuesResponse:
        now_ms = int(time.time() * 1000)
        infos = [await queue_info(redis, p, now_ms) for p in Priority]
        return QueuesResponse(
            queues=infos,
            in_flight=sum(q.in_flight for q in infos),
            dead_letters=int(await redis.xlen(keys.DEAD_LETTER_STREAM)),
        )

    @get(
        "/dead-letters",
        operation_id="adminDeadLetters",
        summary="Jobs that failed for good, newest first",
        responses=error_responses(403),
    )
    async def dead_letters(
        self, redis: Redis, limit: Annotated[int, Parameter(ge=1, le=1000, description="Most entries")] = 100
    ) -> DeadLettersResponse:
        entries = cast(Entries, await redis.xrevrange(keys.DEAD_LETTER_STREAM, count=limit))
        return DeadLettersResponse(
            dead_letters=[_dead_letter(entry_id, fields) for entry_id, fields in entries],
            total=int(await redis.xlen(keys.DEAD_LETTER_STREAM)),
        )

    @post(
        "/jobs/{job_id:str}/retry",
        operation_id="adminRetryJob",
        summary="Put a dead-lettered job back on its queue (needs its upload still stored)",
        status_code=200,
        responses=error_responses(403, 404, 409),
    )
    async def retry(
        self,
        request: Request[Principal, Any, State],
        job_id: Annotated[str, Parameter(max_length=64)],
        job_store: JobStore,
    ) -> JobStatusResponse:
        job = await job_store.get(job_id)
        entries = cast(Entries, await job_store.redis.xrevrange(keys.DEAD_LETTER_STREAM, count=DEAD_LETTER_SCAN))
        dead_ids = [e.decode() for e, f in entries if _dead_letter(e, f).job_id == job_id]
        if not dead_ids:
            raise JobConflictError(f"Job {job_id} is not dead-lettered (status {job.status})")
        outcome = await job_store.retry_failed(job, dead_ids)
        if outcome == "no-image":
            raise JobConflictError(f"Job {job_id} cannot be retried: its upload is no longer stored; submit it again")
        if outcome == "":
            raise JobNotFoundError(job_id)
        if outcome != "pending":
            raise JobConflictError(f"Job {job_id} cannot be retried from status {outcome}")
        return as_status(await job_store.get(job_id))
