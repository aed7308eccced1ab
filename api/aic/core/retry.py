"""Retry policies as data: how many tries, how long between them, how much jitter.

One shape serves the dispatcher's Triton calls, the webhook deliveries and ``aic.client``'s retries of 429 and
503; each builds its policy from its own settings. Pure: the caller sleeps.
"""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff, capped, with jitter that only ever shortens a delay."""

    max_attempts: int
    """Tries in all, the first one included."""
    base_delay_s: float
    factor: float
    max_delay_s: float
    jitter: float
    """Fraction of each delay drawn at random (0.2: the delay is 80-100 % of the nominal one)."""

    def nominal_delay_s(self, attempt: int) -> float:
        """Delay after failed attempt number ``attempt`` (1-based), before jitter."""
        exponent = min(max(0, attempt - 1), 512)  # an outage waited out for hours must not overflow a float
        return float(min(self.max_delay_s, self.base_delay_s * self.factor**exponent))

    def delay_s(self, attempt: int, retry_after_s: float | None = None, rng: random.Random | None = None) -> float:
        """Delay before the next attempt; a server's ``Retry-After`` wins over the backoff, capped by
        ``max_delay_s``. Jitter only shortens the nominal delay, so the bounded schedule never grows past its sum.
        """
        if retry_after_s is not None:
            return min(self.max_delay_s, max(0.0, retry_after_s))
        nominal = self.nominal_delay_s(attempt)
        draw = (rng or random).random()
        return nominal * (1.0 - self.jitter * draw)

    def schedule_s(self) -> list[float]:
        """The nominal delays between all attempts: the longest a task can take to give up, minus the tries."""
        return [self.nominal_delay_s(a) for a in range(1, self.max_attempts)]

    def retries_left(self, attempt: int) -> bool:
        """Whether another try may follow failed attempt number ``attempt``."""
        return attempt < self.max_attempts


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None
