-- A new current signing secret; the old one keeps signing until A.until_ms.
local old = redis.call('HGET', K.secret, 'current')
redis.call('HSET', K.secret, 'current', A.new_secret)
if old then
  redis.call('HSET', K.secret, 'previous', old, 'previous_until_ms', A.until_ms)
end
return 1
