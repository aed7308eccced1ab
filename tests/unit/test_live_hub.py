"""The event hub's bookkeeping: it forgets a job once nobody follows it, a late confirmation of an abandoned
subscription never confirms a later one early, and a waiting submit learns of its jobs' ends on the inbox or is
told to follow them instead. A stand-in subscription (this is a unit of pure logic; the real pub/sub is exercised
by the integration tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aic.core.errors import StoreUnavailable
from aic.live.hub import REREAD, EventHub
from aic.store.events import Message


class FakeSubscription:
    """Confirms a subscribe when told to (``confirm``), like Redis answering on the pub/sub connection."""

    inbox = "aic:hub:test"

    def inbox_for(self, job_id: str) -> str:
        return self.inbox

    def __init__(self, auto_confirm: bool = True) -> None:
        self.auto_confirm = auto_confirm
        self.messages: asyncio.Queue[Message | Exception] = asyncio.Queue()
        self.subscribed: list[str] = []

    async def subscribe(self, job_id: str) -> None:
        self.subscribed.append(job_id)
        if self.auto_confirm:
            self.confirm(job_id)

    async def unsubscribe(self, job_id: str) -> None:
        pass

    def confirm(self, job_id: str) -> None:
        self.messages.put_nowait(Message(job_id, None))

    def confirm_inbox(self) -> None:
        self.messages.put_nowait(Message("", None, inbox=True))

    def ended(self, job_id: str) -> None:
        """What finish.lua / cancel.lua publish on the inbox of the process waiting for the job."""
        self.messages.put_nowait(Message(job_id, None, inbox=True))

    def lose_connection(self) -> None:
        self.messages.put_nowait(StoreUnavailable("pub/sub connection lost"))

    async def next(self, timeout_s: float) -> Message | None:
        with contextlib.suppress(TimeoutError):
            message = await asyncio.wait_for(self.messages.get(), timeout_s)
            if isinstance(message, Exception):
                raise message
            return message
        return None

    async def close(self) -> None:
        pass


async def settle() -> None:
    """Long enough for a confirmation to travel: the reader, the hub, the listener's wait."""
    await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(fake: FakeSubscription, *, inbox_confirmed: bool = False) -> AsyncIterator[EventHub]:
    """A started hub on ``fake`` (its inbox already confirmed if asked), stopped afterwards."""
    hub = EventHub(fake)  # type: ignore[arg-type]
    await hub.start()
    try:
        if inbox_confirmed:
            fake.confirm_inbox()
            await settle()
        yield hub
    finally:
        await hub.stop()


async def test_a_job_nobody_follows_any_more_is_forgotten() -> None:
    async with running(FakeSubscription()) as hub:
        for i in range(200):
            async with hub.listen(f"job-{i}"):
                assert hub.followed() == 1
        await settle()
        assert hub.followed() == 0, "every followed job left bookkeeping behind"


async def test_a_late_confirmation_of_an_abandoned_subscription_confirms_nothing_else() -> None:
    fake = FakeSubscription(auto_confirm=False)
    async with running(fake) as hub:

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


async def test_jobs_are_expected_only_once_the_inbox_is_confirmed() -> None:
    fake = FakeSubscription()
    async with running(fake) as hub:
        with hub.expect(["a"]) as none_yet:
            assert none_yet is None, "expected before Redis confirmed the inbox: an end could be missed"
        fake.confirm_inbox()
        await settle()
        with hub.expect(["a", "b"]) as expectation:
            assert expectation is not None and set(expectation.inboxes.values()) == {fake.inbox}
            assert hub.followed() == 2
            fake.ended("a")
            fake.ended("someone-else")  # another job's end, or a job of an expectation already gone: ignored
            await settle()
            waiting = asyncio.create_task(expectation.wait(5.0))
            await settle()
            assert not waiting.done(), "settled before every job ended"
            fake.ended("b")
            assert await asyncio.wait_for(waiting, 1.0) is True
            assert expectation.done
        assert hub.followed() == 0, "an expectation left bookkeeping behind"


async def test_an_expectation_times_out_with_true_and_no_bookkeeping_left() -> None:
    async with running(FakeSubscription(), inbox_confirmed=True) as hub:
        with hub.expect(["slow"]) as expectation:
            assert expectation is not None
            assert await expectation.wait(0.05) is True  # the time is up: the caller answers with what is known
            assert not expectation.done
        assert hub.followed() == 0


async def test_a_lost_or_reconfirmed_inbox_tells_every_waiter_to_follow_its_jobs_instead() -> None:
    fake = FakeSubscription()
    async with running(fake, inbox_confirmed=True) as hub:
        with hub.expect(["a"]) as first:
            assert first is not None
            fake.confirm_inbox()  # redis-py reconnected on its own: what was published meanwhile is lost
            assert await asyncio.wait_for(first.wait(5.0), 1.0) is False
        with hub.expect(["b"]) as second:
            assert second is not None, "the reconfirmed inbox is open for new expectations"
            fake.lose_connection()
            assert await asyncio.wait_for(second.wait(5.0), 2.0) is False
        await settle()
        with hub.expect(["c"]) as closed:
            assert closed is None, "the inbox counts as open before Redis confirmed it again"
        fake.confirm_inbox()
        await asyncio.sleep(1.2)  # the hub waits a second after losing Redis
        with hub.expect(["c"]) as reopened:
            assert reopened is not None


async def test_a_subscription_confirmed_again_tells_its_listeners_to_re_read_the_state() -> None:
    """A reconnect, or a cluster moving the channel to a new primary after a failover, confirms the subscription
    again; what was published meanwhile is lost, so each listener is told to re-read at once (not after its idle
    wait)."""
    fake = FakeSubscription()
    async with running(fake) as hub, hub.listen("job-r") as first, hub.listen("job-r") as second:
        await settle()
        assert first.empty() and second.empty()  # the first confirmation is no re-read
        fake.confirm("job-r")  # redis-py re-subscribed
        await settle()
        assert (first.get_nowait(), second.get_nowait()) == (REREAD, REREAD)
        assert hub._acked["job-r"] == hub._sent["job-r"] == 1  # the bookkeeping of subscribes is untouched
