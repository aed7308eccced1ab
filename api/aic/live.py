"""Live job progress: one Redis pub/sub connection per API process fans ``job:{id}:events`` out to every
local listener (WebSocket, SSE, ``Prefer: wait``), so clients never poll Redis.

A listener is registered only once Redis has confirmed the subscription; reading the job's state after that
cannot miss a change. Listeners that hear nothing for a while re-read the state (a reconnect of the
pub/sub connection may drop messages), which also paces keep-alives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aic import keys
from aic.jobs import Job, JobStore
from aic.schemas import JobStatusResponse

log = logging.getLogger("aic.live")

SUBSCRIBE_TIMEOUT_S = 5.0
LISTENER_QUEUE = 256


class EventHub:
    def __init__(self, redis: Redis) -> None:
        self._pubsub = redis.pubsub()
        self._listeners: dict[str, set[asyncio.Queue[bytes]]] = defaultdict(set)
        self._sent: dict[str, int] = defaultdict(int)
        self._acked: dict[str, int] = defaultdict(int)
        self._confirmed: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Starts the reader; it connects in the background, so the API starts (unready) without Redis."""
        self._task = asyncio.create_task(self._run(), name="aic-event-hub")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    @contextlib.asynccontextmanager
    async def listen(self, job_id: str) -> AsyncIterator[asyncio.Queue[bytes]]:
        """A queue of the job's events, yielded once the subscription is confirmed by Redis."""
        channel = keys.job_events(job_id)
        queue: asyncio.Queue[bytes] = asyncio.Queue(LISTENER_QUEUE)
        async with self._lock:
            if not self._listeners[channel]:
                self._confirmed[channel] = asyncio.Event()
                self._sent[channel] += 1
                await self._pubsub.subscribe(channel)
            self._listeners[channel].add(queue)
            confirmed = self._confirmed[channel]
        try:
            await asyncio.wait_for(confirmed.wait(), SUBSCRIBE_TIMEOUT_S)
            yield queue
        finally:
            async with self._lock:
                self._listeners[channel].discard(queue)
                if not self._listeners[channel]:
                    del self._listeners[channel]
                    with contextlib.suppress(RedisError):
                        await self._pubsub.unsubscribe(channel)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        if message["type"] == "subscribe":
            self._acked[channel] += 1
            event = self._confirmed.get(channel)
            if event is not None and self._acked[channel] >= self._sent[channel]:
                event.set()
        elif message["type"] == "message":
            for queue in self._listeners.get(channel, ()):
                with contextlib.suppress(asyncio.QueueFull):  # a stalled client re-reads the state instead
                    queue.put_nowait(message["data"])

    async def _run(self) -> None:
        # a private channel keeps the connection subscribed, so the reader always has something to read
        private = f"aic:hub:{uuid.uuid4().hex}"
        while True:
            try:
                if not self._pubsub.subscribed:
                    await self._pubsub.subscribe(private)
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisError, OSError, RuntimeError) as exc:
                log.warning("event hub lost Redis (%s); reconnecting", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            if message is not None:
                self._dispatch(message)


def as_status(job: Job) -> JobStatusResponse:
    return JobStatusResponse(
        job_id=job.job_id,
        status=job.status,
        progress=job.progress,
        stage=job.stage,
        updated_at=job.updated_at,
        error_message=job.error,
        error_code=job.error_code,
    )


async def follow(
    hub: EventHub, job_store: JobStore, job_id: str, tenant: str | None, idle_s: float = 15.0
) -> AsyncIterator[JobStatusResponse | None]:
    """Every distinct status of a job from now until it ends (then the generator stops).

    Yields None after ``idle_s`` without a change (callers send a keep-alive). Subscribes before reading
    the current state, so no change is missed; JobNotFoundError if the job is unknown or another tenant's.
    """
    async with hub.listen(job_id) as queue:
        job = await job_store.get(job_id, tenant)
        last = as_status(job)
        yield last
        while not last.status.terminal:
            try:
                raw = await asyncio.wait_for(queue.get(), idle_s)
            except TimeoutError:
                yield None
                current = as_status(await job_store.get(job_id, tenant))  # a dropped message is caught up here
            else:
                current = msgspec.json.decode(raw, type=JobStatusResponse)
            if current.updated_at < last.updated_at:
                continue  # published before the state read above, already included in it
            if (current.status, current.progress, current.stage) != (last.status, last.progress, last.stage):
                last = current
                yield current


async def wait_until_done(
    hub: EventHub, job_store: JobStore, job_ids: list[str], tenant: str, timeout_s: float
) -> None:
    """Return when every job has ended or ``timeout_s`` has passed, whichever is first (``Prefer: wait``)."""

    async def until_end(job_id: str) -> None:
        async for _ in follow(hub, job_store, job_id, tenant, idle_s=max(timeout_s, 1.0)):
            pass

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(until_end(job_id) for job_id in job_ids)), timeout_s)
