-- Appends an attempt to the job, updates its summary, then reschedules or ends the delivery. A.next_due_ms is ''
-- when the delivery is over.
if redis.call('EXISTS', K.status) == 1 then
  redis.call('HSET', K.status, 'webhook', A.summary)
  redis.call('RPUSH', K.attempts, A.attempt)
  local ttl = redis.call('PTTL', K.status)
  if ttl > 0 then redis.call('PEXPIRE', K.attempts, ttl) end
end
if A.next_due_ms == '' then
  redis.call('ZREM', K.scheduled, A.webhook_id)
  redis.call('DEL', K.delivery)
else
  redis.call('ZADD', K.scheduled, A.next_due_ms, A.webhook_id)
  redis.call('HSET', K.delivery, 'attempts', A.attempts_so_far)
end
return 1
