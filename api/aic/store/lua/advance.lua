-- A progress change of a live job; a cancelled or finished one stays as it is. A.count_attempt '1' counts one
-- more delivery (attempts); REST: field/value pairs.
-- The first move to processing queues a 'started' webhook when the job asked for one. Counting the delivery here,
-- not before, leaves no stray hash behind for a job that expired or was erased meanwhile.
local st = redis.call('HGET', K.status, 'status')
if not LIVE[st] then return 0 end
if A.count_attempt == '1' then redis.call('HINCRBY', K.status, 'attempts', 1) end
redis.call('HSET', K.status, unpack(ARGV, REST))
redis.call(PUBLISH, K.events, A.event)
if st == 'pending' and redis.call('HGET', K.status, 'status') == 'processing' then
  queue_webhook(K.status, K.outbox, 'started')
end
return 1
