"""The Lua scripts of the store (``lua/*.lua``), each called through a typed builder beside it.

A builder is a frozen dataclass naming the script's keys (``key()``) and arguments (``arg()``, a trailing variadic
``rest()``, or a repeated group ``each()`` of another builder-like dataclass); ``keys()`` and ``args()`` lay them
out, and the Lua text reads them by the same names: ``K.status``, ``A.group``, ``unpack(ARGV, REST)``,
``EACH`` (the count) and ``item(j)`` (the keys and arguments of the j-th repeated group, from 1). The positions are
generated from the builder, once, so a script and its caller cannot disagree about them (tests/unit checks every
name each script reads is declared, and every declared one is read).

Every script starts with ``#!lua``: Redis itself then refuses a key the script did not declare on a cluster, so a
cross-slot bug fails a test instead of working by accident on one node. A prelude of shared rules follows, generated
from ``aic.core`` (which statuses are live, the default webhook events and traffic weight) and from the deployment
(``PUBLISH`` is SPUBLISH on a cluster: sharded pub/sub). Only ``aic.store`` imports this module.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any, ClassVar, Final

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from aic.core.enums import LIVE_STATUSES
from aic.core.webhooks import DEFAULT_EVENTS
from aic.store.connection import keyspace

DEFAULT_WEIGHT: Final = 100
"""Traffic weight of a model published without one (the ModelVersion's ``traffic.weight`` default)."""

Value = str | bytes | int | float

_ROLE: Final = "role"


def key() -> Any:
    """A key the script touches (``K.<name>`` in Lua)."""
    return dataclasses.field(metadata={_ROLE: "key"})


def arg(default: Any = dataclasses.MISSING) -> Any:
    """An argument of the script (``A.<name>`` in Lua)."""
    return dataclasses.field(default=default, metadata={_ROLE: "arg"})


def rest() -> Any:
    """The trailing arguments (``unpack(ARGV, REST)`` in Lua): a flat sequence."""
    return dataclasses.field(default=(), metadata={_ROLE: "rest"})


def each() -> Any:
    """A repeated group of keys and arguments (a sequence of an ``Item`` dataclass): ``item(j)`` in Lua."""
    return dataclasses.field(default=(), metadata={_ROLE: "each"})


_FIELDS: dict[tuple[type, str], list[dataclasses.Field[Any]]] = {}


def _fields(cls: type, role: str) -> list[dataclasses.Field[Any]]:
    """A builder's fields of one role, in order (worked out once per class: every script call lays them out)."""
    found = _FIELDS.get((cls, role))
    if found is None:
        found = _FIELDS[(cls, role)] = [f for f in dataclasses.fields(cls) if f.metadata.get(_ROLE) == role]
    return found


@dataclasses.dataclass(frozen=True, kw_only=True)
class Item:
    """One repeated group of a script's keys and arguments (its fields: ``key()`` and ``arg()``)."""


CALLS: list[type[Call]] = []
"""Every script's builder (each registers itself): what a server that lost its scripts is given again."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Call:
    """A call of one script: subclasses name ``SCRIPT`` (``lua/<SCRIPT>.lua``) and declare its fields."""

    SCRIPT: ClassVar[str]
    ITEM: ClassVar[type[Item] | None] = None
    """The dataclass of an ``each()`` field's items."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        CALLS.append(cls)

    def keys(self) -> list[str]:
        found = [getattr(self, f.name) for f in _fields(type(self), "key")]
        item_type = type(self).ITEM
        if item_type is not None:
            for item in self._items():
                found += [getattr(item, f.name) for f in _fields(item_type, "key")]
        return found

    def args(self) -> list[Value]:
        found: list[Value] = [getattr(self, f.name) for f in _fields(type(self), "arg")]
        item_type = type(self).ITEM
        if item_type is not None:
            found.append(len(self._items()))
            for item in self._items():
                found += [getattr(item, f.name) for f in _fields(item_type, "arg")]
        for f in _fields(type(self), "rest"):
            found += list(getattr(self, f.name))
        return found

    def _items(self) -> Sequence[Item]:
        groups = _fields(type(self), "each")
        return tuple(getattr(self, groups[0].name)) if groups else ()

    @classmethod
    def header(cls) -> str:
        """The Lua lines naming this script's keys and arguments."""
        keys = _fields(cls, "key")
        args = _fields(cls, "arg")
        lines = ["local K = {" + ", ".join(f"{f.name} = KEYS[{i}]" for i, f in enumerate(keys, 1)) + "}"]
        lines.append("local A = {" + ", ".join(f"{f.name} = ARGV[{i}]" for i, f in enumerate(args, 1)) + "}")
        after = len(args) + 1
        if cls.ITEM is not None:
            item_keys, item_args = _fields(cls.ITEM, "key"), _fields(cls.ITEM, "arg")
            lines.append(f"local EACH = tonumber(ARGV[{after}])")
            k0, a0 = len(keys), after
            key_parts = ", ".join(
                f"{f.name} = KEYS[{k0} + {len(item_keys)} * (j - 1) + {i}]" for i, f in enumerate(item_keys, 1)
            )
            arg_parts = ", ".join(
                f"{f.name} = ARGV[{a0} + {len(item_args)} * (j - 1) + {i}]" for i, f in enumerate(item_args, 1)
            )
            lines.append(f"local function item(j) return {{{key_parts}}}, {{{arg_parts}}} end")
            lines.append(f"local REST = {a0} + {len(item_args)} * EACH + 1")
        else:
            lines.append("local EACH = 0")
            lines.append(f"local REST = {after}")
        return "\n".join(lines) + "\n"


def _prelude(cluster: bool) -> str:
    live = ", ".join(f"[{str(status)!r}] = true" for status in sorted(LIVE_STATUSES))
    return f"""local LIVE = {{{live}}}
local DEFAULT_EVENTS = {",".join(DEFAULT_EVENTS)!r}
local DEFAULT_WEIGHT = {DEFAULT_WEIGHT}
local PUBLISH = {"'SPUBLISH'" if cluster else "'PUBLISH'"}
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
-- channel of that process's event hub the job was created with (its 'waiter': on a cluster the hub's inbox of the
-- job's shard, in the job's slot), declared as K.waiter; K.events stands in for a job nobody waits for.
local function notify_waiter(K)
  if K.waiter ~= K.events then redis.call(PUBLISH, K.waiter, redis.call('HGET', K.status, 'job_id')) end
end
-- Ends a live job that gets no result (cancelled, timed out): its status and metadata kept for its retention, its
-- upload dropped, the event published, the waiting submit told, the webhook queued.
local function end_job(K, default_ttl, event, webhook_event)
  local ttl = retention_of(K.status, default_ttl)
  redis.call('EXPIRE', K.status, ttl)
  redis.call('EXPIRE', K.metadata, ttl)
  redis.call('DEL', K.image)
  redis.call(PUBLISH, K.events, event)
  notify_waiter(K)
  queue_webhook(K.status, K.outbox, webhook_event)
end
"""


@functools.cache
def text(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()


def source(call: type[Call], cluster: bool) -> str:
    """The whole script a call runs: the shebang, the prelude, its names and ``lua/<SCRIPT>.lua``."""
    return _built(call.SCRIPT, cluster)[0]


def sha(call: type[Call], cluster: bool) -> str:
    return _built(call.SCRIPT, cluster)[1]


@functools.cache
def _built(script: str, cluster: bool) -> tuple[str, str]:
    [call] = [call for call in CALLS if script == call.SCRIPT]
    body = "#!lua\n" + _prelude(cluster) + call.header() + text(script)
    return body, hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()  # Redis names scripts by SHA-1


def queue(redis: Redis, pipe: Any, call: Call) -> None:
    """Add ``call`` to ``pipe`` (by SHA; ``execute`` loads what the server lacks)."""
    keys = call.keys()
    pipe.evalsha(sha(type(call), keyspace(redis).cluster), len(keys), *keys, *call.args())


async def run(redis: Redis, call: Call) -> Any:
    """Run one call; a server that lost its scripts (a restart, a failover) gets it loaded and runs it again."""
    cluster = keyspace(redis).cluster
    keys = call.keys()
    try:
        return await redis.evalsha(sha(type(call), cluster), len(keys), *keys, *call.args())
    except NoScriptError:
        await _load(redis, [type(call)])
        return await redis.evalsha(sha(type(call), cluster), len(keys), *keys, *call.args())


async def execute(redis: Redis, pipe: Any, *, transaction: bool = False) -> list[Any]:
    """``pipe.execute()`` for a pipeline holding script calls (``queue``): the scripts go by SHA, with no SCRIPT
    EXISTS round trip before (a third of a submit's Redis time in the API, bench/), and the calls Redis answers
    NOSCRIPT (it restarted or failed over and lost them) are made again once the scripts are loaded. A call refused
    with NOSCRIPT did nothing, so making it again is exact; a transaction refused with NOSCRIPT ran nothing, and
    runs again whole. Raises the first error, as ``execute`` does. ``transaction``: how ``pipe`` was made."""
    commands = _commands(pipe)
    try:
        replies: list[Any] = list(await pipe.execute(raise_on_error=False))
    except NoScriptError:  # a transaction refused before anything in it ran
        await _load(redis, CALLS)
        async with redis.pipeline(transaction=True) as again:
            _replay(again, commands)
            return list(await again.execute())
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        if transaction:  # nothing ran: run it all again
            await _load(redis, CALLS)
            async with redis.pipeline(transaction=True) as again:
                _replay(again, commands)
                return list(await again.execute())
        await _load(redis, CALLS)
        async with redis.pipeline(transaction=False) as again:
            _replay(again, [commands[i] for i in missing])
            for i, reply in zip(missing, await again.execute(raise_on_error=False), strict=True):
                replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _commands(pipe: Any) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The queued commands of a plain or a cluster pipeline, as (args, options)."""
    stack = getattr(pipe, "command_stack", None)
    if stack is not None:
        return [(tuple(args), dict(options)) for args, options in stack]
    queue_ = pipe._execution_strategy._command_queue  # redis-py's ClusterPipeline
    return [(tuple(command.args), dict(command.kwargs)) for command in queue_]


def _replay(pipe: Any, commands: Iterable[tuple[tuple[Any, ...], dict[str, Any]]]) -> None:
    for args, options in commands:
        pipe.execute_command(*args, **options)


async def _load(redis: Redis, calls: Iterable[type[Call]]) -> None:
    cluster = keyspace(redis).cluster
    for call in calls:
        await redis.script_load(source(call, cluster))  # on a cluster: every primary
