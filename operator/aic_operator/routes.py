"""Publishing routes: alias -> weighted Triton models, and each model's spec, where API and dispatchers read.

``models:weights`` holds per alias a JSON object {triton model: traffic weight}; ``models:routes`` keeps
the heaviest model per alias for readers that take one (the API's model_version check). Both change in
one Lua script, so ModelVersions sharing an alias never lose each other's entries.
"""

from __future__ import annotations

from aic import keys, modelspec
from aic.modelspec import ModelSpec
from redis.asyncio import Redis

# KEYS: weights, routes, specs. ARGV: model, weight (-1 removes the model), spec JSON (or ""), aliases...
_SET_ROUTES = """
local model, weight, spec = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end
local aliases = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do aliases[all[i]] = cjson.decode(all[i + 1]) end
for alias, _ in pairs(wanted) do
  if aliases[alias] == nil then aliases[alias] = {} end
end
if weight >= 0 and spec ~= '' then redis.call('HSET', KEYS[3], model, spec) end
for alias, weights in pairs(aliases) do
  if wanted[alias] and weight >= 0 then weights[model] = weight else weights[model] = nil end
  local best, best_weight = nil, -1
  for name, w in pairs(weights) do
    if w > best_weight or (w == best_weight and name < best) then best, best_weight = name, w end
  end
  if best == nil then
    redis.call('HDEL', KEYS[1], alias)
    redis.call('HDEL', KEYS[2], alias)
  else
    redis.call('HSET', KEYS[1], alias, cjson.encode(weights))
    redis.call('HSET', KEYS[2], alias, best)
  end
end
if weight < 0 then redis.call('HDEL', KEYS[3], model) end
return 1
"""


async def publish(redis: Redis, spec: ModelSpec, weight: int) -> None:
    """Route every alias of ``spec`` to it with ``weight``; aliases it no longer has stop routing to it."""
    await redis.eval(_SET_ROUTES, 3, *_KEYS, spec.name, str(weight), modelspec.encode(spec), *spec.aliases)


async def withdraw(redis: Redis, name: str) -> None:
    """Remove model ``name`` from every alias and drop its spec."""
    await redis.eval(_SET_ROUTES, 3, *_KEYS, name, "-1", "")


_KEYS = (keys.MODEL_WEIGHTS, keys.MODEL_ROUTES, keys.MODEL_SPECS)
