-- GCRA for seawall's fleet-wide rate limits, run atomically by Redis.
--
-- KEYS[1]  the bucket; it holds its theoretical arrival time (TAT) in microseconds after
--          2023-11-14 (so that doubles keep sub-microsecond precision for decades)
-- ARGV[1]  nanoseconds between two cells (the quota's replenish interval)
-- ARGV[2]  the burst: cells the bucket holds when full
-- ARGV[3]  cells wanted (a lease takes several at once)
--
-- Returns {granted, wait}: the cells granted (as many as are free now, up to the number
-- wanted), and when none is, the microseconds until one is. Time is the server's, so that
-- replicas whose clocks differ still agree. The key expires once the bucket is full again.
local interval = tonumber(ARGV[1]) / 1000
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
if not interval or not burst or not want or interval <= 0 or burst < 1 or want < 1 then
  return redis.error_reply('seawall: bad arguments to the GCRA script')
end
local time = redis.call('TIME')
local now = (tonumber(time[1]) - 1700000000) * 1000000 + tonumber(time[2])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then
  tat = tonumber(stored)
  if not tat then
    return redis.error_reply('seawall: the bucket ' .. KEYS[1] .. ' holds no number')
  end
  if tat < now then
    tat = now
  end
end
local tolerance = interval * burst
-- A millionth of a cell absorbs the rounding of fractional intervals.
local free = math.floor((now + tolerance - tat) / interval + 1e-6)
if free < 1 then
  return {0, math.ceil(tat + interval - tolerance - now)}
end
local granted = math.min(free, want)
tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return {granted, 0}
