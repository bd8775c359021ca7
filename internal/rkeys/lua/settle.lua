-- Settle of one {{.Kind}} send attempt (see rkeys.SettleScript).
local ckey, tkey, stkey, logkey = KEYS[1], KEYS[2], STK, LOGK
local attempt, outcome, reason, exp, margin = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local sample, rcpt, id, loglen, relay, meta = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]

local claim = redis.call('GET', ckey)
local t = redis.call('TIME')
{{clock}}
if outcome == 'retry' then
  -- This attempt's claim, with the ambiguous results before it: "<attempt>~<n>".
  local mine, amb = claim, 0
  if claim then
    local a, n = string.match(claim, '^(a:.*)~(%d+)$')
    if a then mine, amb = a, tonumber(n) end
  end
  if mine ~= attempt then return 'noop' end
  if reason == 'ambiguous' then amb = amb + 1 end
  if amb == 0 then
    redis.call('DEL', ckey)
  else
    -- Released, and the next attempt learns how many were ambiguous.
    local ttl = exp - NOW
    if ttl < 0 then ttl = 0 end
    redis.call('SET', ckey, 'm' .. amb, 'PX', ttl + margin)
  end
else
  -- Terminal states never change; an attempt's claim ("a:…") or a
  -- released one ("m<n>") does.
  local c = claim and string.sub(claim, 1, 1)
  if claim and string.sub(claim, 1, 2) ~= 'a:' and c ~= 'm' then return 'noop' end
  local ttl = exp - NOW
  if ttl < 0 then ttl = 0 end
  if outcome == 'sent' then
    -- The claim keeps what feedback on this email needs: the redemption
    -- bucket it counts in, the source and group (trust), the recipient
    -- log (a report suppresses it).
    local b = 0
    if RDB > 0 then
      b = math.floor(NOW / RDB)
      redis.call('HINCRBY', RK, b .. 's', 1)
      redis.call('PEXPIRE', RK, 3 * RDB + 2 * RDLAG + 60000)
      local grp = string.sub(meta, 10, 18)
      if grp == NOGROUP then grp = string.sub(meta, 1, 9) end
      redis.call('PFADD', RGPFX .. b, grp)
      redis.call('PEXPIRE', RGPFX .. b, 3 * RDB + 2 * RDLAG + 60000)
    end
    redis.call('SET', ckey, '1' .. string.format('%010d', b) .. meta, 'PX', ttl + margin)
  else
    local code = '2'
    if outcome == 'expired' then code = '3' end
    redis.call('SET', ckey, code, 'PX', ttl + margin)
  end
end
local field = KIND .. '|d:' .. outcome
if reason ~= '' then field = field .. ':' .. reason end
redis.call('HINCRBY', stkey, field, 1)
{{trace "'s' .. (NOW - TREPOCH) .. ' ' .. outcome .. ':' .. reason .. ' ' .. id" "TRTTL"}}
if outcome ~= 'sent' or sample == '1' then
  redis.call('XADD', logkey, 'MAXLEN', '~', loglen, '*', 'stage', 'settle', 'kind', KIND,
    'outcome', outcome, 'reason', reason, 'id', id, 'rcpt', rcpt)
end
if relay == '' then return 'recorded' end

{{lib}}
B = bparse(redis.call('GET', BK))
if not B then
  B = {st = 'c', rs = '-', idx = math.floor(NOW / W), prev = 0, prevf = 0, thr = 0, ceil = OFF, untl = 0, ai = 0,
    li = LANEMAXUS, op = 0, didx = math.floor(NOW / BUDP), dprev = 0, bud = OFF, fl = 0}
  dirty = true
end
btick()
local function count(fail)
  local r = redis.call('HMGET', IK, 'rc', 'ri', 'rf', 'ro', 'pf', 'po')
  local rc, ri, rf, ro = tonumber(r[1]) or 0, tonumber(r[2]) or 0, tonumber(r[3]) or 0, tonumber(r[4]) or 0
  local pf, po = tonumber(r[5]) or 0, tonumber(r[6]) or 0
  local nidx = math.floor(NOW / W)
  if nidx ~= ri then
    if nidx == ri + 1 then pf, po = rf, ro else pf, po = 0, 0 end
    ri, rf, ro = nidx, 0, 0
  end
  if fail then rc, rf = rc + 1, rf + 1 else rc, ro = 0, ro + 1 end
  redis.call('HSET', IK, 'rc', rc, 'ri', ri, 'rf', rf, 'ro', ro, 'pf', pf, 'po', po)
  if not fail then return false end
  if rc >= RF then return true end
  if RRAT > 0 then
    local frac = 1 - (NOW - nidx * W) / W
    local f, o = pf * frac + rf, po * frac + ro
    return f >= RF and f >= RRAT * (f + o)
  end
  return false
end
if relay == 'f' then
  if B.st == 'h' and B.rs == 'r' then
    bopen('r', true)
  elseif RF > 0 and B.st ~= 'o' and count(true) then
    bopen('r', B.st == 'h')
  end
else
  if B.st == 'h' and B.rs == 'r' then bclose('r') end
  if RF > 0 then count(false) end
end
return 'recorded' .. bsuffix()
