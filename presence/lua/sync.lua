-- sync: KEYS 1-5; ARGV prefix, node, ttl_ms, mode, budget, conn1, user1, ...
-- mode 'reset': take whatever the node's hashes hold out of the global counts,
--   then add the pairs and register the node;
-- mode 'add': add the pairs (a further chunk after a reset) and register;
-- mode 'leave': take the node out entirely.
-- Returns 0 when the node's old entries are not fully drained yet (the pairs
-- were not applied: call again with the same arguments), else 1.
local node, mode = ARGV[2], ARGV[4]
if mode ~= 'add' then
  if drain(node, tonumber(ARGV[5])) < 0 then
    return 0
  end
  if mode == 'leave' then
    return 1
  end
end
local n = 0
for i = 6, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[4], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HINCRBY', KEYS[5], ARGV[i + 1], 1)
    redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1)
    n = n + 1
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[3], node, n)
end
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[3]), node)
return 1
