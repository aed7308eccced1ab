-- A new current signing secret; the old one keeps signing until previous_until_ms.
-- KEYS: secret hash. ARGV: new secret, previous-until ms
local old = redis.call('HGET', KEYS[1], 'current')
redis.call('HSET', KEYS[1], 'current', ARGV[1])
if old then
  redis.call('HSET', KEYS[1], 'previous', old, 'previous_until_ms', ARGV[2])
end
return 1
