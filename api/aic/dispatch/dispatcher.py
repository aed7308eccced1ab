"""The dispatcher: takes jobs from the priority streams, preprocesses, batches them into Triton, stores results.

At-least-once delivery through the consumer group ``dispatchers`` (see ``intake``); the job store writes a
result or failure and acknowledges the entry in one atomic step, and refuses to touch a job that already
ended, so a redelivered or cancelled job never gets a second result or a second terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, StatusCode

from aic.core import settings as settings_mod
from aic.core import telemetry
from aic.core.enums import ErrorCode, Stage
from aic.core.errors import ImageValidationError, StoreUnavailable
from aic.core.images import validate
from aic.core.modelspec import ModelSpec
from aic.core.schemas import ClassificationResult
from aic.core.settings import DispatcherSettings, ObjectStoreSettings
from aic.core.timeutil import now_iso
from aic.dispatch import metrics, preprocess
from aic.dispatch.fetch import FetchRefused, FetchUnavailable, ImageFetcher
from aic.dispatch.health import PROBE_INTERVAL_S, PROBE_TIMEOUT_S, PULSE_S, Health
from aic.dispatch.intake import Intake
from aic.dispatch.models import ModelChecks, SpecCache
from aic.dispatch.retry import triton_policy
from aic.dispatch.versions import Served, Versions, VersionSettings
from aic.store.deadlines import TIMEOUT_MESSAGE, DeadlineSweep
from aic.store.evidence import EvidenceStore
from aic.store.jobs import Job
from aic.store.queue import Entry, QueueConsumer, QueueStats
from aic.store.routes import RouteStore
from aic.store.transitions import Completion, JobTransitions
from aic.store.workers import Heartbeats
from aic.triton.client import InferenceError, TritonRunner
from aic.triton.topk import top_k

log = logging.getLogger("aic.dispatcher")
_tracer = telemetry.tracer("aic.dispatch")
QUEUE_METRICS_INTERVAL_S = 5.0
"""How often the queue gauges (depth, in flight, oldest age per priority) are read from Redis."""


def new_worker_id() -> str:
    """A dispatcher's name in the consumer group and its heartbeat: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class Work:
    """One queue entry being handled, with what was loaded for it."""

    entry: Entry
    job: Job
    image: bytes
    started: float = field(default_factory=time.monotonic)
    tensor: NDArray[Any] | None = None
    span: Span | None = None
    """The job's processing span (CONSUMER) while the process exports traces, ended with the job's outcome."""

    def end_span(self, error: str | None = None) -> None:
        if self.span is None:
            return
        if error is not None:
            self.span.set_status(StatusCode.ERROR, error)
        self.span.end()
        self.span = None


def _start_span(item: Work) -> None:
    """The job's processing span, a child of the context its enqueue span stored in the job."""
    job, destination = item.job, f"queue:{item.job.priority}"
    item.span = _tracer.start_span(
        f"process {destination}",
        context=telemetry.context_of(job.traceparent, job.tracestate),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": destination,
            "messaging.consumer.group.name": "dispatchers",
            "messaging.message.id": item.entry.entry_id,
            "aic.job_id": job.job_id,
            "aic.model_version": job.model_version,
            "aic.attempt": job.attempts,
        },
    )


def _queued_s(job: Job) -> float | None:
    try:
        return max(0.0, time.time() - datetime.fromisoformat(job.created_at).timestamp())
    except ValueError:
        return None


def _preprocess_all(blobs: list[bytes], spec: ModelSpec) -> list[tuple[NDArray[Any] | Exception, int, int]]:
    """Preprocess several uploads in one worker thread; a failure is returned in its place, not raised. Each
    outcome comes with its start and end (``time.time_ns()``)."""
    outcomes: list[tuple[NDArray[Any] | Exception, int, int]] = []
    for blob in blobs:
        began = time.time_ns()
        try:
            outcome: NDArray[Any] | Exception = preprocess.preprocess(blob, spec.preprocessing)
        except Exception as exc:  # each image's own failure decides that job alone
            outcome = exc
        outcomes.append((outcome, began, time.time_ns()))
    return outcomes


class Dispatcher:
    def __init__(
        self,
        queue: QueueConsumer,
        stats: QueueStats,
        jobs: JobTransitions,
        routes: RouteStore,
        heartbeats: Heartbeats,
        runner: TritonRunner,
        settings: DispatcherSettings,
        worker_id: str,
        health: Health | None = None,
        fetcher: ImageFetcher | None = None,
    ) -> None:
        self.queue = queue
        self.jobs = jobs
        self.heartbeats = heartbeats
        self.runner = runner
        self.settings = settings
        self.worker_id = worker_id
        self.specs = SpecCache(routes)
        self.checks = ModelChecks(routes, runner)
        self.retry = triton_policy(settings)
        self.intake = Intake(queue, settings)
        self.threads = settings.preprocess_threads or os.cpu_count() or 1
        self.pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="preprocess")
        self.stats = stats
        self.deadlines = DeadlineSweep(jobs.redis, jobs.uploads)
        self.versions = Versions(
            EvidenceStore(routes.redis), runner, self.specs.spec, self.pool, settings_mod.load(VersionSettings)
        )
        self.fetcher = fetcher or ImageFetcher.from_settings(
            settings, settings_mod.load(ObjectStoreSettings).max_upload_size
        )
        """Fetches the images of jobs submitted by URL (``image_url``)."""
        self.completed = 0
        self.failed = 0
        self.health = health or Health(settings.loop_stall_s)
        """What ``/livez`` and ``/readyz`` answer: this loop keeps it current (``_pulse``, ``_probe``)."""
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Work until ``stop()``; then in-flight batches get ``shutdown_grace_s`` before being released."""
        with telemetry.untraced():  # the probes' calls are no job's
            probes = [asyncio.create_task(self._pulse()), asyncio.create_task(self._probe())]
        try:
            await self._run()
        finally:
            for task in probes:
                task.cancel()
            await asyncio.gather(*probes, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.queue.ensure_groups()
                break
            except StoreUnavailable as exc:
                log.warning("waiting for redis: %s", exc)
                await asyncio.sleep(1.0)
        log.info("dispatcher %s reading every priority queue of %d shard(s)", self.worker_id, self.queue.shards)
        # the loops' own Redis calls (blocking reads, heartbeats) are no job's: untraced, and the tasks copy that
        # context; a job's work runs in its own span's context (telemetry.active), where the calls are traced
        with telemetry.untraced():
            background = (
                self._heartbeat(),
                self._renew_leases(),
                self._queue_metrics(),
                self._sweep_deadlines(),
                self.versions.run(),
            )
            helpers = [asyncio.create_task(helper) for helper in background]
            concurrency = max(1, self.settings.dispatcher_concurrency)
            loops = [asyncio.create_task(self._loop()) for _ in range(concurrency)]
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
            with contextlib.suppress(StoreUnavailable):
                await self.heartbeats.gone(self.worker_id)
            self.pool.shutdown(wait=False, cancel_futures=True)
            await self.fetcher.close()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            entries: list[Entry] = []
            try:
                entries = await self.intake.next_batch()
                if entries:
                    await self._process(entries)
            except StoreUnavailable as exc:
                log.warning("redis unavailable, retrying: %s", exc)
                self.intake.retry_later(entries)  # still pending for us: take them again once redis is back
                await asyncio.sleep(1.0)

    # -- one batch ---------------------------------------------------------------------------------------

    async def _load(self, entries: list[Entry]) -> list[Work]:
        gone: list[Entry] = []
        work: list[Work] = []
        for taken in await self.jobs.take(entries):
            job = taken.job
            if job is None or job.status.terminal:
                gone.append(taken.entry)  # expired, never existed, cancelled or already finished
                continue
            item = Work(taken.entry, job, taken.image or b"")
            if telemetry.enabled():
                _start_span(item)
            queued = _queued_s(job)
            if queued is not None:
                metrics.STAGE_DURATION.labels("queued").observe(queued)
            if job.past_deadline():  # never sent to Triton once its deadline passed
                await self._fail([item], TIMEOUT_MESSAGE, ErrorCode.TIMEOUT)
            elif job.attempts >= self.settings.max_deliveries:
                # delivered again and again without finishing: it kills or stalls dispatchers
                reason = f"Gave up after {job.attempts} deliveries"
                await self._fail([item], reason, ErrorCode.INTERNAL_ERROR, dead_letter=True)
            elif taken.image is None:
                await self._fail([item], "Image expired before processing", ErrorCode.TIMEOUT)
            else:
                work.append(item)
                self.intake.hold(taken.entry)
        await self.jobs.drop(gone)
        return work

    async def _process(self, entries: list[Entry]) -> None:
        work = await self._load(entries)
        try:
            if work:
                await self.jobs.start(work)
                if any(item.job.image_url for item in work):
                    work = await self._download(work)
                specs = await self.specs.for_jobs([item.job.model_version for item in work])
                by_model: dict[str, tuple[ModelSpec | None, list[Work]]] = {}
                for item, spec in zip(work, specs, strict=True):
                    key = spec.name if spec else f"unknown:{item.job.model_version}"
                    by_model.setdefault(key, (spec, []))[1].append(item)
                await asyncio.gather(*(self._run_model(spec, group) for spec, group in by_model.values()))
        finally:
            for item in work:
                self.intake.let_go(item.entry)
                item.end_span()  # dropped (cancelled meanwhile) or released at shutdown: no outcome of its own

    async def _download(self, work: list[Work]) -> list[Work]:
        """Fetch the images of jobs submitted by URL, each as an upload is checked: the work whose image is in hand.
        A refused fetch or a 4xx fails its job with INVALID_IMAGE; a 5xx or a timeout is retried with backoff."""
        fetching = [item for item in work if item.job.image_url]
        await self.jobs.advance(fetching, Stage.DOWNLOADING)
        outcomes = await asyncio.gather(*(self._fetch(item) for item in fetching))
        dropped: set[int] = set()
        for item, error in zip(fetching, outcomes, strict=True):
            if error is not None:
                dropped.add(id(item))
                if error:  # empty: given up at shutdown, the entry goes to another dispatcher
                    await self._fail([item], error, ErrorCode.INVALID_IMAGE)
        return [item for item in work if id(item) not in dropped]

    async def _fetch(self, item: Work) -> str | None:
        """Download ``item``'s image into it; None when done, else why the job fails ("" at shutdown)."""
        url = item.job.image_url
        assert url is not None
        attempt = 0
        began = time.perf_counter()
        while True:
            try:
                data = await self.fetcher.fetch(url)
                break
            except FetchRefused as exc:
                return str(exc)
            except FetchUnavailable as exc:
                attempt += 1
                if not self.retry.retries_left(attempt):
                    return f"{exc} (gave up after {attempt} attempts)"
                delay = self.retry.delay_s(attempt)
                log.warning(
                    "job %s: fetching its image failed (%s); retry %d in %.1fs", item.job.job_id, exc, attempt, delay
                )
                if self._stopping.is_set():
                    return ""
                await self._sleep(delay)
        metrics.STAGE_DURATION.labels("downloading").observe(time.perf_counter() - began)
        try:
            image_metadata = validate(data, self.fetcher.max_bytes)
        except ImageValidationError as exc:
            return f"Image at URL: {exc.detail}"
        item.image = data
        item.job = dataclasses.replace(item.job, image_metadata=image_metadata)
        return None

    async def _run_model(self, spec: ModelSpec | None, work: list[Work]) -> None:
        if spec is None:
            alias = work[0].job.model_version
            await self._fail(work, f"Unknown model_version {alias!r}", ErrorCode.MODEL_ERROR, dead_letter=True)
            return
        ready = await self._preprocess(spec, work)
        if not ready:
            return
        # whether each job was still live comes back with its move to preprocessing: no second read for the first
        # batch; a later one (a batch larger than the model takes) is checked again when its turn comes
        flags = await self.jobs.advance(ready, Stage.PREPROCESSING)
        size = max(1, min(spec.max_batch_size, self.settings.batch_max_size))
        for start in range(0, len(ready), size):
            chunk = ready[start : start + size]
            live = await self._live(chunk, flags[start : start + size] if start == 0 else None)
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
        for item, (outcome, began_ns, ended_ns) in zip(work, outcomes, strict=True):
            metrics.STAGE_DURATION.labels("preprocessing").observe((ended_ns - began_ns) / 1e9)
            if item.span is not None:
                _tracer.start_span(
                    "preprocess",
                    context=trace.set_span_in_context(item.span),
                    start_time=began_ns,
                    attributes={"aic.model": spec.name, "aic.image_bytes": len(item.image)},
                ).end(end_time=ended_ns)
            if isinstance(outcome, ImageValidationError):
                await self._fail([item], outcome.detail, ErrorCode.INVALID_IMAGE)
            elif isinstance(outcome, BaseException):
                log.error("preprocessing job %s failed", item.job.job_id, exc_info=outcome)
                await self._fail([item], f"Preprocessing failed: {type(outcome).__name__}", ErrorCode.INVALID_IMAGE)
            else:
                item.tensor = outcome
                ready.append(item)
        return ready

    async def _live(self, work: list[Work], flags: list[bool] | None = None) -> list[Work]:
        """Drop jobs cancelled while they were being preprocessed: Triton time goes to live jobs only. ``flags``:
        their liveness as just read, else it is read now."""
        flags = flags if flags is not None else await self.jobs.still_live(work)
        await self.jobs.drop([item.entry for item, live in zip(work, flags, strict=True) if not live])
        return [item for item, live in zip(work, flags, strict=True) if live]

    async def _call_triton(self, spec: ModelSpec, work: list[Work]) -> NDArray[np.float32] | None:
        """Logits for the batch, retrying per policy; None when the jobs were failed or released instead."""
        batch = np.stack([w.tensor for w in work if w.tensor is not None])
        outage_deadline = time.monotonic() + self.settings.triton_outage_timeout_s
        attempt = 0
        metrics.BATCH_SIZE.labels(spec.name).observe(len(work))
        while True:
            began = time.perf_counter()
            try:
                logits = await self.runner.infer(spec, batch)
                metrics.TRITON_DURATION.labels(spec.name).observe(time.perf_counter() - began, telemetry.exemplar())
                return logits
            except InferenceError as exc:
                kind = "outage" if exc.outage else "transient" if exc.retryable else "permanent"
                metrics.TRITON_ERRORS.labels(spec.name, kind).inc()
                attempt += 1
                if not exc.retryable:
                    self.versions.failed(spec, [w.job.model_version for w in work])
                    await self._fail(work, str(exc), ErrorCode.MODEL_ERROR, dead_letter=True)
                    return None
                if exc.outage:  # Triton down: wait for it, up to the outage deadline
                    if time.monotonic() > outage_deadline:
                        self.versions.failed(spec, [w.job.model_version for w in work])
                        await self._fail(work, f"Triton unavailable: {exc}", ErrorCode.TIMEOUT, dead_letter=True)
                        return None
                elif not self.retry.retries_left(attempt):
                    self.versions.failed(spec, [w.job.model_version for w in work])
                    await self._fail(work, str(exc), ErrorCode.TIMEOUT, dead_letter=True)
                    return None
                delay = self.retry.delay_s(attempt)
                log.warning("triton call failed (%s); retry %d in %.1fs", exc, attempt, delay)
                if self._stopping.is_set():
                    return None  # shutting down: the entries are released to another dispatcher
                await self._sleep(delay)

    async def _sleep(self, delay_s: float) -> None:
        """Sleep, but wake at once on stop()."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay_s)

    async def _infer(self, spec: ModelSpec, work: list[Work]) -> None:
        with self._batch_span(spec, work):
            began = time.perf_counter()
            logits = await self._call_triton(spec, work)
            if logits is None:
                return
            inferred = time.perf_counter()
            share_ms = (inferred - began) * 1000 / len(work)
            late = {item.job.job_id for item in work if item.job.past_deadline()}
            if late:  # its deadline passed during the call: the late result is discarded, the job times out
                await self._fail([item for item in work if item.job.job_id in late], TIMEOUT_MESSAGE, ErrorCode.TIMEOUT)
            completions = []
            answers = top_k(logits, spec)
            for item, predictions in zip(work, answers, strict=True):
                if item.job.job_id in late:
                    continue
                result = ClassificationResult(
                    job_id=item.job.job_id,
                    predictions=predictions,
                    processing_time=round(time.monotonic() - item.started, 6),
                    model_version=item.job.model_version,
                    image_metadata=item.job.image_metadata,
                    created_at=now_iso(),
                )
                encoded = msgspec.json.encode(result)
                completions.append(Completion(item.job, item.entry, encoded, model=spec.name, inference_ms=share_ms))
            with _tracer.start_as_current_span("store results", attributes={"aic.jobs": len(work)}):
                await self.jobs.complete(completions, through=Stage.INFERENCE)  # the inference event, same trip
            stored = time.perf_counter()
        # only now, with every result stored: the evidence counts and any shadow/mirror run (never awaited); a job
        # whose late result was discarded is no answer a client saw
        served = [
            Served(w.job.job_id, w.job.model_version, w.image, w.tensor, p)
            for w, p in zip(work, answers, strict=True)
            if w.job.job_id not in late
        ]
        self.versions.answered(spec, served, inferred - began)
        self.completed += len(completions)
        for item in work:
            if item.job.job_id not in late:
                self._completed(item, inferred - began, stored - inferred)

    def _completed(self, item: Work, inference_s: float, storing_s: float) -> None:
        job = item.job
        exemplar = telemetry.exemplar(item.span)
        metrics.JOBS_COMPLETED.labels(job.model_version, str(job.priority)).inc()
        metrics.STAGE_DURATION.labels("inference").observe(inference_s, exemplar)
        metrics.STAGE_DURATION.labels("storing").observe(storing_s, exemplar)
        total = _queued_s(job)
        if total is not None:
            metrics.JOB_DURATION.labels(job.model_version, str(job.priority)).observe(total, exemplar)
        if log.isEnabledFor(logging.DEBUG):
            with telemetry.active(item.span) if item.span else contextlib.nullcontext():
                log.debug("job %s completed", job.job_id, extra={"job_id": job.job_id, "tenant": job.tenant})
        item.end_span()

    @contextlib.contextmanager
    def _batch_span(self, spec: ModelSpec, work: list[Work]) -> Iterator[None]:
        """One span per Triton batch, in the trace of its first job and linked to every job's processing span: the
        Triton call and the store of the results are its children."""
        first = work[0].span
        if first is None:
            yield
            return
        span = _tracer.start_span(
            f"infer {spec.name}",
            context=trace.set_span_in_context(first),
            links=[Link(item.span.get_span_context()) for item in work if item.span is not None],
            attributes={
                "aic.model": spec.name,
                "aic.batch_size": len(work),
                "messaging.batch.message_count": len(work),
            },
        )
        with telemetry.active(span), trace.use_span(span, end_on_exit=True):  # an exception: recorded, then ended
            yield

    async def _fail(self, work: list[Work], error: str, code: ErrorCode, *, dead_letter: bool = False) -> None:
        await self.jobs.fail(work, error, str(code), dead_letter=dead_letter)
        self.failed += len(work)
        for item in work:
            job = item.job
            metrics.JOBS_FAILED.labels(job.model_version, str(job.priority), str(code)).inc()
            with telemetry.active(item.span) if item.span else contextlib.nullcontext():
                log.info(
                    "job %s failed with %s: %s",
                    job.job_id,
                    code,
                    error,
                    extra={"job_id": job.job_id, "tenant": job.tenant},
                )
            item.end_span(f"{code}: {error}")

    async def _queue_metrics(self) -> None:
        """Queue depth, in flight and oldest age per priority, for the gauges every dispatcher serves."""
        while True:
            try:
                for info in await self.stats.infos():  # one round trip for every priority
                    metrics.record_queue(info)
            except StoreUnavailable as exc:
                log.debug("queue metrics: redis unavailable: %s", exc)
            await asyncio.sleep(QUEUE_METRICS_INTERVAL_S)

    # -- background --------------------------------------------------------------------------------------

    async def _pulse(self) -> None:
        """Liveness: the loop is not wedged while this runs on time."""
        while True:
            self.health.pulse()
            await asyncio.sleep(PULSE_S)

    async def _probe(self) -> None:
        """Readiness: Redis answers and Triton is ready."""
        while True:
            problems: dict[str, str] = {}
            try:
                await asyncio.wait_for(self.heartbeats.redis.ping(), PROBE_TIMEOUT_S)
            except Exception as exc:  # whatever the failure, it is the answer, and the checks go on
                problems["redis"] = f"unreachable: {type(exc).__name__}: {exc}"
            triton = await self.runner.server_problem()
            if triton:
                problems["triton"] = triton
            self.health.probed(problems)
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def _heartbeat(self) -> None:
        started = now_iso()
        while True:
            try:
                problems = await self.checks.refresh()
                body = {
                    "worker_id": self.worker_id,
                    "pid": os.getpid(),
                    "started_at": started,
                    "updated_at": now_iso(),
                    "completed": self.completed,
                    "failed": self.failed,
                    "in_flight": self.intake.count(),
                    "ready": not problems,
                    "problems": problems,
                }
                await self.heartbeats.beat(self.worker_id, body)
                metrics.READY.set(0 if problems else 1)
                metrics.IN_FLIGHT.set(self.intake.count())
            except StoreUnavailable as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception:  # the heartbeat must outlive any one bad round: without it the dispatcher looks gone
                log.exception("heartbeat failed")
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def _sweep_deadlines(self) -> None:
        """Fail the jobs whose deadline passed, queued or running (each dispatcher sweeps; a job ends once)."""
        while True:
            await asyncio.sleep(self.settings.deadline_sweep_interval_s)
            try:
                for job in await self.deadlines.sweep():
                    metrics.JOBS_FAILED.labels(job.model_version, str(job.priority), str(ErrorCode.TIMEOUT)).inc()
            except StoreUnavailable as exc:
                log.warning("deadline sweep: store unavailable: %s", exc)

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_ms / 3000)
            try:
                await self.intake.renew()
            except StoreUnavailable as exc:
                log.warning("lease renewal failed: %s", exc)
