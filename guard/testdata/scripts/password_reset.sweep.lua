local KIND, TAG, LOGLEN = 'password_reset', '{fg}', 1
local OFF, NONE, NOGROUP = 1e15, '{fg}:none', '\0\0\0\0\0\0\0\0\0'
local BPAT = '^(%a)(%S) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$'
local W, FLOORC, FLOORR, SF, ALPHA = 60000, 60, 1, 5, 9.92063492063492e-05
local WARM, DAY, RISEW, RISED = 86400000, 86400000, 0.1, 2
local CEILC, CEILF, CEILMINC = 0, 10, 600
local BUDP, BUDC, BUDF, BUDMIN = 86400000, 0, 3, 10000
local RR, RMINC, RSRC = 0.5, 30, 20
local RF, RRAT = 10, 0.9
local COOL, MAXCOOL, PROBE, MODE = 600000, 4800000, 1000000, 'hold'
local HOLDMAX, HOLDTTL, SWEEPMS = 100000, 1800000, 3600000
local LANEUS, LANEMAXUS, LANEF, RQAFTER = 0, 1000000, 2, 60
local RDB, RDLAG, RDMIN, RDSRC, RDNB = 600000, 600000, 20, 5, 6
local RDCOL, RDNEED, RDALPHA, RDFALL = 0.5, 0.05, 0.000992063492063492, 0.9992685973577815
local RPMIN, RPSRC, RPRAT, CLOSEF = 5, 3, 0.01, 2
local RGPFX, RPPFX = '{fg}:rg:password_reset:', '{fg}:rp:password_reset:'
local BK, IK, NK, FK, PK, SK, DK, RK, FSK, FRK = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local B, NOW, NOWUS, CNT, DCNT
local dirty, trans = false, nil
-- Held password_reset emails past their expiry leave the held area, counted
-- expired (see rkeys.SweepScript).
local hkey, stkey = KEYS[11], KEYS[12]
local r = redis.call('HSCAN', hkey, ARGV[1], 'COUNT', ARGV[2])
local t = redis.call('TIME')
NOW = t[1] * 1000 + math.floor(t[2] / 1000)
NOWUS = (t[1] - 1577836800) * 1000000 + t[2]
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
