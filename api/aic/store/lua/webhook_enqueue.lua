-- Moves one outbox entry into the schedule (due now) and acknowledges it, atomically and idempotently.
-- KEYS: delivery hash, scheduled set, outbox stream, job status. ARGV: group, entry id, webhook id, job id,
-- event, due ms, summary json
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'job_id', ARGV[4], 'event', ARGV[5], 'entry_id', ARGV[2], 'attempts', 0)
  redis.call('ZADD', KEYS[2], 'NX', ARGV[6], ARGV[3])
  if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('HSET', KEYS[4], 'webhook', ARGV[7]) end
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[3], ARGV[2])
return 1
