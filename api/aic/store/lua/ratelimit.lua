-- A token bucket per identity, checked and charged for all of them at once, on Redis's clock.
-- KEYS: one bucket hash per identity. ARGV: capacity, refill tokens per ms.
-- Returns {allowed 0/1, tokens left (min over buckets), ms until the next token (max over refused buckets)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local levels, allowed, left, wait = {}, 1, capacity, 0
for i, key in ipairs(KEYS) do
  local b = redis.call('HMGET', key, 'tokens', 'at')
  local tokens, at = tonumber(b[1]) or capacity, tonumber(b[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
  levels[i] = tokens
  if tokens < 1 then
    allowed = 0
    wait = math.max(wait, math.ceil((1 - tokens) / rate))
  end
end
local ttl = math.ceil(capacity / rate) + 1000
for i, key in ipairs(KEYS) do
  local tokens = levels[i]
  if allowed == 1 then tokens = tokens - 1 end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', key, ttl)
  left = math.min(left, math.floor(tokens))
end
return {allowed, left, wait}
