"""Every Redis key pattern and TTL of the service, in one place (only ``aic.store`` imports this module).

Which names a deployment uses is its ``Keyspace``: the seed design's (``job:{job_id}:status``, ``queue:high`` ...)
on one Redis with one queue shard, the default; sharded names on a Redis Cluster or with ``QUEUE_SHARDS`` above 1.
There every job belongs to one of S shards, named by its id alone (``shard_of``), and every key of the job shares
one hash tag with the priority streams, dead letters and webhook outbox of its shard: each Lua step touches one
slot, so finishing a job (result + status + acknowledgement + outbox) stays one atomic step on a cluster. The
shard tags are chosen so that shard i's slot lies in the i-th S-th of the slot space: slots split evenly over the
primaries spread the shards (and so the jobs) evenly over them (README "Scaling"). Keys that are not a job's
(models, heartbeats, rate limits, idempotency, a tenant's job list, deadlines, usage) are each one key, read or
written outside the job scripts (``models:*`` hashes share one tag: the routes script writes them together).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from aic.core.enums import Priority
from aic.core.settings import MAX_SHARDS

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


# -- layout -------------------------------------------------------------------------------------------------------


def shard_of(job_id: str, shards: int) -> int:
    """The shard of a job: the top 32 bits of its UUID scaled to ``shards`` (with 16 shards, its first hex digit),
    so any process finds it from the id alone."""
    if shards == 1:
        return 0
    digits = job_id.replace("-", "")[:8]
    try:
        return (int(digits, 16) * shards) >> 32 if len(digits) == 8 else 0
    except ValueError:
        return 0


@functools.cache
def shard_tags(shards: int) -> tuple[str, ...]:
    """The hash tag of each of ``shards`` shards: ``q<i>.<n>``, the first ``n`` whose slot lies in the i-th
    ``shards``-th of the slot space, so contiguous equal slot ranges (how clusters are formed and resharded by
    default) hold equal numbers of shards."""
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be 1..{MAX_SHARDS}, got {shards}")
    tags = []
    for i in range(shards):
        low, high = i * REDIS_CLUSTER_HASH_SLOTS // shards, (i + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
        n = 0
        while not low <= key_slot(f"q{i}.{n}".encode()) < high:
            n += 1
        tags.append(f"q{i}.{n}")
    return tuple(tags)


@dataclass(frozen=True)
class Keyspace:
    """The key names of one deployment: ``shards`` queue shards, on a Redis Cluster or not. One shard on one Redis
    is the seed's names (``LEGACY``); anything else names every job key and queue key after its shard's tag."""

    shards: int = 1
    cluster: bool = False

    def __post_init__(self) -> None:
        shard_tags(self.shards)  # validates

    @property
    def sharded(self) -> bool:
        return self.cluster or self.shards > 1

    @property
    def sharded_pubsub(self) -> bool:
        """Whether live progress goes through sharded pub/sub (SPUBLISH / SSUBSCRIBE): on a cluster, where plain
        pub/sub is broadcast to every node."""
        return self.cluster

    def shard(self, job_id: str) -> int:
        return shard_of(job_id, self.shards)

    def all_shards(self) -> range:
        return range(self.shards)

    def describe(self) -> dict[str, object]:
        return {"cluster": self.cluster, "shards": self.shards}

    def _tag(self, shard: int) -> str:
        return shard_tags(self.shards)[shard]

    def _job(self, job_id: str, suffix: str) -> str:
        if not self.sharded:
            return f"job:{{{job_id}}}:{suffix}"
        return f"job:{{{self._tag(self.shard(job_id))}}}:{job_id}:{suffix}"

    # -- one job's keys ---------------------------------------------------------------------------------------

    def job_status(self, job_id: str) -> str:
        return self._job(job_id, "status")

    def job_result(self, job_id: str) -> str:
        return self._job(job_id, "result")

    def job_image(self, job_id: str) -> str:
        """The job's upload: its bytes, or with an object store (``aic.store.objects``) the object's path."""
        return self._job(job_id, "image")

    def job_metadata(self, job_id: str) -> str:
        return self._job(job_id, "metadata")

    def job_webhooks(self, job_id: str) -> str:
        """List of JSON delivery attempts of one job's webhooks; lives as long as the job's status."""
        return self._job(job_id, "webhooks")

    def job_events(self, job_id: str) -> str:
        """Pub/sub channel (sharded on a cluster) carrying every status change of one job."""
        return self._job(job_id, "events")

    def job_id_of_events(self, channel: str) -> str:
        """The job id inside a job's events channel name."""
        if not self.sharded:
            return channel.removeprefix("job:{").removesuffix("}:events")
        return channel.removesuffix(":events").rsplit(":", 1)[-1]

    @property
    def job_events_pattern(self) -> str:
        """Every job's events channel, for a pattern subscription (tests record every event this way)."""
        return "job:*:events"

    def direct_upload(self, upload_id: str) -> str:
        """A presigned direct upload reserved for a tenant (hash: ``tenant``, ``claimed`` once a submit used it);
        the upload id is the id of the job its submit creates, so its object is ``<tenant>/<upload id>`` like any
        upload, and on a cluster the reservation sits in the job's shard."""
        if not self.sharded:
            return f"upload:{{{upload_id}}}"
        return f"upload:{{{self._tag(self.shard(upload_id))}}}:{upload_id}"

    # -- a shard's keys -------------------------------------------------------------------------------------------

    def _shard(self, family: str, shard: int, suffix: str) -> str:
        if not self.sharded:
            return f"{family}:{suffix}"
        return f"{family}:{{{self._tag(shard)}}}:{suffix}"

    def queue(self, priority: str, shard: int = 0) -> str:
        return self._shard("queue", shard, str(priority))

    def queues(self, shard: int = 0) -> tuple[str, ...]:
        """The priority streams of a shard, most urgent first."""
        return tuple(self.queue(p, shard) for p in Priority)

    def dead_letter_stream(self, shard: int = 0) -> str:
        return self._shard("queue", shard, "dead")

    def dead_letter_index(self, shard: int = 0) -> str:
        """Hash: job id -> its entry id in the shard's dead-letter stream, so a retry finds a dead letter without
        scanning the stream. Written and removed in the same Lua steps as the entry itself."""
        return self._shard("queue", shard, "dead:index")

    def deadlines(self, shard: int = 0) -> str:
        """Sorted set: job id -> its deadline (ms), of the shard's live jobs. The dispatchers' sweep fails live jobs
        found past it; an entry is removed when its job finishes, or by the sweep. Written outside the jobs' steps
        (idempotently); one per shard so that no one key takes a write of every job on a cluster."""
        return self._shard("jobs", shard, "deadlines")

    def webhook_outbox(self, shard: int = 0) -> str:
        """Stream of (job_id, event) pairs whose webhook is due; written atomically with the state change."""
        return self._shard("webhooks", shard, "outbox")

    def webhook_scheduled(self, shard: int = 0) -> str:
        """Sorted set: webhook id -> when its next attempt is due (ms); a claimed one is pushed out by a lease."""
        return self._shard("webhooks", shard, "scheduled")

    def webhook_delivery(self, webhook_id: str, shard: int = 0) -> str:
        """Hash: one pending delivery (job_id, event, entry_id, attempts); deleted once delivered or given up."""
        return self._shard("webhooks", shard, f"delivery:{webhook_id}")

    def hub_channel(self, token: str, shard: int = 0) -> str:
        """A private channel an API process's event hub keeps subscribed (on a cluster one per shard, sharded), so
        its reader always has a subscription; the inbox where jobs it waits for announce their end."""
        if not self.sharded_pubsub:
            return f"aic:hub:{token}"
        return f"aic:hub:{{{self._tag(shard)}}}:{token}"

    # -- models: shared keys, one slot (the routes script writes five of them at once) ---------------------------

    def _models(self, name: str) -> str:
        return f"models:{{models}}:{name}" if self.cluster else f"models:{name}"

    @property
    def model_routes(self) -> str:
        """Hash: alias (what clients pass as ``model_version``) -> the Triton model with the largest weight."""
        return self._models("routes")

    @property
    def model_specs(self) -> str:
        """Hash: Triton model name -> JSON ``ModelSpec`` (preprocessing, labels, tensors)."""
        return self._models("specs")

    @property
    def model_weights(self) -> str:
        """Hash: alias -> JSON {Triton model name: traffic weight}. Dispatchers split an alias's traffic by these
        weights; the routes always name the heaviest of them (one script writes both)."""
        return self._models("weights")

    @property
    def model_requested(self) -> str:
        """Hash: Triton model name -> the weight its publisher asked for (the ModelVersion's ``traffic.weight``)."""
        return self._models("requested")

    @property
    def model_overrides(self) -> str:
        """Hash: Triton model name -> the weight a progressive rollout publishes instead of the requested one (-1:
        the requested one). Written by the same script as the routes; removed with the model."""
        return self._models("overrides")

    @property
    def model_compare(self) -> str:
        """Hash: Triton model name -> JSON comparison it takes part in as the candidate (a shadow, or a rollout's
        canary mirrored onto its previous version): ``{"mode", "percent", "aliases", "reference"}``. One key,
        written outside any job's script; dispatchers read it every few seconds."""
        return self._models("compare")

    @property
    def model_rollouts(self) -> str:
        """Hash: Triton model name -> JSON of its rollout's status (what ``status.rollout`` of its ModelVersion
        says), for ``aic models status`` and ``GET /models`` without a cluster API."""
        return self._models("rollouts")


LEGACY: Final = Keyspace()
"""The seed's names: one Redis, one queue shard (the default deployment)."""


def layout_marker(keyspace: Keyspace) -> str:
    """What ``LAYOUT_KEY`` holds for ``keyspace``: processes of one deployment must agree on it."""
    return json.dumps(keyspace.describe(), sort_keys=True)


LAYOUT_KEY: Final = "aic:layout"
"""The key layout (cluster, shards) the deployment's data was written in; a process with another layout refuses
to start unless told it is migrating (README "Scaling")."""

QUEUE_GROUP: Final = "dispatchers"
"""Consumer group every dispatcher reads the queues through."""
WEBHOOK_GROUP: Final = "webhooks"
"""Consumer group the dispatchers' webhook workers read the outbox through."""

UPLOAD_SWEEP_LOCK: Final = "uploads:sweep"
"""Held (expiring) by the dispatcher that sweeps stray upload objects this interval: one sweep for all."""


def worker_status(worker_id: str) -> str:
    """A dispatcher's heartbeat (JSON: counters, readiness), expiring after ``WORKER_STATUS_TTL_S``."""
    return f"worker:{worker_id}:status"


WORKER_HEARTBEATS: Final = "workers:heartbeats"
"""Sorted set: dispatcher id -> when it last beat (ms). ``/health`` counts the recent ones instead of scanning
the keyspace for ``worker:*:status``; each beat prunes the members that stopped beating."""

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


def webhook_secret(tenant: str) -> str:
    """Hash: a tenant's signing secret (current, previous, previous_until_ms), no TTL."""
    return f"webhooks:secret:{tenant}"


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
