-- Replaces a stored secret with its resealed form, unless it changed since it was read (a rotation won).
if redis.call('HGET', K.secret, A.field) == A.read then
  redis.call('HSET', K.secret, A.field, A.resealed)
  return 1
end
return 0
