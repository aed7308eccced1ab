"""Webhook messages per the Standard Webhooks spec: secrets, signatures, payloads and the retry schedule.

Everything here is pure (no I/O), so the parts a receiver's library has to agree with are unit-tested against the
spec's published test vector. Sending lives in ``webhook_net``, Redis state in ``webhook_store``, the delivery
loop in ``webhook_worker``.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import math
import random
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from aic.timeutil import iso

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
SECRET_BYTES = 32  # the spec asks for 24-64 random bytes

EVENT_TYPES = {
    "started": "job.started",
    "completed": "job.completed",
    "failed": "job.failed",
    "cancelled": "job.cancelled",
}
"""Outbox event (as the job store's scripts write it) -> webhook ``type``."""

_EVENT_STATUS = {"started": "processing", "completed": "completed", "failed": "failed", "cancelled": "cancelled"}


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_<base64>`` secret stands for (the prefix is optional, as in the spec's libraries)."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64 HMAC-SHA256>`` signature over ``{id}.{timestamp}.{body}``."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(signing_secrets: list[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated (the spec's rotation form)."""
    return " ".join(sign(s, webhook_id, timestamp, body) for s in signing_secrets)


def verify(signing_secret: str, header: str, webhook_id: str, timestamp: int, body: bytes) -> bool:
    """Whether any ``v1`` signature in ``header`` was made with ``signing_secret`` (what a receiver checks)."""
    expected = sign(signing_secret, webhook_id, timestamp, body)
    return any(hmac.compare_digest(expected, part) for part in header.split())


def webhook_id(job_id: str, event: str) -> str:
    """Stable per (job, event): the same across retries and redeliveries, so receivers can deduplicate."""
    return f"msg_{job_id}_{event}"


def payload(event: str, occurred_at: datetime, job: dict[str, str], result: dict[str, Any] | None) -> bytes:
    """The JSON body: ``{type, timestamp, data: {job_id, status, result?, error_message?, error_code?}}``.

    Built from the event and the job's stored state only, so every attempt sends the same bytes.
    """
    data: dict[str, Any] = {"job_id": job["job_id"], "status": _EVENT_STATUS[event]}
    if event == "completed" and result is not None:
        data["result"] = result
    if event == "failed":
        data["error_message"] = job.get("error") or None
        data["error_code"] = job.get("error_code") or None
    body = {
        "type": EVENT_TYPES[event],
        "timestamp": iso(occurred_at),
        "data": data,
    }
    return msgspec.json.encode(body)


def entry_time(entry_id: str) -> datetime:
    """When the outbox entry was written: a stream id starts with its milliseconds since the epoch."""
    millis = int(entry_id.split("-", 1)[0])
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a failing delivery is retried; every value comes from ``WebhookSettings``."""

    max_attempts: int
    base_delay_s: float
    factor: float
    max_delay_s: float
    jitter: float
    """Fraction of each delay drawn at random (0.2: the delay is 80-100 % of the nominal one)."""

    def nominal_delay_s(self, attempt: int) -> float:
        """Delay after failed attempt number ``attempt`` (1-based), before jitter."""
        return float(min(self.max_delay_s, self.base_delay_s * self.factor ** (attempt - 1)))

    def delay_s(self, attempt: int, retry_after_s: float | None = None, rng: random.Random | None = None) -> float:
        """Delay before the next attempt; ``Retry-After`` wins over the backoff, capped by ``max_delay_s``.

        Jitter only shortens the nominal delay, so the bounded schedule never grows past its sum.
        """
        if retry_after_s is not None:
            return min(self.max_delay_s, max(0.0, retry_after_s))
        nominal = self.nominal_delay_s(attempt)
        draw = (rng or random).random()
        return nominal * (1.0 - self.jitter * draw)

    def schedule_s(self) -> list[float]:
        """The nominal delays between all attempts: the longest a delivery can take to give up, minus sends."""
        return [self.nominal_delay_s(a) for a in range(1, self.max_attempts)]

    def retries_left(self, attempt: int) -> bool:
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
