-- Creates the jobs of one request in one shard, all or none: their records, metadata and queue entries. Refused
-- when the jobs would take the shard's queues past its share of the depth (backpressure shared by every API
-- replica). The alias was checked against the routes before (they are not this shard's keys). The uploads were SET
-- just before, in the same transaction (an upload through Lua's arguments costs the server about a millisecond):
-- a refusal deletes them again.
-- The same request sent again (redis-py retries a transaction whose reply was lost, e.g. as Redis shut down after
-- applying it) finds its jobs there: their ids are this request's own. It changes nothing then - no second record,
-- no second queue entry - and drops the uploads the resend stored again for jobs that no longer need them.
-- Per job, A.record is its status hash as a JSON list of field/value pairs.
local function refuse(reply)
  for j = 1, EACH do
    local J = item(j)
    redis.call('DEL', J.image)
  end
  return reply
end
local first = item(1)
if redis.call('EXISTS', first.status) == 1 then
  for j = 1, EACH do
    local J, JA = item(j)
    local st = redis.call('HGET', J.status, 'status')
    -- a pending or processing job needs its upload (the bytes are the same), a dead-lettered one keeps it
    if not LIVE[st] and redis.call('HEXISTS', K.dead_index, JA.job_id) == 0 then redis.call('DEL', J.image) end
  end
  return {'ok'}
end
local depth = redis.call('XLEN', K.urgent) + redis.call('XLEN', K.high) + redis.call('XLEN', K.normal)
  + redis.call('XLEN', K.low)
if depth + EACH > tonumber(A.max_depth) then return refuse({'full', tostring(depth)}) end
for j = 1, EACH do
  local J, JA = item(j)
  redis.call('HSET', J.status, unpack(cjson.decode(JA.record)))
  redis.call('EXPIRE', J.status, JA.ttl)
  if JA.metadata_json ~= '' then redis.call('SET', J.metadata, JA.metadata_json, 'EX', JA.ttl) end
  redis.call('XADD', J.queue, '*', 'job_id', JA.job_id)
end
return {'ok'}
