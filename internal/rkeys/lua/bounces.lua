-- A hard bounce or a complaint about a sent {{.Kind}} email was counted
-- (see rkeys.BounceTripScript): trip the relay breaker when the kind's
-- bounces reach their share of its sends over the last hour.
local cur, prev = KEYS[1], KEYS[2]
local BNMIN, BNRAT, BNCRAT = {{.MinSends}}, {{.Ratio}}, {{.ComplaintRatio}}
local H = 3600000

local t = redis.call('TIME')
{{clock}}
-- The kind's sends, hard bounces and complaints in the hour's bucket and
-- in the one before it, weighted by the share of it still within the hour.
local function sums(key)
  local s, h, c = 0, 0, 0
  local kv = redis.call('HGETALL', key)
  for i = 1, #kv, 2 do
    local k, typ = string.match(kv[i], '^([^|]+)|[^|]*|(%a+)$')
    if k == KIND then
      local n = tonumber(kv[i + 1]) or 0
      if typ == 'sent' then s = s + n elseif typ == 'hard' then h = h + n elseif typ == 'complaint' then c = c + n end
    end
  end
  return s, h, c
end
local frac = 1 - (NOW % H) / H
local s1, h1, c1 = sums(cur)
local s0, h0, c0 = sums(prev)
local sent, hard, compl = s1 + s0 * frac, h1 + h0 * frac, c1 + c0 * frac
if sent < BNMIN or sent <= 0 then return 'counted' end
if not (BNRAT > 0 and hard >= BNRAT * sent or BNCRAT > 0 and compl >= BNCRAT * sent) then return 'counted' end
{{lib}}
B = bparse(redis.call('GET', BK))
if not B then
  B = {st = 'c', rs = '-', idx = math.floor(NOW / W), prev = 0, prevf = 0, thr = 0, ceil = OFF, untl = 0, ai = 0,
    li = LANEMAXUS, op = 0, didx = math.floor(NOW / BUDP), dprev = 0, bud = OFF, fl = 0}
  dirty = true
end
btick()
-- As for relay failures: dispatch defers the kind's emails until the
-- cooldown ends; a half-open breaker that meets more bounces re-opens
-- with a doubled cooldown.
if B.st == 'o' then return 'counted' .. bsuffix() end
bopen('r', B.st == 'h')
return 'tripped' .. bsuffix()
