-- Creates the jobs of one request, all or none: their records, metadata and queue entries. Refused when the
-- request's alias routes to no model, or when the jobs would take the queues past their depth (backpressure shared
-- by every API replica). The uploads were SET just before, in the same transaction (an upload through Lua's
-- arguments costs the server about a millisecond): a refusal deletes them again.
-- KEYS: model routes, the priority queues (ARGV[2] of them), then per job: status, image, metadata, its queue
-- ARGV: alias, number of queues, max depth, status ttl, metadata ttl,
--       then per job: record JSON (field -> string), metadata JSON ('' for none)
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
for j = 0, jobs - 1 do
  local k, a = 2 + queues + 4 * j, 6 + 2 * j
  local record = cjson.decode(ARGV[a])
  local fields = {}
  for name, value in pairs(record) do
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
  redis.call('HSET', KEYS[k], unpack(fields))
  redis.call('EXPIRE', KEYS[k], ARGV[4])
  if ARGV[a + 1] ~= '' then redis.call('SET', KEYS[k + 2], ARGV[a + 1], 'EX', ARGV[5]) end
  redis.call('XADD', KEYS[k + 3], '*', 'job_id', record['job_id'])
end
return {'ok'}
