-- Moves one outbox entry into its shard's schedule (due now) and acknowledges it, atomically and idempotently.
if redis.call('EXISTS', K.delivery) == 0 then
  redis.call('HSET', K.delivery, 'job_id', A.job_id, 'event', A.event, 'entry_id', A.entry_id, 'attempts', 0)
  redis.call('ZADD', K.scheduled, 'NX', A.due_ms, A.webhook_id)
  if redis.call('EXISTS', K.status) == 1 then redis.call('HSET', K.status, 'webhook', A.summary) end
end
redis.call('XACK', K.outbox, A.group, A.entry_id)
redis.call('XDEL', K.outbox, A.entry_id)
return 1
