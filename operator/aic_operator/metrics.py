"""Prometheus metrics of the ModelVersion operator, served on ``METRICS_PORT`` by ``aic operator``.

Every reconcile attempt counts once under its action: ``apply`` (create, spec update, resume and the resync
timer: they all run the same reconcile) or ``delete``; its duration goes to the histogram, and an attempt that
ends in an error counts once more, by what kopf does next: ``permanent`` (kopf.PermanentError: only a spec change
helps) or ``temporary`` (kopf.TemporaryError or any other exception: kopf retries). The handlers use
``reconciling(action)``; an ``OperatorMetrics`` of its own registry measures the same way in the tests.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Final, Literal, ParamSpec, TypeVar

import kopf
from aic.core.metrics import STAGE_BUCKETS
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

Action = Literal["apply", "delete"]
ErrorKind = Literal["temporary", "permanent"]
ACTIONS: Final[tuple[Action, ...]] = ("apply", "delete")
ERROR_KINDS: Final[tuple[ErrorKind, ...]] = ("temporary", "permanent")

P = ParamSpec("P")
R = TypeVar("R")


class OperatorMetrics:
    """The operator's counters and histogram in one registry (the process's default one unless told)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.reconciles = Counter(
            "aic_operator_reconciles_total",
            "ModelVersion reconcile attempts, successful or not.",
            ["action"],
            registry=registry,
        )
        self.errors = Counter(
            "aic_operator_reconcile_errors_total",
            "ModelVersion reconcile attempts that failed; kind: temporary (kopf retries) or permanent.",
            ["action", "kind"],
            registry=registry,
        )
        self.duration = Histogram(
            "aic_operator_reconcile_duration_seconds",
            "Time one ModelVersion reconcile attempt took, successful or not.",
            ["action"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        for action in ACTIONS:  # every series exists from the start, at 0: rates and alerts need no special case
            self.reconciles.labels(action)
            self.duration.labels(action)
            for kind in ERROR_KINDS:
                self.errors.labels(action, kind)

    @contextmanager
    def attempt(self, action: Action) -> Iterator[None]:
        """Measure one reconcile attempt: counted and timed however it ends; an error counted by its kind and
        raised on."""
        started = time.perf_counter()
        try:
            yield
        except kopf.PermanentError:
            self.errors.labels(action, "permanent").inc()
            raise
        except Exception:
            self.errors.labels(action, "temporary").inc()
            raise
        finally:
            self.reconciles.labels(action).inc()
            self.duration.labels(action).observe(time.perf_counter() - started)

    def reconciling(self, action: Action) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
        """Decorate an async reconcile (a kopf handler or what it calls): each call is one ``attempt``. The name
        and signature stay the handler's (kopf derives handler ids from the name and injects kwargs)."""

        def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
            @functools.wraps(fn)
            async def measured(*args: P.args, **kwargs: P.kwargs) -> R:
                with self.attempt(action):
                    return await fn(*args, **kwargs)

            return measured

        return decorate


METRICS: Final = OperatorMetrics()
"""The operator process's metrics, in prometheus_client's default registry (what ``/metrics`` serves)."""
reconciling: Final = METRICS.reconciling
