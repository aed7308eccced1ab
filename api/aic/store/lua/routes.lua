-- The one writer of model routes. Routes model ARGV[1] under exactly the aliases ARGV[5..] (an alias it no
-- longer lists stops routing to it), stores its spec, and keeps models:routes naming the heaviest model of every
-- alias, so the API's alias check and the dispatchers' weighted choice always agree.
-- ARGV[2], the requested weight (the ModelVersion's traffic.weight): '' keeps the model's requested weight
-- (DEFAULT_WEIGHT for a new model); -1 withdraws the model (and drops its requested weight and override).
-- ARGV[4], the override a progressive rollout sets (models:overrides): '' leaves it; 'clear' removes it;
-- 'init:N' sets N only where none is set; 'N' sets N. An override >= 0 is the weight published instead of
-- the requested one; -1 (kept, so 'init:' leaves it alone) publishes the requested weight.
-- KEYS: weights, routes, specs, requested, overrides. ARGV: model, weight, spec JSON (or ''), override, aliases...
local model, spec, override = ARGV[1], ARGV[3], ARGV[4]
local wanted = {}
for i = 5, #ARGV do wanted[ARGV[i]] = true end
local aliases = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do aliases[all[i]] = cjson.decode(all[i + 1]) end
local weight = tonumber(ARGV[2])
if ARGV[2] == '' then
  weight = tonumber(redis.call('HGET', KEYS[4], model) or '')
  if weight == nil then
    for _, weights in pairs(aliases) do
      if weights[model] ~= nil then weight = weights[model] end
    end
  end
  weight = weight or DEFAULT_WEIGHT
end
if weight >= 0 then
  redis.call('HSET', KEYS[4], model, weight)
  if override == 'clear' then
    redis.call('HDEL', KEYS[5], model)
  elseif string.sub(override, 1, 5) == 'init:' then
    redis.call('HSETNX', KEYS[5], model, string.sub(override, 6))
  elseif override ~= '' then
    redis.call('HSET', KEYS[5], model, override)
  end
  local forced = tonumber(redis.call('HGET', KEYS[5], model) or '')
  if forced ~= nil and forced >= 0 then weight = forced end
else
  redis.call('HDEL', KEYS[4], model)
  redis.call('HDEL', KEYS[5], model)
end
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
