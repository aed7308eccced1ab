-- Cancels a live job exactly like finish.lua ends one: status kept as long as a result would be, upload
-- dropped, event published, webhook queued. Returns 'ok', or the status that forbade it ('' if gone).
-- A.ttl: the default retention (the job's retention_s wins).
local st = redis.call('HGET', K.status, 'status')
if not LIVE[st] then return st or '' end
redis.call('HSET', K.status, 'status', 'cancelled', 'updated_at', A.updated_at)
local ttl = retention_of(K.status, A.ttl)
redis.call('EXPIRE', K.status, ttl)
redis.call('EXPIRE', K.metadata, ttl)
redis.call('DEL', K.image)
redis.call(PUBLISH, K.events, A.event)
notify_waiter(K)
queue_webhook(K.status, K.outbox, 'cancelled')
return 'ok'
