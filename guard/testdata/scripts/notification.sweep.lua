local KIND, TAG, LOGLEN = 'notification', '{fg}', '1'
local OFF, NONE, NOGROUP = 1e15, '{fg}:none', '\0\0\0\0\0\0\0\0\0'
local BPAT, BHEAD, BPREVF, BTAIL = '^(%a)(%S) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$', '^(%a)(%S) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)', '^%S+ %d+ %d+ %d+ %d+ %d+ %d+ %d+ (%d+)', ' (%d+) (%d+) (%d+) (%d+)$'
local W, FLOORC, FLOORR, SF, ALPHA = 60000, 60, 1, 0, 9.92063492063492e-05
local WARM, DAY, RISEW, RISED = 86400000, 86400000, 0.1, 2
local CEILC, CEILF, CEILMINC = 0, 0, 0
local BUDP, BUDC, BUDF, BUDMIN, BUDON = 86400000, 0, 0, 0, false
local RR, RMINC, RSRC = 0, 30, 20
local RF, RRAT = 10, 0.9
local COOL, MAXCOOL, PROBE, MODE = 600000, 4800000, 1000000, 'clamp'
local HOLDMAX, HOLDTTL, SWEEPMS = 100000, 86400000, 3600000
local LANEUS, LANEMAXUS, LANEF, RQAFTER, LANEB = 0, 1000000, 2, 60, 10
local RDB, RDLAG, RDMIN, RDSRC, RDNB = 0, 0, 1, 0, 1
local RDCOL, RDNEED, RDALPHA, RDFALL = 0, 0, 1e-09, 0
local RPMIN, RPSRC, RPRAT, CLOSEF = 0, 0, 0, 2
local RGPFX, RPPFX = '{fg}:rg:notification:', '{fg}:rp:notification:'
local TRKEEP, TRMAX, TRTTL, TREPOCH = 2048, 4096, '86401000', 1577836800000
local TRNEW, TRNTTL, TBK = 1000, '86400000', '{fg}:tb:notification:'
local BK, IK, NK, FK, PK, SK, DK, RK, FSK, FRK = '{fg}:b:notification', '{fg}:bi:notification', '{fg}:bn:notification', '{fg}:bf:notification', '{fg}:bq:notification', '{fg}:bs:notification', '{fg}:bd:notification', '{fg}:rd:notification', '{fg}:bfs:notification', '{fg}:bfr:notification'
local HK, HRK, STK, LOGK, AK, KK = '{fg}:h:notification', '{fg}:hr:notification', '{fg}:stats', '{fg}:log', '{fg}:n:notification', '{fg}:kinds'
local LTK, LQK, LDK = '{fg}:blt:notification', '{fg}:blq:notification', '{fg}:bld:notification'
local B, NOW, NOWUS, CNT, DCNT
local dirty, trans = false, nil
-- Held notification emails past their expiry leave the held area, counted
-- expired (see rkeys.SweepScript).
local hkey, stkey = HK, STK
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
