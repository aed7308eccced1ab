-- Creates the jobs of one request, all or none: their records, metadata and queue entries. Refused when the
-- request's alias routes to no model, or when the jobs would take the queues past their depth (backpressure shared
-- by every API replica). The uploads were SET just before, in the same transaction (an upload through Lua's
-- arguments costs the server about a millisecond): a refusal deletes them again.
-- The same request sent again (redis-py retries a transaction whose reply was lost, e.g. as Redis shut down after
-- applying it) finds its jobs there: their ids are this request's own. It changes nothing then - no second record,
-- no second queue entry - and drops the uploads the resend stored again for jobs that no longer need them.
-- KEYS: model routes, the priority queues (ARGV[2] of them), the dead-letter index, then per job: status, image,
--       metadata, its queue
-- ARGV: alias, number of queues, max depth,
--       then per job: its job id, metadata JSON ('' for none), the ttl of its live keys (its deadline and a slack),
--       the record's field count n, then n field/value pairs
local queues = tonumber(ARGV[2])
local jobs = (#KEYS - 2 - queues) / 4
local first = 3 + queues
local function refuse(reply)
  for j = 0, jobs - 1 do redis.call('DEL', KEYS[first + 1 + 4 * j]) end
  return reply
end
if redis.call('EXISTS', KEYS[first]) == 1 then
  local a = 4
  for j = 0, jobs - 1 do
    local st = redis.call('HGET', KEYS[first + 4 * j], 'status')
    -- a pending or processing job needs its upload (the bytes are the same), a dead-lettered one keeps it
    if not LIVE[st] and redis.call('HEXISTS', KEYS[2 + queues], ARGV[a]) == 0 then
      redis.call('DEL', KEYS[first + 1 + 4 * j])
    end
    a = a + 4 + 2 * tonumber(ARGV[a + 3])
  end
  return {'ok'}
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return refuse({'unknown-model', unpack(redis.call('HKEYS', KEYS[1]))})
end
local depth = 0
for q = 2, queues + 1 do depth = depth + redis.call('XLEN', KEYS[q]) end
if depth + jobs > tonumber(ARGV[3]) then return refuse({'full', tostring(depth)}) end
local a = 4
for j = 0, jobs - 1 do
  local k, ttl, n = first + 4 * j, ARGV[a + 2], tonumber(ARGV[a + 3])
  redis.call('HSET', KEYS[k], unpack(ARGV, a + 4, a + 3 + 2 * n))
  redis.call('EXPIRE', KEYS[k], ttl)
  if ARGV[a + 1] ~= '' then redis.call('SET', KEYS[k + 2], ARGV[a + 1], 'EX', ttl) end
  redis.call('XADD', KEYS[k + 3], '*', 'job_id', ARGV[a])
  a = a + 4 + 2 * n
end
return {'ok'}
