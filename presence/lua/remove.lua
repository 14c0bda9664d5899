-- remove: KEYS 1-5; ARGV prefix, node, conn, user.
-- Returns 1 when the connection was known (with that user), else 0.
if redis.call('HGET', KEYS[4], ARGV[3]) ~= ARGV[4] then
  return 0
end
redis.call('HDEL', KEYS[4], ARGV[3])
if redis.call('HINCRBY', KEYS[5], ARGV[4], -1) <= 0 then
  redis.call('HDEL', KEYS[5], ARGV[4])
end
if redis.call('HINCRBY', KEYS[2], ARGV[4], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[4])
end
if redis.call('HINCRBY', KEYS[3], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[2])
end
return 1
