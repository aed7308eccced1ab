-- Ends a live job whose deadline passed, wherever it is (queued or running): failed with TIMEOUT, exactly as
-- finish.lua fails one (status kept for its retention, upload dropped, event, waiter told, 'failed' webhook queued).
-- Its queue entry, if still queued, is dropped when a dispatcher takes it (the job is no longer live); a
-- dispatcher still running it is refused its late result by finish.lua. A job that ended, or whose deadline was
-- moved past now (an operator's retry), is left alone. Returns 1 when it timed the job out, else 0.
-- KEYS: status, image, metadata, events channel, webhook outbox.
-- ARGV: now (ms), event json, updated_at, error message, error code, default retention ttl.
local st = redis.call('HGET', KEYS[1], 'status')
if not LIVE[st] then return 0 end
local deadline = tonumber(redis.call('HGET', KEYS[1], 'deadline_ms') or '')
if deadline == nil or deadline > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[4], 'error_code', ARGV[5], 'updated_at', ARGV[3])
local ttl = retention_of(KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', KEYS[4], ARGV[2])
notify_waiter(KEYS[1])
queue_webhook(KEYS[1], KEYS[5], 'failed')
return 1
