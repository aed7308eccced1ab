-- Completes or fails a live job in one step: result, status, upload removal (or a dead letter that keeps it),
-- event (and the notice to a submit waiting for it), webhook and the acknowledgement of its queue entry. A job
-- that already ended is only acknowledged, so a redelivered or cancelled job never gets a second result or a
-- second terminal event.
-- KEYS: status, result, image, metadata, stream, events, dead-letter stream, webhook outbox, dead-letter index
-- ARGV: group, entry id, result body ('' when failing), ttl, event json, dead-letter json ('' for none),
--       image ttl when dead-lettered, then field/value pairs for the status hash
-- The job's own retention_s (asked for at submit) replaces the ttl when it has one.
local live = LIVE[redis.call('HGET', KEYS[1], 'status')]
if live then
  local ttl = retention_of(KEYS[1], ARGV[4])
  if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'EX', ttl) end
  redis.call('HSET', KEYS[1], unpack(ARGV, 8))
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[4], ttl)
  if ARGV[6] ~= '' then
    -- dead-lettered: keep the upload for an operator's retry, for as long as a pending job would keep it
    redis.call('EXPIRE', KEYS[3], ARGV[7])
    local entry = redis.call('XADD', KEYS[7], '*', 'job', ARGV[6])
    redis.call('HSET', KEYS[9], redis.call('HGET', KEYS[1], 'job_id'), entry)
  else
    redis.call('DEL', KEYS[3])
  end
  redis.call('PUBLISH', KEYS[6], ARGV[5])
  notify_waiter(KEYS[1])
  queue_webhook(KEYS[1], KEYS[8], redis.call('HGET', KEYS[1], 'status'))
end
redis.call('XACK', KEYS[5], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[5], ARGV[2])
if live then return 1 end
return 0
