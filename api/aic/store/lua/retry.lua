-- Puts a dead-lettered job whose upload is still stored back to pending and onto its queue, and removes its
-- dead letter. Returns 'pending'; 'not-dead' (no dead letter), 'no-image', or the status that forbade it
-- ('' if the job is gone).
-- KEYS: status, image, result, queue stream, events channel, dead-letter stream, dead-letter index.
-- ARGV: event json, updated_at, ttl, job id, new deadline (ms): a retried job gets a deadline as long as its
-- first one, from now.
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return '' end
local entry = redis.call('HGET', KEYS[7], ARGV[4])
if not entry then return 'not-dead' end
if st ~= 'failed' then return st end
if redis.call('EXISTS', KEYS[2]) == 0 then return 'no-image' end
redis.call('HSET', KEYS[1], 'status', 'pending', 'progress', '0', 'stage', '', 'error', '', 'error_code', '',
           'attempts', '0', 'updated_at', ARGV[2], 'deadline_ms', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('XADD', KEYS[4], '*', 'job_id', ARGV[4])
redis.call('XDEL', KEYS[6], entry)
redis.call('HDEL', KEYS[7], ARGV[4])
redis.call('PUBLISH', KEYS[5], ARGV[1])
return 'pending'
