-- Appends an attempt to the job, updates its summary, then reschedules or ends the delivery.
-- KEYS: scheduled set, delivery hash, job status, job attempts list.
-- ARGV: webhook id, attempt json, summary json, next due ms ('' when the delivery is over), attempts so far
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'webhook', ARGV[3])
  redis.call('RPUSH', KEYS[4], ARGV[2])
  local ttl = redis.call('PTTL', KEYS[3])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[4], ttl) end
end
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
else
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  redis.call('HSET', KEYS[2], 'attempts', ARGV[5])
end
return 1
