-- Puts a dead-lettered job whose upload is still stored back to pending and onto its queue, and removes its
-- dead letter. Returns 'pending'; 'not-dead' (no dead letter), 'no-image', or the status that forbade it
-- ('' if the job is gone). A.deadline_ms: a retried job gets a deadline as long as its first one, from now.
local st = redis.call('HGET', K.status, 'status')
if not st then return '' end
local entry = redis.call('HGET', K.dead_index, A.job_id)
if not entry then return 'not-dead' end
if st ~= 'failed' then return st end
if redis.call('EXISTS', K.image) == 0 then return 'no-image' end
redis.call('HSET', K.status, 'status', 'pending', 'progress', '0', 'stage', '', 'error', '', 'error_code', '',
           'attempts', '0', 'updated_at', A.updated_at, 'deadline_ms', A.deadline_ms)
redis.call('EXPIRE', K.status, A.ttl)
redis.call('EXPIRE', K.image, A.ttl)
redis.call('DEL', K.result)
redis.call('XADD', K.queue, '*', 'job_id', A.job_id)
redis.call('XDEL', K.dead_stream, entry)
redis.call('HDEL', K.dead_index, A.job_id)
redis.call(PUBLISH, K.events, A.event)
return 'pending'
