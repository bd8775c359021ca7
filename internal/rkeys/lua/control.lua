-- The admin operations on the {{.Kind}} breaker (see rkeys.ControlScript).
local hkey, hrkey = HK, HRK
local op, rc = ARGV[1], ARGV[2]

local t = redis.call('TIME')
{{clock}}
{{lib}}
local nidx = math.floor(NOW / W)
B = bparse(redis.call('GET', BK))
CNT = tonumber(redis.call('GET', NK)) or 0
if not B or B.idx ~= nidx then broll(nidx, CNT, 0) end
btick()
if op == 'trip' then
  if not (B.st == 'o' and B.untl == 0 and B.rs == rc) then bopen(rc, false, true) end
elseif op == 'reset' then
  if B.st ~= 'c' then bclose('m') end
  B.prev, B.prevf, B.dprev, CNT, dirty = 0, 0, 0, 0, true
  redis.call('SET', NK, 0, 'PX', 2 * W + 1000)
  redis.call('SET', DK, 0, 'PX', 2 * BUDP + 1000)
  redis.call('DEL', FK, FSK, FRK)
  redis.call('HSET', IK, 'lvl', 0, 'rc', 0, 'rf', 0, 'ro', 0, 'pf', 0, 'po', 0)
end
bsuffix()
local info = redis.call('HMGET', IK, 'since', 'opened', 'lvl', 'rr', 'rn', 'born')
local dused = (tonumber(redis.call('GET', DK)) or 0) + B.dprev * (1 - (NOW - B.didx * BUDP) / BUDP)
local redeem = tonumber(info[4]) or 0
if (tonumber(info[5]) or 0) < RDNB then redeem = -1 end
local res = {B.st, B.rs, info[1] or '0', info[2] or '0', string.format('%.3f', brate(CNT)), string.format('%.6f', bbase()),
  redis.call('HLEN', hkey), string.format('%d', B.untl), string.format('%d', B.thr), info[3] or '0', redis.call('HLEN', hrkey),
  string.format('%d', B.ceil), string.format('%d', B.bud), string.format('%d', math.floor(dused)),
  string.format('%.4f', redeem), tostring(B.fl % 2), string.format('%d', B.li), info[6] or '0'}
if trans then
  for i = 1, #trans do res[#res + 1] = trans[i] end
end
return res
