-- Held {{.Kind}} emails past their expiry leave the held area, counted
-- expired (see rkeys.SweepScript).
local hkey, stkey = HK, STK
local r = redis.call('HSCAN', hkey, ARGV[1], 'COUNT', ARGV[2])
local t = redis.call('TIME')
{{clock}}
local n = 0
local items = r[2]
for i = 1, #items, 2 do
  local v = items[i + 1]
  local e = tonumber(string.match(v, '^[ad](%d+) '))
  if e and NOW >= e then
    local at = string.sub(v, 1, 1)
    redis.call('HDEL', hkey, items[i])
    redis.call('HINCRBY', stkey, KIND .. '|' .. at .. ':held:breaker', -1)
    redis.call('HINCRBY', stkey, KIND .. '|' .. at .. ':expired:held', 1)
    n = n + 1
  end
end
return {r[1], n}
