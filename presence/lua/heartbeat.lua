-- heartbeat: KEYS 1-3; ARGV prefix, node, ttl_ms, budget.
-- Extends the node's expiry, then reaps expired nodes. Returns {live, more}:
-- live 0 means the node was missing or had already expired (Redis lost its
-- data, or reapers may have drained it), so the caller must resync; more 1
-- means expired nodes are left to reap.
local now = now_ms()
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
local live = 0
if score and tonumber(score) > now then
  live = 1
end
return {live, reap(now, tonumber(ARGV[4]))}
