-- Creates the jobs of one request in one step, all or none: their records, uploads and queue entries. Refused
-- when the request's alias routes to no model, or when the jobs would take the queues past their depth
-- (backpressure shared by every API replica).
-- KEYS: model routes, the priority queues (ARGV[2] of them), then per job: status, image, metadata, its queue
-- ARGV: alias, number of queues, max depth, status ttl, image ttl, metadata ttl,
--       then per job: record JSON (field -> string), image, metadata JSON ('' for none)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return {'unknown-model', unpack(redis.call('HKEYS', KEYS[1]))}
end
local queues = tonumber(ARGV[2])
local jobs = (#KEYS - 1 - queues) / 4
local depth = 0
for q = 2, queues + 1 do depth = depth + redis.call('XLEN', KEYS[q]) end
if depth + jobs > tonumber(ARGV[3]) then return {'full', tostring(depth)} end
for j = 0, jobs - 1 do
  local k, a = 2 + queues + 4 * j, 7 + 3 * j
  local record = cjson.decode(ARGV[a])
  local fields = {}
  for name, value in pairs(record) do
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
  redis.call('SET', KEYS[k + 1], ARGV[a + 1], 'EX', ARGV[5])
  redis.call('HSET', KEYS[k], unpack(fields))
  redis.call('EXPIRE', KEYS[k], ARGV[4])
  if ARGV[a + 2] ~= '' then redis.call('SET', KEYS[k + 2], ARGV[a + 2], 'EX', ARGV[6]) end
  redis.call('XADD', KEYS[k + 3], '*', 'job_id', record['job_id'])
end
return {'ok'}
