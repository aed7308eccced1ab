"""The layout guard: every process of a deployment must name its keys alike (``aic.store.keys.Keyspace``: cluster or
not, how many queue shards), or it writes jobs nobody reads and misses the ones that exist. The layout the data was
written in is kept in ``LAYOUT_KEY``; a process whose layout differs refuses to start unless ``KEY_LAYOUT_BEFORE``
says it is migrating from exactly that layout (README "Scaling": "Migrating").
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from typing import Final

from redis.asyncio import Redis

from aic.core.errors import StoreUnavailable
from aic.core.settings import RedisSettings, SettingsError
from aic.store.connection import boundary, connect, keyspace, previous_keyspace
from aic.store.keys import LAYOUT_KEY, LEGACY, Keyspace, layout_marker

log = logging.getLogger("aic.store")

WAIT_STEP_S: Final = 1.0
"""How often a process starting while Redis is away tries the check again."""


class LayoutMismatch(SettingsError):
    """The data in Redis was written in another key layout than this process's settings name."""


def layout_name(names: Keyspace) -> str:
    """The layout as ``KEY_LAYOUT_BEFORE`` names it: ``standalone``, ``shards:<S>`` or ``cluster:<S>``."""
    if names.cluster:
        return f"cluster:{names.shards}"
    return "standalone" if names.shards == 1 else f"shards:{names.shards}"


def _stored(raw: bytes | str) -> Keyspace:
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        described = json.loads(text)
        return Keyspace(shards=int(described["shards"]), cluster=bool(described["cluster"]))
    except (ValueError, KeyError, TypeError):
        raise SettingsError(f"{LAYOUT_KEY} holds {text!r}, not a key layout this version knows") from None


def _mismatch(stored: Keyspace, current: Keyspace) -> LayoutMismatch:
    before, now = layout_name(stored), layout_name(current)
    return LayoutMismatch(
        f"Redis holds data in key layout {before} but this process is set up for {now} (REDIS_CLUSTER, "
        f"QUEUE_SHARDS): start it with the deployment's settings, or set KEY_LAYOUT_BEFORE={before} to migrate "
        f'(README "Scaling")'
    )


async def _legacy_data(redis: Redis) -> bool:
    """Whether the seed's shared keys exist: an install older than ``LAYOUT_KEY`` wrote its data in ``LEGACY``."""
    names = [*LEGACY.queues(0), LEGACY.dead_letter_stream(0), LEGACY.webhook_outbox(0)]
    return bool(await redis.exists(*names))


async def check_once(redis: Redis) -> Keyspace:
    """Check (and where absent, record) the deployment's layout; returns the layout the data was in. Raises
    ``LayoutMismatch`` when this process would name keys differently from the data, StoreError while Redis is away.

    Absent: the first process of a deployment, or an install older than the marker (whose data is ``LEGACY``:
    another layout then refuses unless migrating). Equal: fine. The layout of ``KEY_LAYOUT_BEFORE``: the marker is
    rewritten to this process's layout (every migrating process writes the same value, so no compare-and-set)."""
    current, previous = keyspace(redis), previous_keyspace(redis)
    with boundary():
        raw = await redis.get(LAYOUT_KEY)
        if raw is None:
            if current != LEGACY and previous is None and await _legacy_data(redis):
                raise _mismatch(LEGACY, current)
            if await redis.set(LAYOUT_KEY, layout_marker(current), nx=True):
                return previous or current
            raw = await redis.get(LAYOUT_KEY)  # a peer starting beside us wrote it first
            if raw is None:
                return await check_once(redis)
        stored = _stored(raw)
        if stored == current:
            return current
        if stored == previous:
            await redis.set(LAYOUT_KEY, layout_marker(current))
            log.warning(
                "key layout: migrating from %s to %s (KEY_LAYOUT_BEFORE); remove the setting once the longest "
                "retention has passed",
                layout_name(stored),
                layout_name(current),
            )
            return stored
    raise _mismatch(stored, current)


async def check(redis: Redis) -> Keyspace:
    """``check_once``, waiting for Redis as long as it does not answer (a process may start before its Redis)."""
    while True:
        try:
            return await check_once(redis)
        except StoreUnavailable as exc:
            log.warning("waiting for redis to check the key layout: %s", exc)
            await asyncio.sleep(WAIT_STEP_S)


async def check_settings(settings: RedisSettings) -> None:
    """The check on a client of its own, for a command to run before it starts its work (``aic api``): once; while
    Redis does not answer the process starts anyway (unready) and ``watch`` checks once Redis is there."""
    redis = connect(settings)
    try:
        await check_once(redis)
    except StoreUnavailable as exc:
        log.warning("key layout not checked yet, redis is away: %s", exc)
    finally:
        await redis.aclose()


async def watch(redis: Redis) -> None:
    """``check`` for a process already serving: a layout refused once Redis answers stops the process (SIGTERM
    to itself, after the one-line error), as if it had been refused at its start."""
    try:
        await check(redis)
    except LayoutMismatch as exc:
        log.critical("%s", exc)
        os.kill(os.getpid(), signal.SIGTERM)
