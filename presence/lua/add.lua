-- add: KEYS 1-5; ARGV prefix, node, conn, user, ttl_ms.
-- Returns {added (0 on a duplicate), live (0: node was not registered or had
-- expired, so the caller must resync from its local view)}.
local now = now_ms()
local live = 1
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not score then
  -- Register at once so that a reaper can always find these entries.
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[2])
  live = 0
elseif tonumber(score) <= now then
  live = 0
end
if redis.call('HSETNX', KEYS[4], ARGV[3], ARGV[4]) == 0 then
  return {0, live}
end
redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
return {1, live}
