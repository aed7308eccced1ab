"""The process's Redis connection pool, built from settings."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from aic.settings import RedisSettings

POOL_WAIT_S = 10.0
"""How long a command waits for a free pooled connection. A plain pool fails at once when all
``REDIS_MAX_CONNECTIONS`` are busy: 32 simultaneous uploads gave 500s (bench/)."""


def connect(settings: RedisSettings, *, blocking_reads: bool = False) -> Redis:
    """One client (and pool) per process; ``blocking_reads`` leaves room for XREADGROUP BLOCK."""
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
