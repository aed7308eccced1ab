"""How a failed Triton call is retried, as data built from ``DispatcherSettings``.

Two budgets share one backoff: a slow or overloaded Triton (a transient error) is retried ``max_retries``
times; an unreachable one (an outage) is waited for, trying again at the capped delay, until
``triton_outage_timeout_s`` has passed. A job that keeps coming back (its dispatcher dies on it) is bounded
separately, by ``max_deliveries``.
"""

from __future__ import annotations

from aic.core.retry import RetryPolicy
from aic.core.settings import DispatcherSettings


def triton_policy(settings: DispatcherSettings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=max(1, settings.max_retries + 1),
        base_delay_s=settings.triton_retry_base_s,
        factor=settings.triton_retry_factor,
        max_delay_s=settings.triton_retry_max_s,
        jitter=settings.triton_retry_jitter,
    )
