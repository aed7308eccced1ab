-- Completes or fails a live job in one step: result, status, upload removal (or a dead letter that keeps it),
-- event (and the notice to a submit waiting for it), webhook and the acknowledgement of its queue entry. A job
-- that already ended is only acknowledged, so a redelivered or cancelled job never gets a second result or a
-- second terminal event. A.result is '' when failing, A.dead_letter '' unless dead-lettered; REST: field/value
-- pairs for the status hash. The job's own retention_s (asked for at submit) replaces A.ttl when it has one.
local live = LIVE[redis.call('HGET', K.status, 'status')]
if live then
  local ttl = retention_of(K.status, A.ttl)
  if A.result_body ~= '' then redis.call('SET', K.result, A.result_body, 'EX', ttl) end
  redis.call('HSET', K.status, unpack(ARGV, REST))
  redis.call('EXPIRE', K.status, ttl)
  redis.call('EXPIRE', K.metadata, ttl)
  if A.dead_letter ~= '' then
    -- dead-lettered: keep the upload for an operator's retry, for as long as a pending job would keep it
    redis.call('EXPIRE', K.image, A.image_ttl)
    local entry = redis.call('XADD', K.dead_stream, '*', 'job', A.dead_letter)
    redis.call('HSET', K.dead_index, redis.call('HGET', K.status, 'job_id'), entry)
  else
    redis.call('DEL', K.image)
  end
  redis.call(PUBLISH, K.events, A.event)
  notify_waiter(K)
  queue_webhook(K.status, K.outbox, redis.call('HGET', K.status, 'status'))
end
redis.call('XACK', K.stream, A.group, A.entry_id)
redis.call('XDEL', K.stream, A.entry_id)
if live then return 1 end
return 0
