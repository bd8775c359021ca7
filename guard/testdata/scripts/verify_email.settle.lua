local KIND, TAG, LOGLEN = 'verify_email', '{fg}', '1'
local OFF, NONE, NOGROUP = 1e15, '{fg}:none', '\0\0\0\0\0\0\0\0\0'
local BPAT, BHEAD, BPREVF, BTAIL = '^(%a)(%S) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$', '^(%a)(%S) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)', '^%S+ %d+ %d+ %d+ %d+ %d+ %d+ %d+ (%d+)', ' (%d+) (%d+) (%d+) (%d+)$'
local W, FLOORC, FLOORR, SF, ALPHA = 60000, 60, 1, 5, 9.92063492063492e-05
local WARM, DAY, RISEW, RISED = 86400000, 86400000, 0.1, 2
local CEILC, CEILF, CEILMINC = 0, 10, 600
local BUDP, BUDC, BUDF, BUDMIN, BUDON = 86400000, 0, 3, 10000, true
local RR, RMINC, RSRC = 0.5, 30, 20
local RF, RRAT = 10, 0.9
local COOL, MAXCOOL, PROBE, MODE = 600000, 4800000, 1000000, 'hold'
local HOLDMAX, HOLDTTL, SWEEPMS = 100000, 86400000, 3600000
local LANEUS, LANEMAXUS, LANEF, RQAFTER, LANEB = 0, 1000000, 2, 60, 10
local RDB, RDLAG, RDMIN, RDSRC, RDNB = 600000, 600000, 20, 5, 6
local RDCOL, RDNEED, RDALPHA, RDFALL = 0.5, 0.05, 0.000992063492063492, 0.9992685973577815
local RPMIN, RPSRC, RPRAT, CLOSEF = 5, 3, 0.01, 2
local RGPFX, RPPFX = '{fg}:rg:verify_email:', '{fg}:rp:verify_email:'
local TRKEEP, TRMAX, TRTTL, TREPOCH = 2048, 4096, '86401000', 1577836800000
local TRNEW, TRNTTL, TBK = 1000, '86400000', '{fg}:tb:verify_email:'
local BK, IK, NK, FK, PK, SK, DK, RK, FSK, FRK = '{fg}:b:verify_email', '{fg}:bi:verify_email', '{fg}:bn:verify_email', '{fg}:bf:verify_email', '{fg}:bq:verify_email', '{fg}:bs:verify_email', '{fg}:bd:verify_email', '{fg}:rd:verify_email', '{fg}:bfs:verify_email', '{fg}:bfr:verify_email'
local HK, HRK, STK, LOGK, AK, KK = '{fg}:h:verify_email', '{fg}:hr:verify_email', '{fg}:stats', '{fg}:log', '{fg}:n:verify_email', '{fg}:kinds'
local LTK, LQK, LDK = '{fg}:blt:verify_email', '{fg}:blq:verify_email', '{fg}:bld:verify_email'
local B, NOW, NOWUS, CNT, DCNT
local dirty, trans = false, nil
-- Settle of one verify_email send attempt (see rkeys.SettleScript).
local ckey, tkey, stkey, logkey = KEYS[1], KEYS[2], STK, LOGK
local attempt, outcome, reason, exp, margin = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local sample, rcpt, id, loglen, relay, meta = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]

local claim = redis.call('GET', ckey)
local t = redis.call('TIME')
NOW = t[1] * 1000 + math.floor(t[2] / 1000)
NOWUS = (t[1] - 1577836800) * 1000000 + t[2]
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
do local e = '\n' .. 's' .. (NOW - TREPOCH) .. ' ' .. outcome .. ':' .. reason .. ' ' .. id
  if redis.call('APPEND', tkey, e) > TRMAX then
    redis.call('SET', tkey, redis.call('GETRANGE', tkey, -(TRKEEP + #e), -1), 'PX', TRTTL)
  else redis.call('PEXPIRE', tkey, TRTTL) end end
if outcome ~= 'sent' or sample == '1' then
  redis.call('XADD', logkey, 'MAXLEN', '~', loglen, '*', 'stage', 'settle', 'kind', KIND,
    'outcome', outcome, 'reason', reason, 'id', id, 'rcpt', rcpt)
end
if relay == '' then return 'recorded' end

-- The surge breaker's functions, shared by every script that moves a
-- breaker. Creating Lua closures costs more than the rest of a decision, so
-- scripts include this inside the block that needs it (a window's first
-- request, a trip, a breaker that is not closed, the admin operations), and
-- a decision on a closed breaker in the current window creates none.
--
-- The including script sets B (the state, see bparse), NOW (Redis ms),
-- NOWUS (µs since 2020-01-01) and CNT (the window's eligible count, when it
-- knows it). The kind's constants and fixed key names come from the
-- script's header (rkeys.BreakerConfig).

local STATES = {c = 'closed', o = 'open', h = 'half_open'}
local REASONS = {s = 'surge', f = 'refusals', r = 'relay', m = 'manual', c = 'ceiling', b = 'budget',
  x = 'redemption', p = 'reports'}
local BASE

-- bparse reads the state string:
-- "<st><rs> idx prev lim didx dprev bud fl prevf thr ceil untl ai li op"
-- (lim, the smaller of thr and ceil, is what a closed breaker's fast path
-- compares with; it is recomputed on every save).
local function bparse(s)
  if not s then return nil end
  local st, rs, idx, prev, _, didx, dprev, bud, fl, prevf, thr, ceil, untl, ai, li, op = string.match(s, BPAT)
  if st then
    return {st = st, rs = rs, idx = tonumber(idx), prev = tonumber(prev), prevf = tonumber(prevf),
      thr = tonumber(thr), ceil = tonumber(ceil), untl = tonumber(untl), ai = tonumber(ai), li = tonumber(li),
      op = tonumber(op), didx = tonumber(didx), dprev = tonumber(dprev), bud = tonumber(bud), fl = tonumber(fl)}
  end
  -- The shorter state of earlier versions keeps its state and counts; its
  -- ceilings are computed at the next window.
  local st2, rs2, idx2, prev2, prevf2, thr2, untl2, ai2 = string.match(s, '^(%a)(%S) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$')
  if not st2 then return nil end
  return {st = st2, rs = rs2, idx = tonumber(idx2), prev = tonumber(prev2), prevf = tonumber(prevf2),
    thr = tonumber(thr2), ceil = OFF, untl = tonumber(untl2), ai = tonumber(ai2), li = LANEMAXUS, op = NOW,
    didx = math.floor(NOW / BUDP), dprev = 0, bud = OFF, fl = 0}
end

local function bbase()
  if not BASE then BASE = tonumber(redis.call('HGET', IK, 'base')) or 0 end
  return BASE
end

-- bwarm reports whether the kind is still warming up: younger than WARM,
-- it learns but the surge trip does not fire (the ceilings do).
local function bwarm()
  if WARM <= 0 then return false end
  local born = tonumber(redis.call('HGET', IK, 'born')) or NOW
  return NOW - born < WARM
end

-- The surge threshold, requests per window (0: off).
local function bthr(base, warm)
  if SF <= 0 or warm then return 0 end
  local t = FLOORC
  if SF * base * W / 1000 > t then t = SF * base * W / 1000 end
  return math.ceil(t)
end

-- The rate ceiling, requests per window: fixed by the policy, or derived
-- from the baseline with a minimum.
local function bceil(base)
  if CEILC > 0 then return CEILC end
  if CEILF <= 0 then return OFF end
  local t = CEILMINC
  if CEILF * base * W / 1000 > t then t = CEILF * base * W / 1000 end
  return math.ceil(t)
end

-- The budget of new recipients per budget period, likewise.
local function bbud(base)
  if BUDC > 0 then return BUDC end
  if BUDF <= 0 then return OFF end
  local t = BUDMIN
  if BUDF * base * BUDP / 1000 > t then t = BUDF * base * BUDP / 1000 end
  return math.ceil(t)
end

-- The interval (µs) of each lane of an open breaker: fixed, or LANEF times
-- the baseline, never slower than LANEMAXUS.
local function blane(base)
  if LANEUS > 0 then return LANEUS end
  local i = LANEMAXUS
  if LANEF > 0 and base > 0 and 1000000 / (LANEF * base) < i then i = math.floor(1000000 / (LANEF * base)) end
  if i < 1 then i = 1 end
  return i
end

-- The interval between emails an open clamp lets through: the baseline
-- rate, never slower than the probe rate.
local function bclamp(base)
  if base > 0 then
    local i = math.floor(1000000 / base)
    if i < 1 then i = 1 end
    if i < PROBE then return i end
  end
  return PROBE
end

local function bcool(lvl)
  local c = COOL * 2 ^ lvl
  if c > MAXCOOL then c = MAXCOOL end
  return c
end

-- Eligible requests per second over the last window. cnt is the current
-- window's count when known; B may be stale (dispatch and settle do not
-- roll windows over).
local function brate(cnt)
  local nidx = math.floor(NOW / W)
  if cnt == nil then cnt = tonumber(redis.call('GET', NK)) or 0 end
  local prev = B.prev
  if nidx == B.idx + 1 then prev, cnt = cnt, 0 elseif nidx ~= B.idx then prev, cnt = 0, 0 end
  return (prev * (1 - (NOW - nidx * W) / W) + cnt) * 1000 / W
end

local function btrans(from, rc, lvl)
  dirty = true
  if lvl == nil then lvl = tonumber(redis.call('HGET', IK, 'lvl')) or 0 end
  trans = trans or {}
  trans[#trans + 1] = string.format('%s,%s,%s,%.3f,%.6f,%d,%d,%d', STATES[from], STATES[B.st], REASONS[rc] or '',
    brate(CNT), bbase(), NOW, B.untl, lvl)
end

-- bopen opens the breaker for reason rc. The cooldown doubles (up to
-- MAXCOOL) when it re-opens from half-open or trips again within one
-- cooldown of closing, so a square-wave load cannot make it cycle faster
-- than the cooldown; a manual trip does not end by time.
local function bopen(rc, fromhalf, manual)
  local from = B.st
  local info = redis.call('HMGET', IK, 'lvl', 'closed')
  local lvl = tonumber(info[1]) or 0
  if manual then
    B.untl = 0
  else
    if fromhalf then
      lvl = lvl + 1
    elseif from == 'c' then
      local closed = tonumber(info[2]) or 0
      if closed > 0 and NOW - closed < bcool(lvl) then lvl = lvl + 1 else lvl = 0 end
    end
    if lvl > 16 then lvl = 16 end
    B.untl = NOW + bcool(lvl)
  end
  B.st, B.rs, B.ai = 'o', rc, 0
  B.li = blane(bbase())
  if rc ~= 'r' and MODE == 'clamp' then B.ai = bclamp(bbase()) end
  if from == 'c' then B.op = NOW end
  if from == 'o' then
    redis.call('HSET', IK, 'reason', REASONS[rc], 'lvl', lvl)
  else
    redis.call('HSET', IK, 'reason', REASONS[rc], 'since', NOW, 'opened', NOW, 'lvl', lvl)
  end
  btrans(from, rc, lvl)
end

-- bhalf lets probes through. A relay breaker closes on the first relay
-- success and re-opens on a failure; the others are judged one window
-- later, on a count that starts afresh, so the surge that opened the
-- breaker is not held against it.
local function bhalf()
  B.st = 'h'
  if B.rs == 'r' then
    B.untl, B.ai = 0, PROBE
  else
    B.untl, B.ai = NOW + W, PROBE
    if MODE == 'clamp' then B.ai = bclamp(bbase()) end
    B.prev, B.prevf, CNT = 0, 0, 0
    redis.call('SET', NK, 0, 'PX', 2 * W + 1000)
    redis.call('DEL', FK, FSK, FRK)
  end
  -- Each half-open period starts with a probe.
  redis.call('DEL', PK, SK)
  redis.call('HSET', IK, 'since', NOW)
  btrans('o', B.rs)
end

local function bclose(rc)
  local from = B.st
  B.st, B.rs, B.untl, B.ai = 'c', '-', 0, 0
  redis.call('HSET', IK, 'reason', '', 'since', NOW, 'closed', NOW)
  btrans(from, rc)
end

-- bstill reports, at the end of a half-open window, whether what opened
-- the breaker persists for the trips that are not judged by a rate
-- crossing: unredeemed or reported mail (the excess over the baseline that
-- made redemption collapse) and the budget of new recipients.
local function bstill()
  if B.rs == 'x' or B.rs == 'p' then
    return brate(CNT) > CLOSEF * bbase()
  elseif B.rs == 'b' then
    local dc = tonumber(redis.call('GET', DK)) or 0
    return B.dprev * (1 - (NOW - B.didx * BUDP) / BUDP) + dc >= B.bud
  end
  return false
end

local function btick()
  if B.st == 'o' and B.untl > 0 and NOW >= B.untl then bhalf() end
  if B.st == 'h' and B.untl > 0 and NOW >= B.untl then
    if bstill() then bopen(B.rs, true) else bclose(B.rs) end
  end
end

-- blearn feeds a finished window's count into the baseline. The window's
-- rate is clipped at the surge threshold (while warming up, the ceiling),
-- so an attack is not learned, into an average over the learning horizon
-- ("cand"; a plain mean while younger than the horizon); the baseline
-- follows it no faster than RISEW a window (of the baseline or the floor
-- rate, whichever is more) and RISED a day (of the baseline at the day's
-- start, or the floor rate), so that an attack ramping under the
-- threshold cannot drag it up.
local function blearn(cnt, gap)
  local r = redis.call('HMGET', IK, 'cand', 'base', 'n', 'anc', 'ad')
  local base = tonumber(r[2]) or 0
  local cand, n = tonumber(r[1]) or base, tonumber(r[3]) or 0
  local anc, ad = tonumber(r[4]) or 0, tonumber(r[5]) or -1
  local day = math.floor(NOW / DAY)
  if day ~= ad then anc, ad = base, day end
  local rate, lim = cnt * 1000 / W, B.thr
  if lim <= 0 then lim = B.ceil end
  if lim * 1000 / W < rate then rate = lim * 1000 / W end
  local a = ALPHA
  if n + 1 < 1 / ALPHA then a = 1 / (n + 1) end
  cand = cand + a * (rate - cand)
  if gap > 1 then cand = cand * (1 - a) ^ (gap - 1) end
  local nb = cand
  local wcap = base + RISEW * math.max(base, FLOORR)
  if nb > wcap then nb = wcap end
  local dcap = math.max(anc, FLOORR) * RISED
  if nb > dcap then nb = dcap end
  BASE = nb
  redis.call('HSET', IK, 'cand', string.format('%.6g', cand), 'base', string.format('%.6g', nb), 'n', n + gap,
    'anc', string.format('%.6g', anc), 'ad', ad)
end

-- bredeem judges the newest redemption bucket that has matured (RDLAG
-- after its end, time for most links to be used): the share of its sent
-- emails that were confirmed, against the share learned from earlier
-- buckets. A collapse, from at least RDSRC source groups, trips the breaker
-- (reason redemption); otherwise a closed breaker learns from it, an
-- average while young, then over the horizon, falling no faster than
-- RDFALL a bucket. Sets flag 2 of B.fl while the learned share is
-- established (the application confirms).
local function bredeem()
  local mb = math.floor((NOW - RDLAG) / RDB) - 1
  local r = redis.call('HMGET', IK, 'rb', 'rr', 'rn')
  local last, rr, rn = tonumber(r[1]), tonumber(r[2]) or 0, tonumber(r[3]) or 0
  if last == nil then last = mb - 1 end
  if mb > last then
    local f = redis.call('HMGET', RK, mb .. 's', mb .. 'c')
    local sends, conf = tonumber(f[1]) or 0, tonumber(f[2]) or 0
    if sends >= RDMIN then
      local ratio = conf / sends
      if rr >= RDNEED and rn >= RDNB and B.st == 'c' and ratio < RDCOL * rr
        and redis.call('PFCOUNT', RGPFX .. mb) >= RDSRC then
        bopen('x', false)
      elseif B.st == 'c' then
        local a = RDALPHA
        if rn + 1 < 1 / RDALPHA then a = 1 / (rn + 1) end
        local nr = rr + a * (ratio - rr)
        if rn >= RDNB and nr < rr * RDFALL then nr = rr * RDFALL end
        rr, rn = nr, rn + 1
      end
    end
    local from = last - 1
    if from < mb - 12 then from = mb - 12 end
    for ob = from, mb - 2 do
      redis.call('HDEL', RK, ob .. 's', ob .. 'c', ob .. 'p')
      redis.call('DEL', RGPFX .. ob, RPPFX .. ob)
    end
    redis.call('HSET', IK, 'rb', mb, 'rr', string.format('%.6g', rr), 'rn', rn)
  end
  if rr >= RDNEED and rn >= RDNB then B.fl = B.fl + 2 end
end

-- broll starts window nidx (creating B if needed): cnt is the eligible
-- count of window B.idx, cntnew the count the new window starts with (CNT
-- becomes it). The finished window feeds the baseline unless the breaker
-- is open for a reason that says the traffic is not organic; the budget
-- period rolls over with its window; the thresholds, ceilings and budget
-- are recomputed; matured redemption buckets are judged.
local function broll(nidx, cnt, cntnew)
  if B then
    if nidx <= B.idx then return end
    local gap = nidx - B.idx
    local cntf = tonumber(redis.call('GET', FK)) or 0
    if B.st == 'c' or B.rs == 's' or B.rs == 'c' or B.rs == 'b' or B.rs == 'r' then blearn(cnt, gap) end
    if gap == 1 then B.prev, B.prevf = cnt, cntf else B.prev, B.prevf = 0, 0 end
    B.idx = nidx
  else
    B = {st = 'c', rs = '-', idx = nidx, prev = 0, prevf = 0, thr = 0, ceil = OFF, untl = 0, ai = 0, li = LANEMAXUS,
      op = 0, didx = math.floor(NOW / BUDP), dprev = 0, bud = OFF, fl = 0}
    redis.call('HSETNX', IK, 'born', NOW)
  end
  local didx = math.floor(NOW / BUDP)
  if didx ~= B.didx then
    if didx == B.didx + 1 then B.dprev = tonumber(redis.call('GET', DK)) or 0 else B.dprev = 0 end
    B.didx = didx
    redis.call('SET', DK, 0, 'PX', 2 * BUDP + 1000)
    DCNT = nil
  end
  local base, warm = bbase(), bwarm()
  B.thr, B.ceil, B.bud, B.fl = bthr(base, warm), bceil(base), bbud(base), 0
  if warm then B.fl = 1 end
  redis.call('SET', NK, cntnew, 'PX', 2 * W + 1000)
  redis.call('DEL', FK, FSK, FRK)
  CNT = cntnew
  if RDB > 0 then bredeem() end
  dirty = true
end

-- bpace reports whether an email may pass a pacing key at one per interval
-- µs, and how long until it may; take consumes the slot.
local function bpace(key, interval, take)
  local tat = tonumber(redis.call('GET', key)) or NOWUS
  if tat > NOWUS then return false, tat - NOWUS end
  if take then redis.call('SET', key, string.format('%d', NOWUS + interval), 'PX', math.ceil(interval / 1000) + 1) end
  return true, 0
end

-- bsuffix saves B when it changed and returns the breaker suffix.
local function bsuffix()
  if not B then return '' end
  if dirty then
    local lim = B.ceil
    if B.thr > 0 and B.thr < lim then lim = B.thr end
    redis.call('SET', BK, string.format('%s%s %d %d %d %d %d %d %d %d %d %d %d %d %d %d', B.st, B.rs, B.idx, B.prev,
      lim, B.didx, B.dprev, B.bud, B.fl, B.prevf, B.thr, B.ceil, B.untl, B.ai, B.li, B.op))
    dirty = false
  end
  if B.st == 'c' and not trans then return '' end
  local s = '|' .. B.st .. B.rs
  if trans then s = s .. '|' .. table.concat(trans, '|') end
  return s
end

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
