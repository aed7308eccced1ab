-- Takes due deliveries of one shard, pushing each out by a lease so no other worker takes it meanwhile.
local due = redis.call('ZRANGEBYSCORE', K.scheduled, '-inf', A.now_ms, 'LIMIT', 0, tonumber(A.limit))
for _, member in ipairs(due) do redis.call('ZADD', K.scheduled, A.lease_until_ms, member) end
return due
