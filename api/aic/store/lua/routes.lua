-- The one writer of model routes. Routes model A.model under exactly the aliases REST.. (an alias it no longer
-- lists stops routing to it), stores its spec, and keeps the routes naming the heaviest model of every alias, so the
-- API's alias check and the dispatchers' weighted choice always agree.
-- A.weight, the requested weight (the ModelVersion's traffic.weight): '' keeps the model's requested weight
-- (DEFAULT_WEIGHT for a new model); -1 withdraws the model (and drops its requested weight and override).
-- A.override, the override a progressive rollout sets (K.overrides): '' leaves it; 'clear' removes it;
-- 'init:N' sets N only where none is set; 'N' sets N. An override >= 0 is the weight published instead of
-- the requested one; -1 (kept, so 'init:' leaves it alone) publishes the requested weight.
local model, spec, override = A.model, A.spec, A.override
local wanted = {}
for i = REST, #ARGV do wanted[ARGV[i]] = true end
local aliases = {}
local all = redis.call('HGETALL', K.weights)
for i = 1, #all, 2 do aliases[all[i]] = cjson.decode(all[i + 1]) end
local weight = tonumber(A.weight)
if A.weight == '' then
  weight = tonumber(redis.call('HGET', K.requested, model) or '')
  if weight == nil then
    for _, weights in pairs(aliases) do
      if weights[model] ~= nil then weight = weights[model] end
    end
  end
  weight = weight or DEFAULT_WEIGHT
end
if weight >= 0 then
  redis.call('HSET', K.requested, model, weight)
  if override == 'clear' then
    redis.call('HDEL', K.overrides, model)
  elseif string.sub(override, 1, 5) == 'init:' then
    redis.call('HSETNX', K.overrides, model, string.sub(override, 6))
  elseif override ~= '' then
    redis.call('HSET', K.overrides, model, override)
  end
  local forced = tonumber(redis.call('HGET', K.overrides, model) or '')
  if forced ~= nil and forced >= 0 then weight = forced end
else
  redis.call('HDEL', K.requested, model)
  redis.call('HDEL', K.overrides, model)
end
for alias, _ in pairs(wanted) do
  if aliases[alias] == nil then aliases[alias] = {} end
end
if weight >= 0 and spec ~= '' then redis.call('HSET', K.specs, model, spec) end
for alias, weights in pairs(aliases) do
  if wanted[alias] and weight >= 0 then weights[model] = weight else weights[model] = nil end
  local best, best_weight = nil, -1
  for name, w in pairs(weights) do
    if w > best_weight or (w == best_weight and name < best) then best, best_weight = name, w end
  end
  if best == nil then
    redis.call('HDEL', K.weights, alias)
    redis.call('HDEL', K.routes, alias)
  else
    redis.call('HSET', K.weights, alias, cjson.encode(weights))
    redis.call('HSET', K.routes, alias, best)
  end
end
if weight < 0 then redis.call('HDEL', K.specs, model) end
return 1
