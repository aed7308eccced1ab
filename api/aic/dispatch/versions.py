"""Evidence on model versions and the extra runs that compare them: shadows and a rollout's mirrored jobs.

After a batch's results are stored, its outcome is counted per (alias, version) in memory and flushed to Redis
every ``EVIDENCE_FLUSH_S`` (``aic.store.evidence``; Prometheus gets the same counts at once). Where the published
comparisons (``models:compare``) ask for it, a share of the batch's jobs also runs on another version:

- ``shadow``: the candidate (a version with ``traffic.shadow``) runs the jobs its aliases' serving versions
  answered, and its answers are compared with theirs;
- ``mirror``: the jobs a rollout's canary answered also run on the version it replaces (the reference).

The extra run is best effort and can neither fail, delay nor duplicate the client's job: it starts only once the
job's result, status, events and webhook are stored (the finish script), in a background task the dispatcher's
loop never awaits; at most ``SHADOW_MAX_IN_FLIGHT`` batches run at once per dispatcher (more are skipped and
counted), each bounded by ``SHADOW_TIMEOUT_S``; its outcome goes to counters only, its errors are swallowed and
counted. What it can cost a client is the Triton and CPU time it shares with the next batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aic.core.errors import StoreUnavailable
from aic.core.modelspec import ModelSpec
from aic.core.schemas import Prediction
from aic.dispatch import preprocess
from aic.dispatch.observe_versions import SKIPPED, record_comparison, record_outcome, record_rules
from aic.store.evidence import EvidenceStore, Tally
from aic.triton.client import TritonRunner
from aic.triton.topk import top_k

log = logging.getLogger("aic.dispatcher")


@dataclasses.dataclass(frozen=True)
class VersionSettings:
    """Evidence and comparison runs of a dispatcher."""

    evidence_flush_s: float = 1.0
    """Counts are written to Redis this often (and the published comparisons re-read)."""
    shadow_timeout_s: float = 5.0
    """One extra (shadow or mirrored) Triton call is abandoned, and counted as an error, after this long."""
    shadow_max_in_flight: int = 2
    """Extra runs a dispatcher makes at once; a batch beyond them is not compared (counted as skipped)."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """One published comparison: ``candidate`` against ``reference`` (empty: the version that served)."""

    candidate: str
    mode: str  # shadow | mirror
    percent: float
    aliases: frozenset[str]
    reference: str = ""

    @classmethod
    def of(cls, candidate: str, raw: dict[str, Any]) -> Rule:
        return cls(
            candidate,
            str(raw.get("mode", "shadow")),
            float(raw.get("percent", 0)),
            frozenset(str(a) for a in raw.get("aliases", ())),
            str(raw.get("reference", "")),
        )

    def extra_run(self, alias: str, served: str) -> tuple[str, str, str] | None:
        """(model to run, candidate, reference) for a job of ``alias`` that ``served`` answered, if any."""
        if alias not in self.aliases or self.percent <= 0:
            return None
        if self.mode == "shadow" and served != self.candidate:
            return self.candidate, self.candidate, served
        if self.mode == "mirror" and served == self.candidate and self.reference and self.reference != served:
            return self.reference, self.candidate, self.reference
        return None


def selected(job_id: str, percent: float) -> bool:
    """Whether a job falls in a ``percent`` share: by its id, so a redelivered job decides the same way."""
    return (zlib.crc32(job_id.encode()) % 10000) < percent * 100


def compare(candidate: Sequence[Prediction], reference: Sequence[Prediction]) -> tuple[bool, float, float]:
    """(same top-1 class, share of the reference's top 5 also in the candidate's, top-1 confidence delta).

    Classes are compared by id and name, as a client sees them: a version whose labels are shifted disagrees."""
    if not candidate or not reference:
        return False, 0.0, 0.0
    ours = {(p.class_id, p.class_name) for p in candidate}
    theirs = [(p.class_id, p.class_name) for p in reference]
    overlap = sum(1 for c in theirs if c in ours) / len(theirs)
    same = (candidate[0].class_id, candidate[0].class_name) == theirs[0]
    return same, overlap, candidate[0].confidence - reference[0].confidence


@dataclasses.dataclass
class Served:
    """One answered job, as an extra run needs it."""

    job_id: str
    alias: str
    image: bytes
    tensor: NDArray[Any] | None
    predictions: list[Prediction]


class Versions:
    """A dispatcher's evidence counts and extra runs."""

    def __init__(
        self,
        store: EvidenceStore,
        runner: TritonRunner,
        spec_of: Callable[[str], Any],
        pool: Executor,
        settings: VersionSettings,
    ) -> None:
        self.store = store
        self.runner = runner
        self.spec_of = spec_of  # async name -> ModelSpec | None
        self.pool = pool
        self.settings = settings
        self.tally = Tally()
        self.rules: list[Rule] = []
        self.tasks: set[asyncio.Task[None]] = set()

    # -- what served jobs did ------------------------------------------------------------------------------

    def answered(self, spec: ModelSpec, jobs: Sequence[Served], inference_s: float) -> None:
        """Count a stored batch and start the extra runs the comparisons ask for (never awaited)."""
        now = time.time()
        for alias, count in Counter(job.alias for job in jobs).items():
            self.tally.outcome(alias, spec.name, now, inference_s, jobs=count)
            record_outcome(alias, spec.name, inference_s, count)
        if not self.rules:
            return
        runs: dict[tuple[str, str, str], list[Served]] = {}
        for rule in self.rules:
            for job in jobs:
                extra = rule.extra_run(job.alias, spec.name)
                if extra is not None and selected(job.job_id, rule.percent):
                    runs.setdefault(extra, []).append(job)
        for (model, candidate, reference), chosen in runs.items():
            if len(self.tasks) >= self.settings.shadow_max_in_flight:
                SKIPPED.inc(len(chosen))
                continue
            task = asyncio.create_task(self._extra(model, candidate, reference, spec, chosen))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def failed(self, spec: ModelSpec, aliases: Sequence[str]) -> None:
        """Count jobs the model failed (Triton refused them or never answered in time)."""
        now = time.time()
        for alias, count in Counter(aliases).items():
            self.tally.outcome(alias, spec.name, now, None, error=True, jobs=count)
            record_outcome(alias, spec.name, None, count)

    # -- extra runs ----------------------------------------------------------------------------------------

    async def _extra(self, model: str, candidate: str, reference: str, served: ModelSpec, jobs: list[Served]) -> None:
        now = time.time()
        try:
            other: ModelSpec | None = await self.spec_of(model)
            if other is None:
                raise LookupError(f"model {model} is not published")
            began = time.perf_counter()
            predictions = await asyncio.wait_for(self._infer(other, served, jobs), self.settings.shadow_timeout_s)
            took = time.perf_counter() - began
        except Exception as exc:  # best effort: never the client's failure
            log.info("comparison run on %s failed: %s", model, exc)
            for job in jobs:
                self.tally.outcome(job.alias, model, now, None, error=True)
                self.tally.comparison(job.alias, candidate, reference, now, None)
                record_outcome(job.alias, model, None)
                record_comparison(job.alias, candidate, reference, None)
            return
        for job, theirs in zip(jobs, predictions, strict=True):
            self.tally.outcome(job.alias, model, now, took)
            record_outcome(job.alias, model, took)
            ours, ref = (theirs, job.predictions) if model == candidate else (job.predictions, theirs)
            outcome = compare(ours, ref)
            self.tally.comparison(job.alias, candidate, reference, now, outcome)
            record_comparison(job.alias, candidate, reference, outcome)

    async def _infer(self, other: ModelSpec, served: ModelSpec, jobs: list[Served]) -> list[list[Prediction]]:
        if other.preprocessing == served.preprocessing and all(job.tensor is not None for job in jobs):
            tensors: list[NDArray[Any]] = [job.tensor for job in jobs if job.tensor is not None]
        else:
            loop = asyncio.get_running_loop()
            pre = other.preprocessing
            tensors = list(
                await asyncio.gather(
                    *(loop.run_in_executor(self.pool, preprocess.preprocess, j.image, pre) for j in jobs)
                )
            )
        size = max(1, other.max_batch_size)
        rows: list[list[Prediction]] = []
        for start in range(0, len(tensors), size):
            logits: NDArray[np.float32] = await self.runner.infer(other, np.stack(tensors[start : start + size]))
            rows += top_k(logits, other)
        return rows

    # -- background ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Flush the counts and re-read the comparisons, every ``evidence_flush_s``, until cancelled."""
        try:
            while True:
                await self.flush()
                await asyncio.sleep(self.settings.evidence_flush_s)
        finally:
            for task in list(self.tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush())

    async def flush(self) -> None:
        tally, self.tally = self.tally, Tally()
        try:
            await self.store.record(tally)
            self.rules = [Rule.of(name, raw) for name, raw in sorted((await self.store.comparisons()).items())]
            record_rules([rule.candidate for rule in self.rules])
        except StoreUnavailable as exc:
            log.debug("version evidence: redis unavailable: %s", exc)
            for key, fields in tally.counts.items():  # kept for the next flush
                for name, count in fields.items():
                    self.tally.counts[key][name] += count
