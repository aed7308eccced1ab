"""Every Redis key pattern and TTL of the service, in one place (only ``aic.store`` imports this module).

Key names are the seed design's (``job:{job_id}:status`` ...). The braces around the job id are literal: they are
a Redis Cluster hash tag, so every key of one job lives in one slot.
"""

from __future__ import annotations

from typing import Final

from aic.core.enums import Priority

JOB_STATUS_TTL_S: Final = 3600
"""A job not finished within this window expires (seed: status 1 h)."""
JOB_RESULT_TTL_S: Final = 86400
"""A finished job (result and status together) stays readable this long (seed: result 24 h)."""
JOB_IMAGE_TTL_S: Final = JOB_STATUS_TTL_S
"""The upload lives as long as its pending job (the seed's 30 min would drop jobs queued longer); it is
deleted as soon as the job ends."""
JOB_METADATA_TTL_S: Final = JOB_STATUS_TTL_S
WORKER_STATUS_TTL_S: Final = 60
"""A dispatcher that has not beaten its heartbeat for this long counts as gone."""


def job_status(job_id: str) -> str:
    return f"job:{{{job_id}}}:status"


def job_result(job_id: str) -> str:
    return f"job:{{{job_id}}}:result"


def job_image(job_id: str) -> str:
    """The job's upload: its bytes, or with an object store (``aic.store.objects``) the object's path."""
    return f"job:{{{job_id}}}:image"


def direct_upload(upload_id: str) -> str:
    """A presigned direct upload reserved for a tenant (hash: ``tenant``, ``claimed`` once a submit used it); the
    upload id is the id of the job its submit creates, so its object is ``<tenant>/<upload id>`` like any upload."""
    return f"upload:{{{upload_id}}}"


UPLOAD_SWEEP_LOCK: Final = "uploads:sweep"
"""Held (expiring) by the dispatcher that sweeps stray upload objects this interval: one sweep for all."""


def job_metadata(job_id: str) -> str:
    return f"job:{{{job_id}}}:metadata"


def job_events(job_id: str) -> str:
    """Pub/sub channel carrying every status change of one job."""
    return f"job:{{{job_id}}}:events"


JOB_EVENTS_PATTERN: Final = "job:*:events"
"""Every job's events channel, for a pattern subscription (tests record every event this way)."""


def job_id_of_events(channel: str) -> str:
    """The job id inside a ``job:{<id>}:events`` channel name."""
    return channel.removeprefix("job:{").removesuffix("}:events")


def hub_channel(token: str) -> str:
    """A private channel an API process's event hub keeps subscribed, so its reader always has a subscription."""
    return f"aic:hub:{token}"


# -- the queue ----------------------------------------------------------------------------------------------


def queue(priority: str) -> str:
    return f"queue:{priority}"


QUEUES: Final = tuple(queue(p) for p in Priority)
"""The priority streams, most urgent first."""
QUEUE_GROUP: Final = "dispatchers"
"""Consumer group every dispatcher reads the queues through."""
DEAD_LETTER_STREAM: Final = "queue:dead"
DEAD_LETTER_INDEX: Final = "queue:dead:index"
"""Hash: job id -> its entry id in ``queue:dead``, so a retry finds a dead letter without scanning the stream.
Written and removed in the same Lua steps as the entry itself."""


def worker_status(worker_id: str) -> str:
    """A dispatcher's heartbeat (JSON: counters, readiness), expiring after ``WORKER_STATUS_TTL_S``."""
    return f"worker:{worker_id}:status"


WORKER_HEARTBEATS: Final = "workers:heartbeats"
"""Sorted set: dispatcher id -> when it last beat (ms). ``/health`` counts the recent ones instead of scanning
the keyspace for ``worker:*:status``; each beat prunes the members that stopped beating."""

# -- models ---------------------------------------------------------------------------------------------------

MODEL_ROUTES: Final = "models:routes"
"""Hash: alias (what clients pass as ``model_version``) -> the Triton model with the largest weight."""
MODEL_SPECS: Final = "models:specs"
"""Hash: Triton model name -> JSON ``ModelSpec`` (preprocessing, labels, tensors)."""
MODEL_WEIGHTS: Final = "models:weights"
"""Hash: alias -> JSON {Triton model name: traffic weight}. Dispatchers split an alias's traffic by these
weights; ``models:routes`` always names the heaviest of them (one script writes both)."""

# -- webhooks -------------------------------------------------------------------------------------------------

WEBHOOK_OUTBOX: Final = "webhooks:outbox"
"""Stream of (job_id, event) pairs whose webhook is due; written atomically with the state change."""
WEBHOOK_GROUP: Final = "webhooks"
"""Consumer group the dispatchers' webhook workers read the outbox through."""
WEBHOOK_SCHEDULED: Final = "webhooks:scheduled"
"""Sorted set: webhook id -> when its next attempt is due (ms); a claimed one is pushed out by a lease."""


def webhook_delivery(webhook_id: str) -> str:
    """Hash: one pending delivery (job_id, event, entry_id, attempts); deleted once delivered or given up."""
    return f"webhooks:delivery:{webhook_id}"


def webhook_secret(tenant: str) -> str:
    """Hash: a tenant's signing secret (current, previous, previous_until_ms), no TTL."""
    return f"webhooks:secret:{tenant}"


def job_webhooks(job_id: str) -> str:
    """List of JSON delivery attempts of one job's webhooks; lives as long as the job's status."""
    return f"job:{{{job_id}}}:webhooks"


# -- requests ---------------------------------------------------------------------------------------------------

IDEMPOTENCY_TTL_S: Final = 86400
"""An ``Idempotency-Key`` is remembered this long (Stripe keeps keys 24 h)."""


def idempotency(tenant: str, key_digest: str) -> str:
    """Request fingerprint + job ids of one tenant's Idempotency-Key (the key itself is kept only hashed)."""
    return f"idempotency:{tenant}:{key_digest}"


def rate_limit_ip(ip: str) -> str:
    """Token bucket of one client IP (the seed's ``rate_limit:ip:*``; a bucket needs no window suffix)."""
    return f"rate_limit:ip:{ip}"


def rate_limit_auth(ip: str) -> str:
    """Token bucket of one client IP's failed authentications (a bucket of its own: guesses, not requests)."""
    return f"rate_limit:auth:{ip}"


def rate_limit_user(key_id: str) -> str:
    """Token bucket of one API key, named by a digest prefix of the key, never the key."""
    return f"rate_limit:user:{key_id}"
