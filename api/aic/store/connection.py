"""The process's Redis connection pool, built from settings, and the store's one boundary for failures: redis-py's
and obstore's exceptions become ``StoreUnavailable`` / ``StoreError`` (``aic.core.errors``) as they leave the store."""

from __future__ import annotations

import contextlib
import functools
import inspect
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final, TypeVar, cast

from obstore.exceptions import BaseError as ObjectStoreError
from opentelemetry.trace import Span
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    CrossSlotTransactionError,
    InvalidPipelineStack,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aic.core import telemetry
from aic.core.errors import StoreError, StoreUnavailable
from aic.core.settings import RedisSettings
from aic.store.keys import LEGACY, Keyspace

T = TypeVar("T")

POOL_WAIT_S = 10.0
"""How long a command waits for a free pooled connection. A plain pool fails at once when all
``REDIS_MAX_CONNECTIONS`` are busy: 32 simultaneous uploads gave 500s (bench/)."""

_Errors = tuple[type[BaseException], ...]
CLUSTER_BUGS: Final[_Errors] = (CrossSlotTransactionError, InvalidPipelineStack)
"""What ``RedisCluster`` raises for a misuse (a transaction over two slots): a ``StoreError``, never retried."""
UNAVAILABLE: Final[_Errors] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    ObjectStoreError,
    # A Redis Cluster mid-failover, once redis-py's own retries (``connect``) are spent: CLUSTERDOWN / MASTERDOWN,
    # TRYAGAIN, MOVED / ASK still pointing at a node being replaced were plain ``StoreError``s (a 503 from the API,
    # but not the ``StoreUnavailable`` a dispatcher's loops wait out: one ended the loop), and the client-side errors
    # that are not RedisErrors at all (``SlotNotCoveredError``, "All slots are not covered", "Redis Cluster cannot
    # be connected") escaped the boundary: a 500 with a traceback from the API.
    ClusterDownError,
    TryAgainError,
    AskError,
    RedisClusterException,
)
"""What redis-py and obstore raise while Redis or the object store is unreachable: ``StoreUnavailable`` outside
(the object store's "not found" is an answer, handled inside ``aic.store.objects``)."""
STORE_ERRORS: Final[_Errors] = (RedisError, OSError, ObjectStoreError, *CLUSTER_BUGS)
"""Anything a store call can fail with on the Redis or object-store side: ``StoreError`` outside."""


@contextlib.contextmanager
def boundary() -> Iterator[None]:
    """Translate redis-py's and obstore's exceptions into the store's own, the cause chained (as httpx maps
    httpcore's errors): callers outside ``aic.store`` never name a client library's exception."""
    try:
        yield
    except CLUSTER_BUGS as exc:
        raise StoreError(f"A store call failed ({type(exc).__name__})") from exc
    except UNAVAILABLE as exc:
        raise StoreUnavailable(f"A dependency is unavailable; retry later ({type(exc).__name__})") from exc
    except STORE_ERRORS as exc:
        raise StoreError(f"A store call failed; retry later ({type(exc).__name__})") from exc


def guarded(cls: type[T]) -> type[T]:
    """Put every public coroutine and async-generator method of a store class behind ``boundary()``."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and callable(member):
            setattr(cls, name, guard(member))
    return cls


def guard(function: Callable[..., Any]) -> Any:
    """``function`` (a coroutine or async-generator function; anything else is returned as it is) behind
    ``boundary()``."""
    if inspect.isasyncgenfunction(function):

        @functools.wraps(function)
        async def generator(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            with boundary():
                async for item in function(*args, **kwargs):
                    yield item

        return generator
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def coroutine(*args: Any, **kwargs: Any) -> Any:
            with boundary():
                return await function(*args, **kwargs)

        return coroutine
    return function


PERSISTENCE: Final = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "save": "",
    "rdbcompression": "no",
    "auto-aof-rewrite-min-size": "512mb",
    "hash-max-listpack-value": "128",
}
"""How a Redis of the product's own keeps its data (the chart's StatefulSet, ``aic up``'s Valkey, bench/): an
append-only file, no snapshots. Every upload passes through the file once (SET, then DEL when its job ends), so the
file grows by ~275 KB a job while the data stays small; Redis's default rewrite threshold (64 MB) rewrote it every
~240 jobs, each rewrite a fork that compressed the queued uploads with LZF: JPEG, PNG and WebP do not compress, so
compression is off and the file is rewritten every ~1,900 jobs instead (bench/README.md: 0.36 ms of CPU a job).
A job's status hash holds one field over Redis's 64-byte listpack limit (``image_metadata``), which made every record a
hash table of ~1,800 B; at 128 bytes it is a listpack of ~744 B (bench/objectstore.py: 2,660 -> 1,430 B per queued job
with uploads in an object store)."""


def server_args(settings: dict[str, str] = PERSISTENCE) -> list[str]:
    """``redis-server`` command-line options for the given settings."""
    return [part for name, value in settings.items() for part in (f"--{name}", value)]


class _Cluster(RedisCluster):
    """redis-py's ``RedisCluster``, which finds the slot of XREADGROUP / XREAD itself: redis-py asks a node
    ``COMMAND GETKEYS`` before each (their keys follow the ``STREAMS`` keyword, a key spec it does not read), one
    more round trip per read, always to the same node (bench/store_scale.py: 7.8 a job on it)."""

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if str(command).upper() in _STREAM_READS and b"STREAMS" in args:  # how redis-py's xread(group) spells it
            at = args.index(b"STREAMS") + 1
            slots = {self.keyslot(stream) for stream in args[at : at + (len(args) - at) // 2]}
            if len(slots) == 1:
                return slots.pop()
        return await super()._determine_slot(command, *args)


_STREAM_READS: Final = frozenset({"XREADGROUP", "XREAD"})


def connect(settings: RedisSettings, *, blocking_reads: bool = False) -> Redis:
    """One client (and pool) per process; ``blocking_reads`` leaves room for XREADGROUP BLOCK. While the process
    exports traces, every command is a span (redis-py's instrumentation: statements without their arguments).

    With ``REDIS_CLUSTER`` the client is redis-py's ``RedisCluster`` (``REDIS_URL`` names any node; it learns the
    others and follows MOVED/ASK and failovers). Its commands are the same as ``Redis``'s, so the store is typed
    against ``Redis``; the two places that differ (transactions, pub/sub) ask ``is_cluster``. The client is bound to
    the deployment's ``Keyspace`` (``keyspace``), which every store reads its key names from."""
    if telemetry.enabled():
        instrument_redis()
    layout = Keyspace(shards=settings.shards, cluster=settings.redis_cluster)
    before = settings.layout_before
    previous = Keyspace(shards=before[1], cluster=before[0]) if before is not None else None
    if settings.redis_cluster:
        cluster = _Cluster.from_url(
            settings.redis_url,
            password=settings.redis_password,
            max_connections=settings.redis_max_connections,
            socket_timeout=None if blocking_reads else 30.0,
            socket_connect_timeout=5.0,
            health_check_interval=30,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=12),  # rides out a failover (~2-5 s)
        )
        return bind(cast(Redis, cluster), layout, previous)
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
    return bind(Redis.from_pool(pool), layout, previous)


_KEYSPACES: weakref.WeakKeyDictionary[object, Keyspace] = weakref.WeakKeyDictionary()
_PREVIOUS: weakref.WeakKeyDictionary[object, Keyspace] = weakref.WeakKeyDictionary()


def bind(redis: Redis, layout: Keyspace, previous: Keyspace | None = None) -> Redis:
    """Record that ``redis`` serves a deployment laid out as ``layout`` (migrating from ``previous``, the layout
    named by ``KEY_LAYOUT_BEFORE``); returns ``redis``."""
    _KEYSPACES[redis] = layout
    if previous is not None and previous != layout:
        _PREVIOUS[redis] = previous
    else:
        _PREVIOUS.pop(redis, None)
    return redis


def keyspace(redis: Redis) -> Keyspace:
    """The key names of the deployment ``redis`` serves (the seed's, for a client nobody bound)."""
    return _KEYSPACES.get(redis, LEGACY)


def previous_keyspace(redis: Redis) -> Keyspace | None:
    """While migrating (``KEY_LAYOUT_BEFORE``): the key names the existing data was written in; else None."""
    return _PREVIOUS.get(redis)


def keyspaces(redis: Redis) -> tuple[Keyspace, ...]:
    """The key names to look a job up under, in order: the deployment's, then while migrating the previous ones."""
    previous = _PREVIOUS.get(redis)
    return (keyspace(redis),) if previous is None else (keyspace(redis), previous)


def is_cluster(redis: Redis) -> bool:
    return isinstance(redis, RedisCluster)


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


@guard
async def ping(redis: Redis) -> None:
    """Raise ``StoreUnavailable`` (or another ``StoreError``) unless Redis answers."""
    await redis.ping()


@guarded
class Probe:
    """Whether Redis answers, for health and readiness probes."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def ping(self) -> None:
        await ping(self.redis)
