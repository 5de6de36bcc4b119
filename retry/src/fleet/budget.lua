-- A fleet-wide retry budget for seawall, run atomically by Redis.
--
-- KEYS[1]  the budget: a hash of per-second counts, `d:<second>` (requests) and
--          `w:<second>` (retries taken), in seconds of the server's clock
-- ARGV[1]  requests to add now
-- ARGV[2]  retries wanted
-- ARGV[3]  the ratio of retries to requests
-- ARGV[4]  the floor: retries allowed over the window whatever the traffic
-- ARGV[5]  the window (ttl), in seconds
--
-- Returns {granted, left}: the retries taken (up to the number wanted, within
-- ratio x requests + floor - retries taken over the window) and what is left after them.
-- Counts older than the window are deleted; the key expires a second after the window.
local deposits = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local ratio = tonumber(ARGV[3])
local floor = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
if not deposits or not want or not ratio or not floor or not ttl or ttl < 1 then
  return redis.error_reply('seawall: bad arguments to the budget script')
end
local now = tonumber(redis.call('TIME')[1])
if deposits > 0 then
  redis.call('HINCRBY', KEYS[1], 'd:' .. now, deposits)
end
local fields = redis.call('HGETALL', KEYS[1])
local requests, retries = 0, 0
for i = 1, #fields, 2 do
  local kind, second = string.match(fields[i], '^([dw]):(%d+)$')
  local count = tonumber(fields[i + 1])
  if not kind or not count then
    return redis.error_reply('seawall: the budget ' .. KEYS[1] .. ' holds a field that is no count')
  end
  if tonumber(second) + ttl <= now then
    redis.call('HDEL', KEYS[1], fields[i])
  elseif kind == 'd' then
    requests = requests + count
  else
    retries = retries + count
  end
end
local allowed = math.floor(ratio * requests + 1e-9) + floor - retries
local granted = math.max(0, math.min(want, allowed))
if granted > 0 then
  redis.call('HINCRBY', KEYS[1], 'w:' .. now, granted)
end
redis.call('EXPIRE', KEYS[1], ttl + 1)
return {granted, math.max(0, allowed - granted)}
