"""The event hub: one Redis pub/sub subscription per API process fans ``job:{id}:events`` out to every local
listener, so clients never poll Redis.

A listener is registered only once Redis has confirmed the subscription; reading the job's state after that
cannot miss a change. A submit that waits for the jobs it creates (``Prefer: wait``) needs no subscription of its
own: it creates them with the hub's inbox as their waiter and is told when each ends (``expect``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence

from aic.core.errors import StoreError
from aic.store.events import EventSubscription, Message

log = logging.getLogger("aic.live")

SUBSCRIBE_TIMEOUT_S = 5.0
RECONNECT_ON: tuple[type[BaseException], ...] = (StoreError, RuntimeError)
"""Redis went away (or redis-py's pub/sub was caught mid-reconnect): wait a second and read again."""
LISTENER_QUEUE = 256
REREAD: bytes = b""
"""What a listener's queue gets when its job's subscription was confirmed again (Redis reconnected, or a cluster
moved the channel to a new primary after a failover): messages may have been lost meanwhile, re-read the state."""


class Expectation:
    """Jobs about to be created with ``waiter=inboxes[job_id]``, until each has ended."""

    def __init__(self, inboxes: dict[str, str], job_ids: Sequence[str]) -> None:
        self.inboxes = inboxes
        """Job id -> the hub's inbox channel to create it with (``NewJob.waiter``)."""
        self._waiting = set(job_ids)
        self._settled = asyncio.Event()
        self.lost = False
        if not self._waiting:
            self._settled.set()

    def ended(self, job_id: str) -> None:
        self._waiting.discard(job_id)
        if not self._waiting:
            self._settled.set()

    def lose(self) -> None:
        """The inbox may have missed an end (the pub/sub connection was lost meanwhile)."""
        self.lost = True
        self._settled.set()

    @property
    def done(self) -> bool:
        """Every job was told to have ended."""
        return not self._waiting

    async def wait(self, timeout_s: float) -> bool:
        """Until every job ended, an end may have been missed (``lost``: the caller then follows the jobs itself,
        ``follow.wait_until_done``) or ``timeout_s`` ran out; False when an end may have been missed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout_s)
        return not self.lost


class EventHub:
    def __init__(self, subscription: EventSubscription) -> None:
        self._subscription = subscription
        self._listeners: dict[str, set[asyncio.Queue[bytes]]] = defaultdict(set)
        self._sent: dict[str, int] = defaultdict(int)
        self._acked: dict[str, int] = defaultdict(int)
        self._confirmed: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._inbox_open = False
        self._expected: dict[str, Expectation] = {}

    async def start(self) -> None:
        """Starts the reader; it connects in the background, so the API starts (unready) without Redis."""
        self._task = asyncio.create_task(self._run(), name="aic-event-hub")

    def followed(self) -> int:
        """Jobs with bookkeeping in this hub (listened to, expected, or a confirmation still on its way)."""
        return len(self._sent.keys() | self._listeners.keys() | self._confirmed.keys() | self._expected.keys())

    @contextlib.contextmanager
    def expect(self, job_ids: Sequence[str]) -> Iterator[Expectation | None]:
        """Waiting for jobs this process is about to create with ``waiter=expectation.inboxes[job_id]``: each one's
        end comes to the hub's inbox, without a subscription per job. None while the inbox is not confirmed (Redis
        away, or the hub just started): then follow the jobs (``follow.wait_until_done``)."""
        if not self._inbox_open:
            yield None
            return
        expectation = Expectation({job_id: self._subscription.inbox_for(job_id) for job_id in job_ids}, job_ids)
        for job_id in job_ids:
            self._expected[job_id] = expectation
        try:
            yield expectation
        finally:
            for job_id in job_ids:
                if self._expected.get(job_id) is expectation:
                    del self._expected[job_id]

    def _lose_expectations(self) -> None:
        for expectation in set(self._expected.values()):
            expectation.lose()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._subscription.close()

    @contextlib.asynccontextmanager
    async def listen(self, job_id: str) -> AsyncIterator[asyncio.Queue[bytes]]:
        """A queue of the job's events, yielded once the subscription is confirmed by Redis."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(LISTENER_QUEUE)
        async with self._lock:
            if not self._listeners[job_id]:
                self._confirmed[job_id] = asyncio.Event()
                self._sent[job_id] += 1
                await self._subscription.subscribe(job_id)
            self._listeners[job_id].add(queue)
            confirmed = self._confirmed[job_id]
        try:
            await asyncio.wait_for(confirmed.wait(), SUBSCRIBE_TIMEOUT_S)
            yield queue
        finally:
            async with self._lock:
                self._listeners[job_id].discard(queue)
                if not self._listeners[job_id]:
                    del self._listeners[job_id]
                    self._forget_if_settled(job_id)
                    with contextlib.suppress(StoreError):
                        await self._subscription.unsubscribe(job_id)

    def _forget_if_settled(self, job_id: str) -> None:
        """Drop the bookkeeping of a job nobody listens to once every subscription asked for is confirmed (a
        confirmation still on its way must not count for a later listener's subscription)."""
        if job_id not in self._listeners and self._acked.get(job_id, 0) >= self._sent.get(job_id, 0):
            self._sent.pop(job_id, None)
            self._acked.pop(job_id, None)
            self._confirmed.pop(job_id, None)

    def _dispatch(self, message: Message) -> None:
        if message.inbox:
            if message.job_id:
                expectation = self._expected.get(message.job_id)
                if expectation is not None:
                    expectation.ended(message.job_id)
            elif self._inbox_open:  # confirmed again: redis-py reconnected, and what was sent meanwhile is lost
                self._lose_expectations()
            else:
                self._inbox_open = True
            return
        if message.data is None:  # a subscription confirmed; the last one asked for counts
            event = self._confirmed.get(message.job_id)
            if event is None:  # a job no longer followed (Redis re-confirms every channel after a reconnect)
                return
            if event.is_set() and self._acked[message.job_id] >= self._sent[message.job_id]:
                self._nudge(message.job_id)  # confirmed again: a reconnect or a failover, not a subscribe of ours
                return
            self._acked[message.job_id] += 1
            if self._acked[message.job_id] >= self._sent[message.job_id]:
                event.set()
            self._forget_if_settled(message.job_id)
            return
        for queue in self._listeners.get(message.job_id, ()):
            with contextlib.suppress(asyncio.QueueFull):  # a stalled client re-reads the state instead
                queue.put_nowait(message.data)

    def _nudge(self, job_id: str) -> None:
        for queue in self._listeners.get(job_id, ()):
            with contextlib.suppress(asyncio.QueueFull):  # a full queue re-reads the state by itself
                queue.put_nowait(REREAD)

    async def _run(self) -> None:
        while True:
            try:
                message = await self._subscription.next(timeout_s=1.0)
            except RECONNECT_ON as exc:
                log.warning("event hub lost Redis (%s); reconnecting", type(exc).__name__)
                self._inbox_open = False
                self._lose_expectations()
                await asyncio.sleep(1.0)
                continue
            if message is not None:
                self._dispatch(message)
