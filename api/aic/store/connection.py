"""The process's Redis connection pool, built from settings, and what counts as Redis being away."""

from __future__ import annotations

from typing import Final

from opentelemetry.trace import Span
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aic.core import telemetry
from aic.core.settings import RedisSettings

POOL_WAIT_S = 10.0
"""How long a command waits for a free pooled connection. A plain pool fails at once when all
``REDIS_MAX_CONNECTIONS`` are busy: 32 simultaneous uploads gave 500s (bench/)."""

_Errors = tuple[type[BaseException], ...]
UNAVAILABLE: Final[_Errors] = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
"""Raised by any store call while Redis is unreachable: callers wait and retry, or answer 503."""
STORE_ERRORS: Final[_Errors] = (RedisError, OSError)
"""Anything a store call can fail with on the Redis side (unavailable, or a command refused)."""

PERSISTENCE: Final = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "save": "",
    "rdbcompression": "no",
    "auto-aof-rewrite-min-size": "512mb",
}
"""How a Redis of the product's own keeps its data (the chart's StatefulSet, ``aic up``'s Valkey, bench/): an
append-only file, no snapshots. Every upload passes through the file once (SET, then DEL when its job ends), so the
file grows by ~275 KB a job while the data stays small; Redis's default rewrite threshold (64 MB) rewrote it every
~240 jobs, each rewrite a fork that compressed the queued uploads with LZF: JPEG, PNG and WebP do not compress, so
compression is off and the file is rewritten every ~1,900 jobs instead (bench/README.md: 0.36 ms of CPU a job)."""


def server_args(settings: dict[str, str] = PERSISTENCE) -> list[str]:
    """``redis-server`` command-line options for the given settings."""
    return [part for name, value in settings.items() for part in (f"--{name}", value)]


def connect(settings: RedisSettings, *, blocking_reads: bool = False) -> Redis:
    """One client (and pool) per process; ``blocking_reads`` leaves room for XREADGROUP BLOCK. While the process
    exports traces, every command is a span (redis-py's instrumentation: statements without their arguments)."""
    if telemetry.enabled():
        instrument_redis()
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        timeout=POOL_WAIT_S,
        password=settings.redis_password,
        db=settings.redis_db,
        max_connections=settings.redis_max_connections,
        socket_timeout=None if blocking_reads else 30.0,
        socket_connect_timeout=5.0,
        health_check_interval=30,
        retry_on_timeout=True,
    )
    return Redis.from_pool(pool)


def instrument_redis() -> None:
    """Trace redis-py's commands and pipelines, once per process. Statements are sanitised (the command name and
    ``?`` for each argument: no keys, no uploads), and a pipeline is one span."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(response_hook=_name_batch)


def _name_batch(span: Span, instance: object, _response: object) -> None:
    """A pipeline's span is named after its commands, one name per batch size ('EVALSHA EVALSHA ...'); as the
    database conventions name a batch: ``BATCH`` and its distinct commands (a handful of names in all)."""
    if isinstance(instance, Pipeline) and span.is_recording():
        span.update_name("BATCH " + " ".join(dict.fromkeys(span.name.split())))  # type: ignore[attr-defined]


async def ping(redis: Redis) -> None:
    """Raise one of ``UNAVAILABLE`` (or another ``RedisError``) unless Redis answers."""
    await redis.ping()


class Probe:
    """Whether Redis answers, for health and readiness probes."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def ping(self) -> None:
        await ping(self.redis)
