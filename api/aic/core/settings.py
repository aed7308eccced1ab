"""Settings, one frozen dataclass per concern, read from the environment or a ``.env`` file.

Names follow the seed design's section 7 (``API_HOST``, ``REDIS_URL``, ``MAX_FILE_SIZE``, ...); each field's
environment variable is its name in upper case.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

from dotenv import dotenv_values

T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parents[3]
"""The checkout (``api/aic/core/settings.py`` is three levels down): the default model repository lives there."""


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


def environment() -> dict[str, str]:
    """The process environment over the values of ``.env`` in the working directory (env wins)."""
    values = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    values.update(os.environ)
    return values


def _convert(raw: str, kind: Any, name: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return None if raw == "" else _convert(raw, inner[0], name)
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{name} must be a boolean, got {raw!r}")
    if kind is int or kind is float:
        try:
            return kind(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if origin is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind is Path:
        return Path(raw).expanduser()
    return raw


def load(cls: type[T], env: Mapping[str, str] | None = None) -> T:
    """Build one settings dataclass from ``env`` (default: the process environment and ``.env``)."""
    env = environment() if env is None else env
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = field.name.upper()
        if name in env:
            values[field.name] = _convert(env[name], hints[field.name], name)
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class ApiSettings:
    """The HTTP API process."""

    app_name: str = "Async Image Classifier"
    version: str = "1.0.0"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_prefix: str = "/api/v1"
    max_file_size: int = 10 * 1024 * 1024
    """Largest accepted upload in bytes; larger uploads get 400 "File size exceeds limit"."""
    allowed_hosts: tuple[str, ...] = ("*",)
    api_keys: str = ""
    """Comma-separated ``tenant:key`` pairs. Empty means no key is valid: every guarded route answers 401."""
    api_key_header: str = "X-API-Key"
    log_level: str = "INFO"
    log_format: str = ""
    """``json`` (one object per line) or ``console`` (readable lines); empty: console on a terminal, else JSON."""
    secret_key: str = ""
    """Signs the Bearer JWTs of ``POST /auth/token`` (HS256). Empty: a random per-process secret is generated
    and a warning logged; every API replica must share one value in production."""
    access_token_expire_minutes: int = 30
    """Lifetime of an access token issued by ``POST /auth/token``."""
    rate_limit_per_minute: int = 60
    """Sustained requests per minute allowed per API key and, separately, per client IP; 0 disables limits."""
    rate_limit_burst: int = 10
    """Requests a key or IP may make at once before the per-minute rate applies (token bucket capacity)."""
    batch_max_files: int = 10
    """Most files one ``POST /classify/batch`` may carry."""
    prefer_wait_max_s: int = 60
    """Longest hold a ``Prefer: wait=N`` submit may ask for; larger N is served as this."""
    max_header_bytes: int = 16 * 1024
    """Request headers over this many bytes in all answer 431 (0 turns every header bound off)."""
    max_headers: int = 100
    """More request headers than this answer 431."""
    forwarded_allow_ips: str = ""
    """Comma-separated addresses (or ``*``) of proxies whose ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are
    believed. Empty: none; the client IP, which per-IP rate limits count, is always the TCP peer."""
    auth_failure_per_minute: int = 10
    """Failed authentications allowed per client IP and minute after the burst; 0 turns the throttle off."""
    auth_failure_burst: int = 10
    """Failed authentications an IP may make at once before it is answered 429 (any credential) for a while."""


@dataclasses.dataclass(frozen=True)
class MetricsSettings:
    """Prometheus ``/metrics`` of a dispatcher or of the operator (the API serves ``/metrics`` on its own port)."""

    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from other Pods
    metrics_port: int = 9090
    """Port of this process's ``/metrics``; 0: none."""


CLUSTER_DEFAULT_SHARDS: Final = 16
"""Queue shards on a Redis Cluster when ``QUEUE_SHARDS`` is not set: up to 16 primaries each get one."""
MAX_SHARDS: Final = 1024
"""The most queue shards a deployment may have (``QUEUE_SHARDS``, ``KEY_LAYOUT_BEFORE``)."""


@dataclasses.dataclass(frozen=True)
class RedisSettings:
    """Where job state and the queue live."""

    redis_url: str = "redis://localhost:6379"
    redis_password: str | None = None
    redis_db: int = 0
    redis_max_connections: int = 20
    """Per process; on a cluster, per node."""
    redis_cluster: bool = False
    """``REDIS_URL`` names any node of a Redis Cluster (Valkey cluster, ElastiCache cluster mode, Memorystore for
    Redis Cluster): every process uses redis-py's ``RedisCluster`` and sharded key names (README "Scaling")."""
    queue_shards: int = 0
    """How many queue shards the jobs are spread over (``aic.store.keys``); 0: 1 on one Redis, 16 on a cluster.
    Every process of a deployment must use the same value; changing it is a migration (README "Scaling")."""
    key_layout_before: str = ""
    """While migrating (README "Scaling"): the key layout the existing data was written in, ``standalone`` (one
    Redis, one shard: the seed's names), ``shards:<S>`` (one Redis, S shards) or ``cluster:<S>``. Processes then
    accept data in that layout, read a job not found under the new names under the old ones, and dispatchers keep
    taking the old layout's queued jobs. Empty: no migration. Remove it once the longest retention has passed."""

    def __post_init__(self) -> None:
        if not 0 <= self.queue_shards <= MAX_SHARDS:
            raise SettingsError(f"QUEUE_SHARDS must be 0 (the default) to {MAX_SHARDS}, got {self.queue_shards}")
        if self.redis_cluster and self.redis_db != 0:
            raise SettingsError("REDIS_DB must be 0 with REDIS_CLUSTER=true: a Redis Cluster has one database")
        before = self.layout_before
        if before is not None and before == (self.redis_cluster, self.shards):
            raise SettingsError(
                f"KEY_LAYOUT_BEFORE={self.key_layout_before} is the layout these settings use: unset it, or name "
                "the layout the data was written in before"
            )

    @property
    def layout_before(self) -> tuple[bool, int] | None:
        """``KEY_LAYOUT_BEFORE`` as (cluster, shards); None when unset."""
        return parse_layout(self.key_layout_before) if self.key_layout_before else None

    @property
    def shards(self) -> int:
        """The queue shards in effect."""
        return self.queue_shards or (CLUSTER_DEFAULT_SHARDS if self.redis_cluster else 1)


def parse_layout(raw: str) -> tuple[bool, int]:
    """A key layout's name, ``standalone``, ``shards:<S>`` or ``cluster:<S>`` (S from 1 to ``MAX_SHARDS``), as
    (cluster, shards); SettingsError for anything else."""
    name, _, count = raw.strip().partition(":")
    if name == "standalone" and not count:
        return False, 1
    if name in ("shards", "cluster") and re.fullmatch(r"[1-9][0-9]{0,3}", count) and int(count) <= MAX_SHARDS:
        return name == "cluster", int(count)
    raise SettingsError(
        f"KEY_LAYOUT_BEFORE must be standalone, shards:<S> or cluster:<S> (S from 1 to {MAX_SHARDS}), got {raw!r}"
    )


@dataclasses.dataclass(frozen=True)
class ObjectStoreSettings:
    """Where uploads live while their jobs need them (README "Uploads in an object store")."""

    object_store_url: str | None = None
    """``s3://bucket/prefix``, ``gs://bucket/prefix``, ``az://container/prefix`` or ``file:///path``: each upload is
    kept there as ``<prefix>/<tenant>/<job id>`` and its job keeps a reference. Unset: uploads stay in Redis.
    Credentials come from the store's own variables (``AWS_*`` incl. ``AWS_ENDPOINT_URL``, ``GOOGLE_*``,
    ``AZURE_*``) or workload identity."""
    object_store_timeout_s: float = 30.0
    """Bound of one request to the object store."""
    object_store_retry_timeout_s: float = 5.0
    """How long one call retries a failing store before it counts as unavailable (a submit then answers 503)."""
    max_upload_size: int = 50 * 1024 * 1024
    """Largest image a presigned direct upload may carry (``POST /uploads``; checked from a HEAD at submit)."""
    upload_url_ttl_s: float = 900.0
    """How long a presigned upload URL is valid; its upload id can be submitted for as long again."""
    object_store_browser_origin: str | None = None
    """Origin(s) browsers PUT presigned uploads to, for the page's ``connect-src`` (space-separated). Unset: derived
    from ``AWS_ENDPOINT_URL`` or the cloud's host names (README "Presigned direct uploads")."""
    upload_sweep_interval_s: float = 300.0
    """How often one dispatcher (of all) removes stray uploads: objects whose job no longer needs them."""
    upload_stray_age_s: float = 900.0
    """Only objects older than this are swept: younger ones may belong to a submit still creating its job."""


@dataclasses.dataclass(frozen=True)
class TritonSettings:
    """The Triton server(s) and the model repository they serve."""

    triton_url: str = "localhost:8001"
    """gRPC address (host:port) of Triton."""
    model_repository: Path = PROJECT_ROOT / "model_repository"
    triton_backends: tuple[str, ...] = ("python",)
    """Backends the target Triton has. The local wheel's server has only ``python``; the NGC image has
    ``onnxruntime`` (preferred for ONNX when listed) and ``tensorrt``."""
    triton_http_port: int = 8010
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    triton_timeout_s: float = 30.0


@dataclasses.dataclass(frozen=True)
class DispatcherSettings:
    """The dispatcher processes that move jobs from the queue through Triton."""

    batch_max_size: int = 16
    batch_max_wait_ms: int = 5
    lease_ms: int = 30_000
    """A job not renewed for this long is taken over by another dispatcher."""
    max_retries: int = 3
    """Retries of a Triton call that was slow or overloaded (seed section 6), ``triton_retry_*`` apart."""
    max_deliveries: int = 4
    """A job handed to dispatchers this many times without finishing (it kills or stalls them) fails and is
    dead-lettered."""
    triton_retry_base_s: float = 1.0
    """Delay before the first retry of a failed Triton call; each later one is ``triton_retry_factor`` longer."""
    triton_retry_factor: float = 2.0
    triton_retry_max_s: float = 10.0
    """Longest delay between two tries: also how often an unreachable Triton is tried again."""
    triton_retry_jitter: float = 0.2
    """Fraction of each delay drawn at random, so dispatchers that failed together do not retry together."""
    dispatcher_concurrency: int = 1
    """Batches in flight per dispatcher process. 1: where Triton shares the dispatcher's cores (``aic up``, one
    machine), one batch at a time is formed from everything queued meanwhile: batches of 16 instead of 11 at 32
    clients, and 8 % less CPU per job all told (Triton's included; bench/README.md). 2 (the chart's): a dispatcher
    in a Pod of its own decodes the next batch while Triton runs one."""
    preprocess_threads: int = 0
    """Threads decoding images; 0 means one per CPU core."""
    heartbeat_interval_s: int = 10
    triton_outage_timeout_s: float = 300.0
    """While Triton is unreachable jobs wait (backing off) this long, then fail with TIMEOUT."""
    shutdown_grace_s: float = 20.0
    """On SIGTERM in-flight batches get this long to finish; what is left is released to other dispatchers."""
    loop_stall_s: float = 15.0
    """``/livez`` fails once the event loop has been stuck this long (nothing it runs should block it for a second);
    ``/readyz`` fails with it."""
    deadline_sweep_interval_s: float = 5.0
    """How often a dispatcher fails the jobs whose deadline passed (queued or running) with TIMEOUT."""
    image_url_timeout_s: float = 20.0
    """Total time of one fetch of an image submitted by URL (``image_url``): resolution, connects, redirects, body."""
    image_url_allow_loopback: bool = False
    """Tests only: lets an image URL reach 127.0.0.0/8 and ::1. Every other internal address stays refused."""
    image_url_ca_bundle: Path | None = None
    """PEM file of the CAs image URL certificates must chain to; empty means the system trust store."""


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    """Admission control and job lifetimes, shared by the API replicas and the dispatchers."""

    queue_max_depth: int = 10_000
    """Jobs waiting or in flight across all priorities; above it submit answers 503 with Retry-After."""
    queue_full_retry_after_s: int = 5
    queue_ttl_s: int = 3600
    """The deadline of a job submitted without ``deadline_s`` or ``Cancel-After``: not finished this many seconds
    after its submit, it fails with TIMEOUT (the seed's 1 h a pending job lived)."""
    max_deadline_s: int = 86_400
    """The longest ``deadline_s`` (or ``Cancel-After``) a submit may ask for."""
    max_retention_s: int = 30 * 86_400
    """The longest ``retention_s`` a submit may ask for: how long a finished job stays readable (default 24 h)."""


@dataclasses.dataclass(frozen=True)
class WebhookSettings:
    """Signed webhooks to ``callback_url``: retry schedule, network limits and the secret rotation grace."""

    webhook_max_attempts: int = 5
    """Attempts per event before giving up (the first one included)."""
    webhook_backoff_base_s: float = 10.0
    """Delay after the first failed attempt; each later one is ``webhook_backoff_factor`` times longer
    (defaults: 10 s, 40 s, 160 s, 640 s capped to 600 s: about 13 minutes in all)."""
    webhook_backoff_factor: float = 4.0
    webhook_backoff_max_s: float = 600.0
    """Longest delay between two attempts, also the cap on a receiver's ``Retry-After``."""
    webhook_jitter: float = 0.2
    """Fraction of each delay drawn at random, so receivers that failed together are not retried together."""
    webhook_connect_timeout_s: float = 5.0
    webhook_timeout_s: float = 15.0
    """Total time of one attempt: name resolution, connect, TLS, request and the bounded read of the answer."""
    webhook_max_response_bytes: int = 4096
    webhook_concurrency: int = 4
    """Deliveries in flight per dispatcher process."""
    webhook_poll_ms: int = 500
    """How often the schedule is checked for retries that became due."""
    webhook_claim_idle_ms: int = 30_000
    """An outbox entry read but not moved into the schedule this long ago (a crashed reader) is taken over."""
    webhook_allow_loopback: bool = False
    """Tests only: lets a callback reach 127.0.0.0/8 and ::1. Every other internal address stays refused."""
    webhook_ca_bundle: Path | None = None
    """PEM file of the CAs callback certificates must chain to; empty means the system trust store."""
    webhook_secret_grace_s: float = 86_400.0
    """After a rotation, webhooks are signed with the new and the previous secret for this long."""
    webhook_secrets_key: str = ""
    """Seals tenants' signing secrets in Redis (AES-256-GCM); empty: derived from SECRET_KEY, and with neither
    set they are stored unsealed (a warning says so). Every API replica and dispatcher must share it."""
    webhook_secrets_key_previous: str = ""
    """The key before a rotation of WEBHOOK_SECRETS_KEY: secrets it sealed still open, and are sealed again."""
    secret_key: str = ""
    """SECRET_KEY (as the API reads it): the sealing key's fallback."""

    @property
    def sealing_key(self) -> str:
        return self.webhook_secrets_key or self.secret_key
