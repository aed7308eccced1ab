"""The dispatcher: takes jobs from the priority streams, preprocesses, batches them into Triton, stores results.

At-least-once delivery through the consumer group ``dispatchers``: an entry is acknowledged only in the same
atomic step that writes the job's result (or failure); entries of a dead dispatcher are reclaimed after the
lease (``LEASE_MS``); live ones renew their lease while they work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import msgspec
import numpy as np
from numpy.typing import NDArray
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from aic import images, keys
from aic.enums import ErrorCode, JobStatus, Priority, Stage
from aic.errors import ImageValidationError
from aic.inference import InferenceError, TritonRunner, top_k
from aic.jobs import Job, JobStore
from aic.modelspec import ModelSpec
from aic.routing import SpecCache
from aic.schemas import ClassificationResult
from aic.settings import DispatcherSettings
from aic.timeutil import now_iso

log = logging.getLogger("aic.dispatcher")

STREAMS = [keys.queue(p) for p in Priority]  # most urgent first


@dataclass
class Work:
    """One queue entry being handled, with what was loaded for it."""

    stream: str
    entry_id: str
    job: Job
    image: bytes
    started: float = field(default_factory=time.monotonic)
    tensor: NDArray[np.float32] | None = None


class Dispatcher:
    def __init__(self, redis: Redis, runner: TritonRunner, settings: DispatcherSettings) -> None:
        self.redis = redis
        self.runner = runner
        self.settings = settings
        self.store = JobStore(redis)
        self.specs = SpecCache(redis)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        threads = settings.preprocess_threads or os.cpu_count() or 1
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="preprocess")
        self.in_flight: dict[str, set[str]] = defaultdict(set)
        self.completed = 0
        self.failed = 0
        self._stopping = asyncio.Event()
        self._last_reclaim = 0.0

    async def ensure_groups(self) -> None:
        for stream in [*STREAMS, keys.DEAD_LETTER_STREAM]:
            try:
                await self.redis.xgroup_create(stream, keys.QUEUE_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Work until ``stop()``; in-flight batches finish before it returns."""
        await self.ensure_groups()
        log.info("dispatcher %s reading %s", self.worker_id, ", ".join(STREAMS))
        helpers = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._renew_leases())]
        loops = [asyncio.create_task(self._loop()) for _ in range(max(1, self.settings.dispatcher_concurrency))]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.redis.delete(keys.worker_status(self.worker_id))
            self.pool.shutdown(wait=False, cancel_futures=True)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                entries = await self._next_entries()
                if entries:
                    await self._process(entries)
            except (ConnectionError, OSError, TimeoutError) as exc:
                log.warning("redis unavailable, retrying: %s", exc)
                await asyncio.sleep(1.0)

    # -- intake ------------------------------------------------------------------------------------------

    async def _next_entries(self) -> list[tuple[str, str, str]]:
        """(stream, entry id, job id) of reclaimed or new entries, most urgent first."""
        want = self.settings.batch_max_size
        found = await self._reclaim(want)
        if len(found) < want:
            found += await self._read(want - len(found), block_ms=1000)
        if found and len(found) < want and self.settings.batch_max_wait_ms > 0:
            found += await self._read(want - len(found), block_ms=self.settings.batch_max_wait_ms)
        return found

    async def _read(self, count: int, block_ms: int) -> list[tuple[str, str, str]]:
        reply = await self.redis.xreadgroup(
            keys.QUEUE_GROUP, self.worker_id, dict.fromkeys(STREAMS, ">"), count=count, block=block_ms
        )
        return list(self._entries(reply))  # type: ignore[arg-type]

    async def _reclaim(self, count: int) -> list[tuple[str, str, str]]:
        """Entries another dispatcher took but stopped renewing (it died): they are ours now."""
        now = time.monotonic()
        if now - self._last_reclaim < self.settings.lease_ms / 4000:
            return []
        self._last_reclaim = now
        found: list[tuple[str, str, str]] = []
        for stream in STREAMS:
            _next, messages, _deleted = await self.redis.xautoclaim(
                stream, keys.QUEUE_GROUP, self.worker_id, self.settings.lease_ms, "0-0", count=count
            )
            found += self._entries([(stream, messages)])
        if found:
            log.info("reclaimed %d entries whose lease expired", len(found))
        return found

    @staticmethod
    def _entries(
        reply: Iterable[tuple[object, list[tuple[object, dict[bytes, bytes]]]]],
    ) -> Iterable[tuple[str, str, str]]:
        for stream, messages in reply:
            name = stream.decode() if isinstance(stream, bytes) else str(stream)
            for entry_id, fields in messages:
                eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                job_id = (fields or {}).get(b"job_id", b"").decode()
                yield name, eid, job_id

    # -- one batch ---------------------------------------------------------------------------------------

    async def _load(self, entries: list[tuple[str, str, str]]) -> list[Work]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for _stream, _eid, job_id in entries:
                pipe.hgetall(keys.job_status(job_id))
                pipe.get(keys.job_image(job_id))
            replies = await pipe.execute()
        work: list[Work] = []
        for i, (stream, eid, job_id) in enumerate(entries):
            raw, image = replies[2 * i], replies[2 * i + 1]
            if not job_id or not raw:
                await self.store.drop_entry(stream, eid)  # the job expired or never existed
                continue
            job = Job.from_hash(raw)
            if job.status.terminal:
                await self.store.drop_entry(stream, eid)  # cancelled, or finished by a previous delivery
                continue
            item = Work(stream, eid, job, image or b"")
            if job.attempts >= self.settings.max_retries + 1:
                # delivered again and again without finishing: it kills or stalls dispatchers
                await self._fail(
                    [item], f"Gave up after {job.attempts} deliveries", ErrorCode.INTERNAL_ERROR, dead_letter=True
                )
            elif image is None:
                await self._fail([item], "Image expired before processing", ErrorCode.TIMEOUT)
            else:
                work.append(item)
                self.in_flight[stream].add(eid)
        return work

    async def _advance(self, work: list[Work], stage: Stage, progress: int, *, count_attempt: bool = False) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in work:
                if count_attempt:
                    pipe.hincrby(keys.job_status(item.job.job_id), "attempts", 1)
                await self.store.advance(pipe, item.job, JobStatus.PROCESSING, stage, progress)
            await pipe.execute()

    async def _process(self, entries: list[tuple[str, str, str]]) -> None:
        work = await self._load(entries)
        try:
            if work:
                await self._advance(work, Stage.INITIALIZING, 10, count_attempt=True)
                by_model: dict[str, list[Work]] = defaultdict(list)
                for item in work:
                    by_model[item.job.model_version].append(item)
                await asyncio.gather(*(self._run_model(alias, group) for alias, group in by_model.items()))
        finally:
            for item in work:
                self.in_flight[item.stream].discard(item.entry_id)

    async def _run_model(self, alias: str, work: list[Work]) -> None:
        spec = await self.specs.for_alias(alias)
        if spec is None:
            await self._fail(work, f"Unknown model_version {alias!r}", ErrorCode.MODEL_ERROR, dead_letter=True)
            return
        ready = await self._preprocess(spec, work)
        if not ready:
            return
        await self._advance(ready, Stage.PREPROCESSING, 40)
        size = max(1, min(spec.max_batch_size, self.settings.batch_max_size))
        for start in range(0, len(ready), size):
            await self._infer(spec, ready[start : start + size])

    async def _preprocess(self, spec: ModelSpec, work: list[Work]) -> list[Work]:
        loop = asyncio.get_running_loop()
        futures = [loop.run_in_executor(self.pool, images.preprocess, w.image, spec.preprocessing) for w in work]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        ready: list[Work] = []
        for item, outcome in zip(work, outcomes, strict=True):
            if isinstance(outcome, ImageValidationError):
                await self._fail([item], outcome.detail, ErrorCode.INVALID_IMAGE)
            elif isinstance(outcome, BaseException):
                log.exception("preprocessing job %s failed", item.job.job_id, exc_info=outcome)
                await self._fail([item], f"Preprocessing failed: {type(outcome).__name__}", ErrorCode.INVALID_IMAGE)
            else:
                item.tensor = outcome
                ready.append(item)
        return ready

    async def _infer(self, spec: ModelSpec, work: list[Work]) -> None:
        batch = np.stack([w.tensor for w in work if w.tensor is not None])
        for attempt in range(self.settings.max_retries + 1):
            try:
                logits = await self.runner.infer(spec, batch)
                break
            except InferenceError as exc:
                if not exc.retryable:
                    await self._fail(work, str(exc), ErrorCode.MODEL_ERROR, dead_letter=True)
                    return
                if attempt == self.settings.max_retries:
                    await self._fail(work, str(exc), ErrorCode.TIMEOUT, dead_letter=True)
                    return
                delay = 2**attempt  # seed section 6: 2^n seconds
                log.warning("triton call failed (%s), retry %d in %ss", exc, attempt + 1, delay)
                await asyncio.sleep(delay)
        await self._advance(work, Stage.INFERENCE, 80)
        predictions = top_k(logits, spec)
        async with self.redis.pipeline(transaction=False) as pipe:
            for item, preds in zip(work, predictions, strict=True):
                result = ClassificationResult(
                    job_id=item.job.job_id,
                    predictions=preds,
                    processing_time=round(time.monotonic() - item.started, 6),
                    model_version=item.job.model_version,
                    image_metadata=item.job.image_metadata,
                    created_at=now_iso(),
                )
                await self.store.complete(pipe, item.job, item.stream, item.entry_id, msgspec.json.encode(result))
            await pipe.execute()
        self.completed += len(work)

    async def _fail(self, work: list[Work], error: str, code: ErrorCode, *, dead_letter: bool = False) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in work:
                await self.store.fail(pipe, item.job, item.stream, item.entry_id, error, str(code), dead_letter)
            await pipe.execute()
        self.failed += len(work)
        log.info("failed %d job(s) with %s: %s", len(work), code, error)

    # -- background --------------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        started = now_iso()
        while True:
            body = {
                "worker_id": self.worker_id,
                "pid": os.getpid(),
                "started_at": started,
                "updated_at": now_iso(),
                "completed": self.completed,
                "failed": self.failed,
                "in_flight": sum(len(v) for v in self.in_flight.values()),
            }
            try:
                await self.redis.set(keys.worker_status(self.worker_id), json.dumps(body), ex=keys.WORKER_STATUS_TTL_S)
            except (ConnectionError, OSError, TimeoutError) as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def _renew_leases(self) -> None:
        """Reset the idle time of entries we are still working on, so nobody reclaims a slow job."""
        while True:
            await asyncio.sleep(self.settings.lease_ms / 3000)
            for stream, ids in list(self.in_flight.items()):
                if ids:
                    try:
                        await self.redis.xclaim(stream, keys.QUEUE_GROUP, self.worker_id, 0, list(ids), justid=True)
                    except (ConnectionError, OSError, TimeoutError) as exc:
                        log.warning("lease renewal failed: %s", exc)
