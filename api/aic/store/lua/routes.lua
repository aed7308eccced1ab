-- The one writer of model routes. Routes model ARGV[1] under exactly the aliases ARGV[4..] with weight ARGV[2]
-- (an alias it no longer lists stops routing to it), stores its spec, and keeps models:routes naming the
-- heaviest model of every alias, so the API's alias check and the dispatchers' weighted choice always agree.
-- Weight '' keeps the model's current weight (DEFAULT_WEIGHT for a new model); -1 withdraws the model.
-- KEYS: weights, routes, specs. ARGV: model, weight, spec JSON (or ''), aliases...
local model, spec = ARGV[1], ARGV[3]
local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end
local aliases = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do aliases[all[i]] = cjson.decode(all[i + 1]) end
local weight = tonumber(ARGV[2])
if ARGV[2] == '' then
  for _, weights in pairs(aliases) do
    if weights[model] ~= nil then weight = weights[model] end
  end
  weight = weight or DEFAULT_WEIGHT
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
