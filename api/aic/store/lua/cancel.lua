-- Cancels a live job exactly like finish.lua ends one: status kept as long as a result would be, upload
-- dropped, event published, webhook queued. Returns 'ok', or the status that forbade it ('' if gone).
-- A.ttl: the default retention (the job's retention_s wins).
local st = redis.call('HGET', K.status, 'status')
if not LIVE[st] then return st or '' end
redis.call('HSET', K.status, 'status', 'cancelled', 'updated_at', A.updated_at)
end_job(K, A.ttl, A.event, 'cancelled')
return 'ok'
