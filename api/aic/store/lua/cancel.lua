-- Cancels a live job exactly like finish.lua ends one: status kept as long as a result would be, upload
-- dropped, event published, webhook queued. Returns 'ok', or the status that forbade it ('' if gone).
-- KEYS: status, image, metadata, events channel, webhook outbox. ARGV: event json, updated_at, ttl (the job's retention_s wins).
local st = redis.call('HGET', KEYS[1], 'status')
if not LIVE[st] then return st or '' end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updated_at', ARGV[2])
local ttl = retention_of(KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', KEYS[4], ARGV[1])
notify_waiter(KEYS[1])
queue_webhook(KEYS[1], KEYS[5], 'cancelled')
return 'ok'
