"""The Lua scripts of the store (``lua/*.lua``), each loaded once with a prelude of shared rules.

The prelude is generated from ``aic.core``: which statuses are live, the default webhook events and the default
traffic weight are written once, in Python, and every script reads them from there. Only ``aic.store`` imports
this module.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import resources
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript, Script
from redis.exceptions import NoScriptError

from aic.core.enums import LIVE_STATUSES
from aic.core.webhooks import DEFAULT_EVENTS

DEFAULT_WEIGHT: Final = 100
"""Traffic weight of a model published without one (the ModelVersion's ``traffic.weight`` default)."""


def _prelude() -> str:
    live = ", ".join(f"[{str(status)!r}] = true" for status in sorted(LIVE_STATUSES))
    return f"""local LIVE = {{{live}}}
local DEFAULT_EVENTS = {",".join(DEFAULT_EVENTS)!r}
local DEFAULT_WEIGHT = {DEFAULT_WEIGHT}
-- Queues event ARGV for the job's webhook when it has a callback_url and asked for the event.
local function queue_webhook(status_key, outbox, event)
  if (redis.call('HGET', status_key, 'callback_url') or '') == '' then return end
  local events = redis.call('HGET', status_key, 'webhook_events') or ''
  if events == '' then events = DEFAULT_EVENTS end
  if string.find(',' .. events .. ',', ',' .. event .. ',', 1, true) then
    redis.call('XADD', outbox, '*', 'job_id', redis.call('HGET', status_key, 'job_id'), 'event', event)
  end
end
-- The ttl of an ended job: its own retention_s when it asked for one, else the default.
local function retention_of(status_key, default)
  local own = tonumber(redis.call('HGET', status_key, 'retention_s') or '')
  if own and own > 0 then return own end
  return tonumber(default)
end
-- Tells the API process waiting for the job (a submit with Prefer: wait) that it ended: the job id, on the inbox
-- channel of that process's event hub that the job was created with ('waiter'), so the waiting submit needs no
-- subscription of its own.
local function notify_waiter(status_key)
  local inbox = redis.call('HGET', status_key, 'waiter')
  if inbox and inbox ~= '' then redis.call('PUBLISH', inbox, redis.call('HGET', status_key, 'job_id')) end
end
"""


@functools.cache
def source(name: str) -> str:
    """The prelude and the text of ``lua/<name>.lua``."""
    return _prelude() + resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()


def register(redis: Redis, name: str) -> AsyncScript:
    """The script ``name`` bound to ``redis``: run by its SHA, loaded again by redis-py if the server lost it."""
    return redis.register_script(source(name))


async def execute(redis: Redis, pipe: Pipeline) -> list[Any]:
    """``pipe.execute()`` without the SCRIPT EXISTS round trip redis-py makes before every pipeline that calls a
    script (a third of a submit's Redis time in the API, bench/): the scripts go by SHA, and the calls Redis
    answers NOSCRIPT (it restarted and lost them) are made again once the scripts are loaded. A call refused
    with NOSCRIPT did nothing, so making it again is exact. Raises the first error, as ``execute`` does."""
    scripts = list(pipe.scripts)
    pipe.scripts.clear()
    commands = list(pipe.command_stack)
    try:
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    except NoScriptError:  # a transaction refused before anything in it ran
        await _load(redis, scripts)
        async with redis.pipeline(transaction=True) as again:
            again.command_stack.extend(commands)
            return list(await again.execute())
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        await _load(redis, scripts)
        async with redis.pipeline(transaction=False) as again:
            again.command_stack.extend(commands[i] for i in missing)
            for i, reply in zip(missing, await again.execute(raise_on_error=False), strict=True):
                replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


async def _load(redis: Redis, scripts: Iterable[Script | AsyncScript]) -> None:
    for script in scripts:
        await redis.script_load(script.script)
