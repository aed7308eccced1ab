-- A token bucket per identity, checked and charged for all of them at once, on Redis's clock (on a cluster each
-- bucket is its own call: identities hash to different slots).
-- Returns {allowed 0/1, tokens left (min over buckets), ms until the next token (max over refused buckets)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity, rate = tonumber(A.capacity), tonumber(A.rate_per_ms)
local levels, allowed, left, wait = {}, 1, capacity, 0
for j = 1, EACH do
  local b = redis.call('HMGET', item(j).bucket, 'tokens', 'at')
  local tokens, at = tonumber(b[1]) or capacity, tonumber(b[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
  levels[j] = tokens
  if tokens < 1 then
    allowed = 0
    wait = math.max(wait, math.ceil((1 - tokens) / rate))
  end
end
local ttl = math.ceil(capacity / rate) + 1000
for j = 1, EACH do
  local tokens = levels[j]
  if allowed == 1 then tokens = tokens - 1 end
  redis.call('HSET', item(j).bucket, 'tokens', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', item(j).bucket, ttl)
  left = math.min(left, math.floor(tokens))
end
return {allowed, left, wait}
