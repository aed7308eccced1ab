"""The typed script builders round-trip: what a builder names a key or an argument is what its script reads under
that name (on a real Redis, through the very header the scripts are built with), and every name a script reads is
declared by its builder and every declared one is read."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from aic.store import calls, ratelimit, routes, scripts, webhooks
from aic.store.scripts import CALLS, Call, Item
from redis.asyncio import Redis
from stack import RunningRedis

MODULES = (calls, ratelimit, routes, webhooks)  # importing them registers every builder


def _roles(cls: type) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"key": [], "arg": [], "rest": [], "each": []}
    for f in dataclasses.fields(cls):
        found[f.metadata["role"]].append(f.name)
    return found


def _sample(cls: type[Call] | type[Item], tag: str, count: int = 2) -> Any:
    """An instance whose every key and argument is a distinct value naming itself."""
    roles = _roles(cls)
    values: dict[str, Any] = {name: f"{{{tag}}}:{name}" for name in roles["key"]}
    values |= {name: f"arg:{name}" for name in roles["arg"]}
    values |= {name: (f"rest:{name}:1", f"rest:{name}:2") for name in roles["rest"]}
    for name in roles["each"]:
        item = cls.ITEM  # type: ignore[union-attr]
        values[name] = tuple(_sample(item, f"{tag}", 0) for _ in range(count))
    return cls(**values)


@pytest.fixture(scope="module")
def redis(own_redis: RunningRedis) -> Iterator[Redis]:
    yield Redis.from_url(own_redis.url)


def test_every_script_has_a_builder_and_starts_with_a_shebang() -> None:
    assert {call.SCRIPT for call in CALLS} == {
        "create", "finish", "advance", "cancel", "timeout", "purge", "retry", "routes", "ratelimit",
        "webhook_enqueue", "webhook_claim", "webhook_record", "webhook_rotate", "webhook_reseal",
    }  # fmt: skip
    for call in CALLS:
        assert scripts.source(call, cluster=True).startswith("#!lua\n")
        assert "SPUBLISH" in scripts.source(call, cluster=True)
        assert "'SPUBLISH'" not in scripts.source(call, cluster=False)


@pytest.mark.parametrize("call", CALLS, ids=lambda call: call.SCRIPT)
def test_a_script_reads_exactly_the_names_its_builder_declares(call: type[Call]) -> None:
    text = re.sub(r"--[^\n]*", "", scripts.text(call.SCRIPT))
    roles = _roles(call)
    read_keys = set(re.findall(r"\bK\.(\w+)", text))
    if "notify_waiter(K)" in text:  # the prelude's helpers read these of the K they are given
        read_keys |= {"status", "waiter", "events"}
    if "end_job(K" in text:
        read_keys |= {"status", "metadata", "image", "events", "waiter", "outbox"}
    read_args = set(re.findall(r"\bA\.(\w+)", text))
    assert read_keys == set(roles["key"]), "keys read vs declared"
    assert read_args == set(roles["arg"]), "arguments read vs declared"
    assert ("REST" in text) == bool(roles["rest"]), "the trailing arguments are read iff declared"
    if call.ITEM is not None:
        item = _roles(call.ITEM)
        item_names = set(re.findall(r"\b(?:J|JA|item\(j\))\.(\w+)", text))
        assert item_names == set(item["key"]) | set(item["arg"]), "an item's names read vs declared"


@pytest.mark.parametrize("call", CALLS, ids=lambda call: call.SCRIPT)
async def test_a_builder_round_trips_through_its_header_on_redis(redis: Redis, call: type[Call]) -> None:
    """The header a script runs with maps each declared name to the value the builder put there."""
    sample = _sample(call, "t")
    probe = (
        "local out = {K = K, A = A, rest = {unpack(ARGV, REST)}, items = {}}\n"
        "for j = 1, EACH do local k, a = item(j); out.items[j] = {k = k, a = a} end\n"
        "return cjson.encode(out)\n"
    )
    keys, args = sample.keys(), sample.args()
    answer = json.loads(await redis.eval("#!lua\n" + call.header() + probe, len(keys), *keys, *args))  # type: ignore[misc]
    roles = _roles(call)
    assert answer["K"] == {name: getattr(sample, name) for name in roles["key"]}
    assert answer["A"] == {name: str(getattr(sample, name)) for name in roles["arg"]}
    assert (answer["rest"] or []) == [str(v) for name in roles["rest"] for v in getattr(sample, name)]
    if call.ITEM is not None:  # (an empty Lua table encodes as {})
        item_roles = _roles(call.ITEM)
        [group] = roles["each"]
        assert answer["items"] == [
            {
                "k": {name: getattr(item, name) for name in item_roles["key"]},
                "a": {name: str(getattr(item, name)) for name in item_roles["arg"]},
            }
            for item in getattr(sample, group)
        ]
