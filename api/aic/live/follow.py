"""Following one job: every distinct status from now until it ends, and waiting for jobs to end.

Listeners re-read the state when their subscription is confirmed again (a reconnect or a cluster's failover may
have dropped messages: ``hub.REREAD``), and when they hear nothing for a while, which also paces keep-alives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import msgspec

from aic.core.schemas import JobStatusResponse
from aic.live.hub import REREAD, EventHub, Expectation
from aic.store.jobs import JobStore

INBOX_RECHECK_S = 5.0
"""How long a submit waiting on the inbox goes without reading its jobs' states (``wait_for_jobs``)."""


async def follow(
    hub: EventHub, job_store: JobStore, job_id: str, tenant: str | None, idle_s: float = 15.0
) -> AsyncIterator[JobStatusResponse | None]:
    """Every distinct status of a job from now until it ends (then the generator stops).

    Yields None after ``idle_s`` without a change (callers send a keep-alive). Subscribes before reading
    the current state, so no change is missed; JobNotFoundError if the job is unknown or another tenant's.
    """
    async with hub.listen(job_id) as queue:
        job = await job_store.get(job_id, tenant)
        last = job.status_response()
        yield last
        while not last.status.terminal:
            try:
                raw = await asyncio.wait_for(queue.get(), idle_s)
            except TimeoutError:
                yield None
                current = (await job_store.get(job_id, tenant)).status_response()  # a dropped message is caught up here
            else:
                if raw == REREAD:
                    current = (await job_store.get(job_id, tenant)).status_response()
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


async def wait_for_jobs(
    hub: EventHub,
    job_store: JobStore,
    job_ids: list[str],
    tenant: str,
    timeout_s: float,
    expectation: Expectation | None = None,
) -> None:
    """``Prefer: wait``: through the hub's inbox when the jobs were created with it as their waiter (no
    subscription, no read per job), else - or once the inbox may have missed an end - by following every job
    for the time left. Every ``INBOX_RECHECK_S`` without the last end, the jobs' states are read once: a
    dispatcher that does not tell the inbox (an older version, during a rolling upgrade) delays an answer by at
    most that much."""
    deadline = time.monotonic() + timeout_s
    left = timeout_s
    if expectation is not None:
        while await expectation.wait(min(left, INBOX_RECHECK_S)):  # False: an end may have been missed
            left = deadline - time.monotonic()
            if expectation.done or left <= 0 or await job_store.ended(job_ids):
                return
    left = deadline - time.monotonic()
    if left > 0:
        await wait_until_done(hub, job_store, job_ids, tenant, left)
