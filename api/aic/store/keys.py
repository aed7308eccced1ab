"""Every Redis key pattern and TTL of the service, in one place (only ``aic.store`` imports this module).

Key names are the seed design's (``job:{job_id}:status`` ...). The braces around the job id are literal: they are
a Redis Cluster hash tag, so every key of one job lives in one slot.
"""

from __future__ import annotations

from typing import Final

from aic.core.enums import Priority

JOB_STATUS_TTL_S: Final = 3600
"""A job not finished within this window expires (seed: status 1 h); since deadlines, the default one (the
``QUEUE_TTL_S`` setting): a live job's keys live ``deadline + LIVE_SLACK_S``."""
JOB_RESULT_TTL_S: Final = 86400
"""A finished job (result and status together) stays readable this long unless it asked for another
``retention_s`` (seed: result 24 h); the job hash's ``retention_s`` field is what the Lua steps use."""
JOB_IMAGE_TTL_S: Final = JOB_STATUS_TTL_S
"""The upload lives as long as its pending job (the seed's 30 min would drop jobs queued longer); it is
deleted as soon as the job ends."""
JOB_METADATA_TTL_S: Final = JOB_STATUS_TTL_S
LIVE_SLACK_S: Final = 300
"""A live job's keys outlive its deadline by this much, so the deadline sweep still finds the job and ends it
``failed``/TIMEOUT (with its webhook) instead of the record silently expiring."""
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

MODEL_REQUESTED: Final = "models:requested"
"""Hash: Triton model name -> the weight its publisher asked for (the ModelVersion's ``traffic.weight``)."""
MODEL_OVERRIDES: Final = "models:overrides"
"""Hash: Triton model name -> the weight a progressive rollout publishes instead of the requested one (-1: the
requested one). Written by the same script as the routes; removed with the model."""
MODEL_COMPARE: Final = "models:compare"
"""Hash: Triton model name -> JSON comparison it takes part in as the candidate (a shadow, or a rollout's canary
mirrored onto its previous version): ``{"mode", "percent", "aliases", "reference"}``. One key, written outside
any job's script; dispatchers read it every few seconds."""
MODEL_ROLLOUTS: Final = "models:rollouts"
"""Hash: Triton model name -> JSON of its rollout's status (what ``status.rollout`` of its ModelVersion says),
for ``aic models status`` and ``GET /models`` without a cluster API."""

EVIDENCE_BUCKET_S: Final = 10
"""Width of one evidence bucket: a rollout's analysis reads whole buckets, so a step's window may take in up
to this much of the step before it."""
EVIDENCE_TTL_S: Final = 6 * 3600
"""Evidence expires after this long: a rollout step's analysis window is capped to it."""


def evidence_outcomes(alias: str, model: str, bucket: int) -> str:
    """Hash: jobs, errors and latency histogram of one (alias, model version) in one bucket (its start, s)."""
    return f"models:evidence:{alias}:{model}:{bucket}"


def evidence_agreement(alias: str, candidate: str, reference: str, bucket: int) -> str:
    """Hash: how a candidate's answers compared with a reference version's on the same jobs, in one bucket."""
    return f"models:agreement:{alias}:{candidate}:{reference}:{bucket}"


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


# -- job lifecycle: per-tenant index, deadlines, usage ------------------------------------------------------------
# None of these is a job's key: each is one key, written outside the job's Lua steps (idempotently), so a Redis
# Cluster never needs a script across slots (ARCHITECTURE.md "Beyond one Redis").


def tenant_jobs(tenant: str) -> str:
    """Sorted set: one tenant's job ids scored by creation time (ms); ``GET /jobs`` pages through it newest first.
    Members whose job expired are trimmed when a page meets them and, by age, on every submit."""
    return f"jobs:tenant:{{{tenant}}}"


DEADLINES: Final = "jobs:deadlines"
"""Sorted set: job id -> its deadline (ms). The dispatchers' sweep fails live jobs found past it; an entry is
removed when its job finishes, or by the sweep."""

USAGE_TTL_S: Final = 400 * 86400
"""A day of usage counters is kept this long (the issue asks for at least 90 days; a year and a month covers
a yearly report)."""
USAGE_MAX_DAYS: Final = 400
"""The longest range ``GET /usage`` answers: no counter older than ``USAGE_TTL_S`` exists anyway."""


def usage(tenant: str, day: str) -> str:
    """Hash: one tenant's counters of one UTC day (``YYYY-MM-DD``): submitted, completed, failed, cancelled,
    timed_out, image_bytes, and per served model ``jobs:<model>`` and ``inference_ms:<model>``."""
    return f"usage:{{{tenant}}}:{day}"


USAGE_TENANTS: Final = "usage:tenants"
"""Set of the tenants that have usage counters, for the admin's all-tenants report."""
