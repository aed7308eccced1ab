-- Creates the jobs of one request, all or none: their records, metadata and queue entries. Refused when the
-- request's alias routes to no model, or when the jobs would take the queues past their depth (backpressure shared
-- by every API replica). The uploads were SET just before, in the same transaction (an upload through Lua's
-- arguments costs the server about a millisecond): a refusal deletes them again.
-- KEYS: model routes, the priority queues (ARGV[2] of them), then per job: status, image, metadata, its queue
-- ARGV: alias, number of queues, max depth, status ttl, metadata ttl,
--       then per job: its job id, metadata JSON ('' for none), the record's field count n, then n field/value pairs
local queues = tonumber(ARGV[2])
local jobs = (#KEYS - 1 - queues) / 4
local function refuse(reply)
  for j = 0, jobs - 1 do redis.call('DEL', KEYS[3 + queues + 4 * j]) end
  return reply
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return refuse({'unknown-model', unpack(redis.call('HKEYS', KEYS[1]))})
end
local depth = 0
for q = 2, queues + 1 do depth = depth + redis.call('XLEN', KEYS[q]) end
if depth + jobs > tonumber(ARGV[3]) then return refuse({'full', tostring(depth)}) end
local a = 6
for j = 0, jobs - 1 do
  local k, n = 2 + queues + 4 * j, tonumber(ARGV[a + 2])
  redis.call('HSET', KEYS[k], unpack(ARGV, a + 3, a + 2 + 2 * n))
  redis.call('EXPIRE', KEYS[k], ARGV[4])
  if ARGV[a + 1] ~= '' then redis.call('SET', KEYS[k + 2], ARGV[a + 1], 'EX', ARGV[5]) end
  redis.call('XADD', KEYS[k + 3], '*', 'job_id', ARGV[a])
  a = a + 3 + 2 * n
end
return {'ok'}
