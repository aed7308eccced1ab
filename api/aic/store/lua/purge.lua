-- Erases one ended job: status, result, upload, metadata, webhook attempts and its dead letter (entry and index),
-- all keys of the job's own slot. Returns 1 when the job existed. The per-tenant index entry and the deadline entry
-- are removed by the caller, outside this step (they are not the job's keys).
local existed = redis.call('EXISTS', K.status)
local entry = redis.call('HGET', K.dead_index, A.job_id)
if entry then
  redis.call('XDEL', K.dead_stream, entry)
  redis.call('HDEL', K.dead_index, A.job_id)
end
redis.call('DEL', K.status, K.result, K.image, K.metadata, K.webhooks)
return existed
