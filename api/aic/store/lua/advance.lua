-- A progress change of a live job; a cancelled or finished one stays as it is.
-- KEYS: status, events channel, webhook outbox. ARGV: event json, then field/value pairs.
-- The first move to processing queues a 'started' webhook when the job asked for one.
local st = redis.call('HGET', KEYS[1], 'status')
if not LIVE[st] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PUBLISH', KEYS[2], ARGV[1])
if st == 'pending' and redis.call('HGET', KEYS[1], 'status') == 'processing' then
  queue_webhook(KEYS[1], KEYS[3], 'started')
end
return 1
