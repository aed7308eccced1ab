-- Takes due deliveries, pushing each out by a lease so no other worker takes it meanwhile.
-- KEYS: scheduled set. ARGV: now ms, lease-until ms, limit
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], member) end
return due
