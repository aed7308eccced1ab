"""The process's Redis connection pool, built from settings."""

from __future__ import annotations

from redis.asyncio import Redis

from aic.settings import RedisSettings


def connect(settings: RedisSettings, *, blocking_reads: bool = False) -> Redis:
    """One client (and pool) per process; ``blocking_reads`` leaves room for XREADGROUP BLOCK."""
    return Redis.from_url(
        settings.redis_url,
        password=settings.redis_password,
        db=settings.redis_db,
        max_connections=settings.redis_max_connections,
        socket_timeout=None if blocking_reads else 30.0,
        socket_connect_timeout=5.0,
        health_check_interval=30,
        retry_on_timeout=True,
    )
