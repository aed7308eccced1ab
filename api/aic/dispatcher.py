"""The dispatcher: takes jobs from the priority streams, preprocesses, batches them into Triton, stores results.

At-least-once delivery through the consumer group ``dispatchers`` (see ``intake``); the job store writes a
result or failure and acknowledges the entry in one atomic step, and refuses to touch a job that already
ended, so a redelivered or cancelled job never gets a second result or a second terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import msgspec
import numpy as np
from numpy.typing import NDArray
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aic import images, keys
from aic.enums import ErrorCode, JobStatus, Stage
from aic.errors import ImageValidationError
from aic.inference import InferenceError, TritonRunner, top_k
from aic.intake import STREAMS, Entry, Intake
from aic.jobs import Job, JobStore
from aic.modelspec import ModelSpec
from aic.routing import SpecCache
from aic.schemas import ClassificationResult
from aic.settings import DispatcherSettings
from aic.timeutil import now_iso

log = logging.getLogger("aic.dispatcher")

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
OUTAGE_BACKOFF_CAP_S = 10.0


@dataclass
class Work:
    """One queue entry being handled, with what was loaded for it."""

    entry: Entry
    job: Job
    image: bytes
    started: float = field(default_factory=time.monotonic)
    tensor: NDArray[np.float32] | None = None


def _preprocess_all(blobs: list[bytes], spec: ModelSpec) -> list[NDArray[np.float32] | Exception]:
    """Preprocess several uploads in one worker thread; a failure is returned in its place, not raised."""
    outcomes: list[NDArray[np.float32] | Exception] = []
    for blob in blobs:
        try:
            outcomes.append(images.preprocess(blob, spec.preprocessing))
        except Exception as exc:  # each image's own failure decides that job alone
            outcomes.append(exc)
    return outcomes


class Dispatcher:
    def __init__(self, redis: Redis, runner: TritonRunner, settings: DispatcherSettings) -> None:
        self.redis = redis
        self.runner = runner
        self.settings = settings
        self.store = JobStore(redis)
        self.specs = SpecCache(redis)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.intake = Intake(redis, self.worker_id, settings)
        self.threads = settings.preprocess_threads or os.cpu_count() or 1
        self.pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="preprocess")
        self.completed = 0
        self.failed = 0
        self._stopping = asyncio.Event()

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
        """Work until ``stop()``; then in-flight batches get ``shutdown_grace_s`` before being released."""
        while True:
            try:
                await self.ensure_groups()
                break
            except REDIS_DOWN as exc:
                log.warning("waiting for redis: %s", exc)
                await asyncio.sleep(1.0)
        log.info("dispatcher %s reading %s", self.worker_id, ", ".join(STREAMS))
        helpers = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._renew_leases())]
        loops = [asyncio.create_task(self._loop()) for _ in range(max(1, self.settings.dispatcher_concurrency))]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([*loops, stopping], return_when=asyncio.FIRST_COMPLETED)
            for loop in loops:
                if loop.done() and loop.exception() is not None:
                    raise loop.exception()  # type: ignore[misc]
            _done, unfinished = await asyncio.wait(loops, timeout=self.settings.shutdown_grace_s)
            for loop in unfinished:
                loop.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            await self.intake.release()
        finally:
            stopping.cancel()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.redis.delete(keys.worker_status(self.worker_id))
            self.pool.shutdown(wait=False, cancel_futures=True)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            entries: list[Entry] = []
            try:
                entries = await self.intake.next_batch()
                if entries:
                    await self._process(entries)
            except REDIS_DOWN as exc:
                log.warning("redis unavailable, retrying: %s", exc)
                self.intake.retry_later(entries)  # still pending for us: take them again once redis is back
                await asyncio.sleep(1.0)

    # -- one batch ---------------------------------------------------------------------------------------

    async def _load(self, entries: list[Entry]) -> list[Work]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.hgetall(keys.job_status(entry.job_id))
                pipe.get(keys.job_image(entry.job_id))
            replies = await pipe.execute()
        work: list[Work] = []
        for i, entry in enumerate(entries):
            raw, image = replies[2 * i], replies[2 * i + 1]
            if not entry.job_id or not raw:
                await self.store.drop_entry(entry.stream, entry.entry_id)  # the job expired or never existed
                continue
            job = Job.from_hash(raw)
            if job.status.terminal:
                await self.store.drop_entry(entry.stream, entry.entry_id)  # cancelled, or already finished
                continue
            item = Work(entry, job, image or b"")
            if job.attempts >= self.settings.max_retries + 1:
                # delivered again and again without finishing: it kills or stalls dispatchers
                reason = f"Gave up after {job.attempts} deliveries"
                await self._fail([item], reason, ErrorCode.INTERNAL_ERROR, dead_letter=True)
            elif image is None:
                await self._fail([item], "Image expired before processing", ErrorCode.TIMEOUT)
            else:
                work.append(item)
                self.intake.hold(entry)
        return work

    async def _advance(self, work: list[Work], stage: Stage, progress: int, *, count_attempt: bool = False) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in work:
                if count_attempt:
                    pipe.hincrby(keys.job_status(item.job.job_id), "attempts", 1)
                await self.store.advance(pipe, item.job, JobStatus.PROCESSING, stage, progress)
            await pipe.execute()

    async def _process(self, entries: list[Entry]) -> None:
        work = await self._load(entries)
        try:
            if work:
                await self._advance(work, Stage.INITIALIZING, 10, count_attempt=True)
                specs = await self.specs.for_jobs([item.job.model_version for item in work])
                by_model: dict[str, tuple[ModelSpec | None, list[Work]]] = {}
                for item, spec in zip(work, specs, strict=True):
                    key = spec.name if spec else f"unknown:{item.job.model_version}"
                    by_model.setdefault(key, (spec, []))[1].append(item)
                await asyncio.gather(*(self._run_model(spec, group) for spec, group in by_model.values()))
        finally:
            for item in work:
                self.intake.let_go(item.entry)

    async def _run_model(self, spec: ModelSpec | None, work: list[Work]) -> None:
        if spec is None:
            alias = work[0].job.model_version
            await self._fail(work, f"Unknown model_version {alias!r}", ErrorCode.MODEL_ERROR, dead_letter=True)
            return
        ready = await self._preprocess(spec, work)
        if not ready:
            return
        await self._advance(ready, Stage.PREPROCESSING, 40)
        size = max(1, min(spec.max_batch_size, self.settings.batch_max_size))
        for start in range(0, len(ready), size):
            live = await self._still_live(ready[start : start + size])
            if live:
                await self._infer(spec, live)

    async def _preprocess(self, spec: ModelSpec, work: list[Work]) -> list[Work]:
        # one task per thread, not per image: waking the event loop per image cost ~8% of a dispatcher's CPU
        loop = asyncio.get_running_loop()
        chunks = [work[i :: self.threads] for i in range(min(self.threads, len(work)))]
        parts = await asyncio.gather(
            *(loop.run_in_executor(self.pool, _preprocess_all, [w.image for w in c], spec) for c in chunks)
        )
        outcomes = [parts[k % len(chunks)][k // len(chunks)] for k in range(len(work))]  # chunk i holds i, i+n, ...
        ready: list[Work] = []
        for item, outcome in zip(work, outcomes, strict=True):
            if isinstance(outcome, ImageValidationError):
                await self._fail([item], outcome.detail, ErrorCode.INVALID_IMAGE)
            elif isinstance(outcome, BaseException):
                log.error("preprocessing job %s failed", item.job.job_id, exc_info=outcome)
                await self._fail([item], f"Preprocessing failed: {type(outcome).__name__}", ErrorCode.INVALID_IMAGE)
            else:
                item.tensor = outcome
                ready.append(item)
        return ready

    async def _still_live(self, work: list[Work]) -> list[Work]:
        """Drop jobs cancelled while they were being preprocessed: Triton time goes to live jobs only."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in work:
                pipe.hget(keys.job_status(item.job.job_id), "status")
            statuses = await pipe.execute()
        live = []
        for item, status in zip(work, statuses, strict=True):
            if status in (b"pending", b"processing"):
                live.append(item)
            else:
                await self.store.drop_entry(item.entry.stream, item.entry.entry_id)
        return live

    async def _call_triton(self, spec: ModelSpec, work: list[Work]) -> NDArray[np.float32] | None:
        """Logits for the batch, retrying per policy; None when the jobs were failed or released instead."""
        batch = np.stack([w.tensor for w in work if w.tensor is not None])
        outage_deadline = time.monotonic() + self.settings.triton_outage_timeout_s
        attempt = 0
        while True:
            try:
                return await self.runner.infer(spec, batch)
            except InferenceError as exc:
                attempt += 1
                if not exc.retryable:
                    await self._fail(work, str(exc), ErrorCode.MODEL_ERROR, dead_letter=True)
                    return None
                if exc.outage:  # Triton down: wait for it, up to the outage deadline
                    if time.monotonic() > outage_deadline:
                        await self._fail(work, f"Triton unavailable: {exc}", ErrorCode.TIMEOUT, dead_letter=True)
                        return None
                    delay = min(OUTAGE_BACKOFF_CAP_S, 2.0 ** (attempt - 1))
                elif attempt > self.settings.max_retries:
                    await self._fail(work, str(exc), ErrorCode.TIMEOUT, dead_letter=True)
                    return None
                else:
                    delay = 2.0 ** (attempt - 1)  # seed section 6: 2^n seconds
                log.warning("triton call failed (%s); retry %d in %.0fs", exc, attempt, delay)
                if self._stopping.is_set():
                    return None  # shutting down: the entries are released to another dispatcher
                await self._sleep(delay)

    async def _sleep(self, delay_s: float) -> None:
        """Sleep, but wake at once on stop()."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay_s)

    async def _infer(self, spec: ModelSpec, work: list[Work]) -> None:
        logits = await self._call_triton(spec, work)
        if logits is None:
            return
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
                body = msgspec.json.encode(result)
                await self.store.complete(pipe, item.job, item.entry.stream, item.entry.entry_id, body)
            await pipe.execute()
        self.completed += len(work)

    async def _fail(self, work: list[Work], error: str, code: ErrorCode, *, dead_letter: bool = False) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in work:
                entry = item.entry
                await self.store.fail(pipe, item.job, entry.stream, entry.entry_id, error, str(code), dead_letter)
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
                "in_flight": self.intake.count(),
            }
            try:
                await self.redis.set(keys.worker_status(self.worker_id), json.dumps(body), ex=keys.WORKER_STATUS_TTL_S)
            except REDIS_DOWN as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_ms / 3000)
            try:
                await self.intake.renew()
            except REDIS_DOWN as exc:
                log.warning("lease renewal failed: %s", exc)
