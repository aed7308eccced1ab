"""The webhook vocabulary shared by the API (what a job may ask for), the store (what its scripts queue)
and the delivery worker (what it sends): event names, their webhook types, ids and secrets."""

from __future__ import annotations

import base64
import secrets
from typing import Final

from aic.core.enums import JobStatus

EVENT_TYPES: Final = {
    "started": "job.started",
    "completed": "job.completed",
    "failed": "job.failed",
    "cancelled": "job.cancelled",
}
"""Outbox event (as the job store's scripts write it) -> webhook ``type``."""
EVENTS: Final = tuple(EVENT_TYPES)
"""What ``webhook_events`` may list, in this order."""
DEFAULT_EVENTS: Final = ("completed", "failed", "cancelled")
"""A job that names no ``webhook_events`` gets its terminal event."""
EVENT_STATUS: Final = {
    "started": JobStatus.PROCESSING,
    "completed": JobStatus.COMPLETED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}
"""The status a job has when each event is sent."""

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
SECRET_BYTES: Final = 32  # the Standard Webhooks spec asks for 24-64 random bytes


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def webhook_id(job_id: str, event: str) -> str:
    """Stable per (job, event): the same across retries and redeliveries, so receivers can deduplicate."""
    return f"msg_{job_id}_{event}"
