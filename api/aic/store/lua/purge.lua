-- Erases one ended job: status, result, upload, metadata, webhook attempts and its dead letter (entry and index),
-- all keys of the job's own slot. Returns 1 when the job existed. The per-tenant index entry and the deadline entry
-- are removed by the caller, outside this step (they are not the job's keys).
-- KEYS: status, result, image, metadata, webhook attempts, dead-letter stream, dead-letter index. ARGV: job id.
local existed = redis.call('EXISTS', KEYS[1])
local entry = redis.call('HGET', KEYS[7], ARGV[1])
if entry then
  redis.call('XDEL', KEYS[6], entry)
  redis.call('HDEL', KEYS[7], ARGV[1])
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return existed
