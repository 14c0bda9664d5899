-- Prepended to every presence script. Key conventions, shared by all scripts:
--   KEYS[1] P..'nodes'  ZSET nodeID -> expiry (ms, Redis TIME)
--   KEYS[2] P..'users'  HASH userID -> cluster-wide connection count
--   KEYS[3] P..'conns'  HASH nodeID -> that node's connection count
--   KEYS[4] P..'node:'..id..':conns' HASH connID -> userID   (own node, when given)
--   KEYS[5] P..'node:'..id..':users' HASH userID -> count    (own node, when given)
--   ARGV[1] P, the prefix. Other nodes' keys are built from it; P carries the
--   hash tag, so every key a script touches lies in the one slot of KEYS[1].
-- Invariant kept by every script: users[u] = sum over nodes of node:<id>:users[u],
-- and a node with hashes is always a member of nodes (it leaves only once drained).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- drain takes at most budget of node id's users out of the global counts. When
-- nothing is left it forgets the node and returns the budget left; otherwise -1.
local function drain(id, budget)
  local base = ARGV[1] .. 'node:' .. id
  local uk = base .. ':users'
  local f = redis.call('HRANDFIELD', uk, budget, 'WITHVALUES')
  for i = 1, #f, 2 do
    if redis.call('HINCRBY', KEYS[2], f[i], -tonumber(f[i + 1])) <= 0 then
      redis.call('HDEL', KEYS[2], f[i])
    end
    redis.call('HDEL', uk, f[i])
  end
  local n = #f / 2
  if n >= budget and redis.call('EXISTS', uk) == 1 then
    return -1
  end
  redis.call('UNLINK', base .. ':conns')
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[1], id)
  return budget - n
end

-- reap drains nodes whose expiry has passed. It returns 1 when work is left.
local function reap(now, budget)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 16)
  for _, id in ipairs(dead) do
    budget = drain(id, budget)
    if budget < 0 then
      return 1
    end
  end
  if #dead == 16 then
    return 1
  end
  return 0
end
