"""The event hub's bookkeeping: it forgets a job once nobody follows it, and a late confirmation of an abandoned
subscription never confirms a later one early. A stand-in subscription (this is a unit of pure logic; the real
pub/sub is exercised by the integration tests)."""

from __future__ import annotations

import asyncio
import contextlib

from aic.live.hub import EventHub
from aic.store.events import Message


class FakeSubscription:
    """Confirms a subscribe when told to (``confirm``), like Redis answering on the pub/sub connection."""

    def __init__(self, auto_confirm: bool = True) -> None:
        self.auto_confirm = auto_confirm
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.subscribed: list[str] = []

    async def subscribe(self, job_id: str) -> None:
        self.subscribed.append(job_id)
        if self.auto_confirm:
            self.confirm(job_id)

    async def unsubscribe(self, job_id: str) -> None:
        pass

    def confirm(self, job_id: str) -> None:
        self.inbox.put_nowait(Message(job_id, None))

    async def next(self, timeout_s: float) -> Message | None:
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.inbox.get(), timeout_s)
        return None

    async def close(self) -> None:
        pass


async def settle() -> None:
    """Long enough for a confirmation to travel: the reader, the hub, the listener's wait."""
    await asyncio.sleep(0.05)


async def test_a_job_nobody_follows_any_more_is_forgotten() -> None:
    hub = EventHub(FakeSubscription())  # type: ignore[arg-type]
    await hub.start()
    try:
        for i in range(200):
            async with hub.listen(f"job-{i}"):
                assert hub.followed() == 1
        await settle()
        assert hub.followed() == 0, "every followed job left bookkeeping behind"
    finally:
        await hub.stop()


async def test_a_late_confirmation_of_an_abandoned_subscription_confirms_nothing_else() -> None:
    fake = FakeSubscription(auto_confirm=False)
    hub = EventHub(fake)  # type: ignore[arg-type]
    await hub.start()
    try:

        async def follow() -> None:
            async with hub.listen("job-x"):
                await asyncio.sleep(3600)

        abandoned = asyncio.create_task(follow())
        await settle()
        abandoned.cancel()  # left before Redis confirmed its subscription
        with contextlib.suppress(asyncio.CancelledError):
            await abandoned
        assert hub.followed() == 1, "the confirmation on its way is still expected"
        second = asyncio.create_task(follow())
        await settle()
        fake.confirm("job-x")  # the first subscription's, late
        await settle()
        assert fake.subscribed == ["job-x", "job-x"]
        assert not hub._confirmed["job-x"].is_set(), "the late confirmation counted for the second subscription"
        fake.confirm("job-x")
        await settle()
        assert hub._confirmed["job-x"].is_set()
        second.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await second
        assert hub.followed() == 0
    finally:
        await hub.stop()
