"""Webhook messages per the Standard Webhooks spec: secrets, signatures, payloads and the retry schedule.

Everything here is pure (no I/O), so the parts a receiver's library has to agree with are unit-tested against the
spec's published test vector. Sending lives in ``sender``, Redis state in ``aic.store.webhooks``, the delivery
loop in ``worker``; event names, ids and new secrets in ``aic.core.webhooks``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import msgspec

from aic.core.retry import RetryPolicy
from aic.core.settings import WebhookSettings
from aic.core.timeutil import iso
from aic.core.webhooks import EVENT_STATUS, EVENT_TYPES, SECRET_PREFIX


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


def payload(event: str, occurred_at: datetime, job: dict[str, str], result: dict[str, Any] | None) -> bytes:
    """The JSON body: ``{type, timestamp, data: {job_id, status, result?, error_message?, error_code?}}``.

    Built from the event and the job's stored state only, so every attempt sends the same bytes.
    """
    data: dict[str, Any] = {"job_id": job["job_id"], "status": str(EVENT_STATUS[event])}
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


def retry_policy(settings: WebhookSettings) -> RetryPolicy:
    """The delivery schedule: ``WEBHOOK_MAX_ATTEMPTS`` tries, exponential backoff from ``WEBHOOK_BACKOFF_*``."""
    return RetryPolicy(
        max_attempts=max(1, settings.webhook_max_attempts),
        base_delay_s=settings.webhook_backoff_base_s,
        factor=settings.webhook_backoff_factor,
        max_delay_s=settings.webhook_backoff_max_s,
        jitter=settings.webhook_jitter,
    )
