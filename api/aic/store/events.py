"""The Redis side of live progress: subscribing to jobs' events channels on one pub/sub connection, and reading
what arrives as (job id, event) pairs. Fan-out to listeners is ``aic.live``'s.

On a Redis Cluster the channels are sharded (SSUBSCRIBE: a message goes to the node owning the channel's slot, not
to every node); redis-py's ``ClusterPubSub`` keeps one connection per node it needs and follows a channel to its
new owner after a failover, confirming the subscription again: the hub treats that like a reconnect (what was
published meanwhile is lost; listeners and waiting submits re-read the state)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from aic.store.connection import guarded, keyspace, previous_keyspace


@contextlib.asynccontextmanager
async def _lost_as_connection_error() -> AsyncIterator[None]:
    """redis-py's pub/sub raises AttributeError (its writer is None) for a command sent while the connection is
    torn down after Redis went away; callers handle a lost connection as the ConnectionError it is."""
    try:
        yield
    except AttributeError as exc:
        raise RedisConnectionError("pub/sub connection lost") from exc


_KINDS = {"subscribe": "subscribe", "ssubscribe": "subscribe", "message": "message", "smessage": "message"}


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
        self.keys = keyspace(redis)
        self._sharded = self.keys.sharded_pubsub
        token = uuid.uuid4().hex
        shards = self.keys.all_shards() if self._sharded else range(1)
        self._inboxes = {self.keys.hub_channel(token, shard): shard for shard in shards}
        self._token = token
        self._confirmed: set[str] = set()
        previous = previous_keyspace(redis)
        self._previous = previous if previous is not None and previous.sharded_pubsub == self._sharded else None
        """While migrating (``KEY_LAYOUT_BEFORE``): the previous layout, whose jobs (queued before the switch) still
        publish on its channel names; followed beside the current names (a standalone layout's jobs cannot run on a
        cluster: not followed there)."""
        self._old_channels: dict[str, str] = {}
        """A followed job's channel under the previous layout -> the job's id."""

    def inbox_for(self, job_id: str) -> str:
        """The process's own channel for ``job_id``'s ``NewJob.waiter`` (on a cluster, the one of the job's shard,
        so the job's steps can publish to it)."""
        return self.keys.hub_channel(self._token, self.keys.shard(job_id) if self._sharded else 0)

    def _channels(self, job_id: str) -> list[str]:
        channels = [self.keys.job_events(job_id)]
        if self._previous is not None:
            old = self._previous.job_events(job_id)
            self._old_channels[old] = job_id
            channels.append(old)
        return channels

    async def subscribe(self, job_id: str) -> None:
        async with _lost_as_connection_error():
            if self._sharded:
                await self._pubsub.ssubscribe(*self._channels(job_id))
            else:
                await self._pubsub.subscribe(*self._channels(job_id))

    async def unsubscribe(self, job_id: str) -> None:
        channels = self._channels(job_id)
        for old in channels[1:]:
            self._old_channels.pop(old, None)
        async with _lost_as_connection_error():
            if self._sharded:
                await self._pubsub.sunsubscribe(*channels)
            else:
                await self._pubsub.unsubscribe(*channels)

    async def next(self, timeout_s: float) -> Message | None:
        """What arrived within ``timeout_s`` (None: nothing, or a message of no interest); reconnects after
        Redis comes back (messages sent meanwhile are lost: listeners re-read the state)."""
        message = await self._receive(timeout_s)
        if message is None:
            return None
        channel = message["channel"].decode() if isinstance(message["channel"], bytes) else str(message["channel"])
        kind = _KINDS.get(str(message["type"]), "")  # ssubscribe / smessage on a cluster
        if channel in self._inboxes:
            if kind == "subscribe":
                return self._inbox_confirmed(channel)
            if kind == "message":
                return Message(message["data"].decode(), None, inbox=True)
            return None
        old = self._old_channels.get(channel)
        if old is not None:  # a job of the previous layout: its events count, its channel's confirmation does not
            return Message(old, message["data"]) if kind == "message" else None
        job_id = self.keys.job_id_of_events(channel)
        if kind == "subscribe":
            return Message(job_id, None)
        if kind == "message":
            return Message(job_id, message["data"])
        return None

    async def _receive(self, timeout_s: float) -> dict[str, Any] | None:
        if not self._pubsub.subscribed:  # the first call, or after the connection was lost
            self._confirmed.clear()
            if self._sharded:
                await self._pubsub.ssubscribe(*self._inboxes)
            else:
                await self._pubsub.subscribe(*self._inboxes)
        if self._sharded:
            found: dict[str, Any] | None = await self._pubsub.get_sharded_message(timeout=timeout_s)
            return found
        return cast(dict[str, Any] | None, await self._pubsub.get_message(timeout=timeout_s))

    def _inbox_confirmed(self, channel: str) -> Message | None:
        """The inbox is open once every shard's inbox channel is confirmed; a channel confirmed again (a reconnect,
        a failover) is reported again, so the hub knows ends may have been missed."""
        if channel in self._confirmed:
            return Message("", None, inbox=True)
        self._confirmed.add(channel)
        return Message("", None, inbox=True) if len(self._confirmed) == len(self._inboxes) else None

    async def close(self) -> None:
        # redis-py types aclose() from 8.x on; through a typed callable mypy --strict is clean on older releases too
        aclose: Callable[[], Awaitable[None]] = self._pubsub.aclose
        await aclose()
