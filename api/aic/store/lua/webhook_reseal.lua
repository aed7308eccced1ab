-- Replaces a stored secret with its resealed form, unless it changed since it was read (a rotation won).
-- KEYS: secret hash. ARGV: field, the value as read, the resealed value
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
