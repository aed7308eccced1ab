-- A progress change of a live job; a cancelled or finished one stays as it is.
-- KEYS: status, events channel, webhook outbox. ARGV: event json, '1' to count one more delivery (attempts) else
-- '0', then field/value pairs.
-- The first move to processing queues a 'started' webhook when the job asked for one. Counting the delivery here,
-- not before, leaves no stray hash behind for a job that expired or was erased meanwhile.
local st = redis.call('HGET', KEYS[1], 'status')
if not LIVE[st] then return 0 end
if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PUBLISH', KEYS[2], ARGV[1])
if st == 'pending' and redis.call('HGET', KEYS[1], 'status') == 'processing' then
  queue_webhook(KEYS[1], KEYS[3], 'started')
end
return 1
