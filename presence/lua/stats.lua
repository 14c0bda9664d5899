-- stats: KEYS 1-3; ARGV prefix, budget.
-- Reaps expired nodes, then returns {distinct users, total connections,
-- node1, conns1, users1, node2, ...} over live nodes.
local now = now_ms()
reap(now, tonumber(ARGV[2]))
local out = {redis.call('HLEN', KEYS[2]), 0}
local total = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  local c = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  total = total + c
  out[#out + 1] = id
  out[#out + 1] = c
  out[#out + 1] = redis.call('HLEN', ARGV[1] .. 'node:' .. id .. ':users')
end
out[2] = total
return out
