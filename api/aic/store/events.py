"""The Redis side of live progress: subscribing to jobs' ``job:{id}:events`` channels on one pub/sub
connection, and reading what arrives as (job id, event) pairs. Fan-out to listeners is ``aic.live``'s."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from aic.store import keys
from aic.store.connection import guarded


@contextlib.asynccontextmanager
async def _lost_as_connection_error() -> AsyncIterator[None]:
    """redis-py's pub/sub raises AttributeError (its writer is None) for a command sent while the connection is
    torn down after Redis went away; callers handle a lost connection as the ConnectionError it is."""
    try:
        yield
    except AttributeError as exc:
        raise RedisConnectionError("pub/sub connection lost") from exc


@dataclass(frozen=True)
class Message:
    """One thing the subscription heard: a confirmed subscription (``data`` None) or an event of a job; with
    ``inbox``, on the process's own channel: that job ended (``job_id``), or the channel's subscription was
    confirmed (``job_id`` empty)."""

    job_id: str
    data: bytes | None
    inbox: bool = False


@guarded
class EventSubscription:
    """One pub/sub connection for a whole process. A private channel keeps it subscribed, so a reader always
    has something to wait on even while no job is followed; it is also the process's inbox: a job created with it
    as its ``waiter`` has its id published there when it ends (``lua/finish.lua``, ``lua/cancel.lua``)."""

    def __init__(self, redis: Redis) -> None:
        self._pubsub = redis.pubsub()
        self._private = keys.hub_channel(uuid.uuid4().hex)

    @property
    def inbox(self) -> str:
        """The process's own channel, for ``NewJob.waiter``."""
        return self._private

    async def subscribe(self, job_id: str) -> None:
        async with _lost_as_connection_error():
            await self._pubsub.subscribe(keys.job_events(job_id))

    async def unsubscribe(self, job_id: str) -> None:
        async with _lost_as_connection_error():
            await self._pubsub.unsubscribe(keys.job_events(job_id))

    async def next(self, timeout_s: float) -> Message | None:
        """What arrived within ``timeout_s`` (None: nothing, or a message of no interest); reconnects after
        Redis comes back (messages sent meanwhile are lost: listeners re-read the state)."""
        if not self._pubsub.subscribed:
            await self._pubsub.subscribe(self._private)
        message: dict[str, Any] | None = await self._pubsub.get_message(timeout=timeout_s)
        if message is None:
            return None
        channel = message["channel"].decode()
        if channel == self._private:
            if message["type"] == "subscribe":
                return Message("", None, inbox=True)
            if message["type"] == "message":
                return Message(message["data"].decode(), None, inbox=True)
            return None
        job_id = keys.job_id_of_events(channel)
        if message["type"] == "subscribe":
            return Message(job_id, None)
        if message["type"] == "message":
            return Message(job_id, message["data"])
        return None

    async def close(self) -> None:
        # redis-py types aclose() from 8.x on; through a typed callable mypy --strict is clean on older releases too
        aclose: Callable[[], Awaitable[None]] = self._pubsub.aclose
        await aclose()
