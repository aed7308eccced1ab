-- Ends a live job whose deadline passed, wherever it is (queued or running): failed with TIMEOUT, exactly as
-- finish.lua fails one (status kept for its retention, upload dropped, event, waiter told, 'failed' webhook queued).
-- Its queue entry, if still queued, is dropped when a dispatcher takes it (the job is no longer live); a
-- dispatcher still running it is refused its late result by finish.lua. A job that ended, or whose deadline was
-- moved past now (an operator's retry), is left alone. Returns 1 when it timed the job out, else 0.
local st = redis.call('HGET', K.status, 'status')
if not LIVE[st] then return 0 end
local deadline = tonumber(redis.call('HGET', K.status, 'deadline_ms') or '')
if deadline == nil or deadline > tonumber(A.now_ms) then return 0 end
redis.call('HSET', K.status, 'status', 'failed', 'error', A.message, 'error_code', A.code, 'updated_at', A.updated_at)
end_job(K, A.ttl, A.event, 'failed')
return 1
