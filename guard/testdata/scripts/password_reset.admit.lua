local KIND, TAG, LOGLEN = 'password_reset', '{fg}', '10000'
local OFF, NONE, NOGROUP = 1e15, '{fg}:none', '\0\0\0\0\0\0\0\0\0'
local BPAT, BHEAD, BPREVF, BTAIL = '^(%a)(%S) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$', '^(%a)(%S) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)', '^%S+ %d+ %d+ %d+ %d+ %d+ %d+ %d+ (%d+)', ' (%d+) (%d+) (%d+) (%d+)$'
local W, FLOORC, FLOORR, SF, ALPHA = 60000, 60, 1, 5, 9.92063492063492e-05
local WARM, DAY, RISEW, RISED = 86400000, 86400000, 0.1, 2
local CEILC, CEILF, CEILMINC = 0, 10, 600
local BUDP, BUDC, BUDF, BUDMIN, BUDON = 86400000, 0, 3, 10000, true
local RR, RMINC, RSRC = 0.5, 30, 20
local RF, RRAT = 10, 0.9
local COOL, MAXCOOL, PROBE, MODE = 600000, 4800000, 1000000, 'hold'
local HOLDMAX, HOLDTTL, SWEEPMS = 100000, 1800000, 3600000
local LANEUS, LANEMAXUS, LANEF, RQAFTER, LANEB = 0, 1000000, 2, 60, 10
local RDB, RDLAG, RDMIN, RDSRC, RDNB = 600000, 600000, 20, 5, 6
local RDCOL, RDNEED, RDALPHA, RDFALL = 0.5, 0.05, 0.000992063492063492, 0.9992685973577815
local RPMIN, RPSRC, RPRAT, CLOSEF = 5, 3, 0.01, 2
local RGPFX, RPPFX = '{fg}:rg:password_reset:', '{fg}:rp:password_reset:'
local TRKEEP, TRMAX, TRTTL, TREPOCH = 2048, 4096, '86401000', 1577836800000
local TRNEW, TRNTTL, TBK = 1000, '3600000', '{fg}:tb:password_reset:'
local BK, IK, NK, FK, PK, SK, DK, RK, FSK, FRK = '{fg}:b:password_reset', '{fg}:bi:password_reset', '{fg}:bn:password_reset', '{fg}:bf:password_reset', '{fg}:bq:password_reset', '{fg}:bs:password_reset', '{fg}:bd:password_reset', '{fg}:rd:password_reset', '{fg}:bfs:password_reset', '{fg}:bfr:password_reset'
local HK, HRK, STK, LOGK, AK, KK = '{fg}:h:password_reset', '{fg}:hr:password_reset', '{fg}:stats', '{fg}:log', '{fg}:n:password_reset', '{fg}:kinds'
local LTK, LQK, LDK = '{fg}:blt:password_reset', '{fg}:blq:password_reset', '{fg}:bld:password_reset'
local B, NOW, NOWUS, CNT, DCNT
local dirty, trans = false, nil
-- Admission of one password_reset email: suppression, dedup window, every
-- per-recipient, per-source and per-source-group window, the source's
-- redemption record, then the kind's breaker (see rkeys.AdmitScript).
local rkey, skey, ukey, tkey = KEYS[1], KEYS[2], KEYS[3], KEYS[7]
local hkey, stkey, logkey, akey, kkey, qkey = HK, STK, LOGK, AK, KK, PK
local tag, id, payload, sample, rcpt, trust, who, narrow = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]

-- 48-bit big-endian times in plain Lua (no struct library, which
-- miniredis, the -dev mode's Redis, does not have).
local function u48(s, i)
  local a, b, c, d, e, f = string.byte(s, i, i + 5)
  return ((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + f
end
local function p48(n)
  local f = n % 256; n = (n - f) / 256
  local e = n % 256; n = (n - e) / 256
  local d = n % 256; n = (n - d) / 256
  local c = n % 256; n = (n - c) / 256
  local b = n % 256; n = (n - b) / 256
  return string.char(n, b, c, d, e, f)
end

local cur = redis.call('MGET', rkey, skey, BK, ukey, NK, KEYS[4], KEYS[5], KEYS[6])
local rlog, slog = cur[1] or '', cur[2] or ''
local glog4 = cur[6] or ''
local glog5 = cur[7] or ''
local glog6 = cur[8] or ''
-- The held marker and the trust keys, which only an open breaker reads
-- (open.lua names them then): building them costs every decision.
local hmkey, tskey, tgkey
-- A re-sent script finds its own admission in the recipient log.
local p = string.find(rlog, tag, 1, true)
while p do
  if (p - 1) % 19 == 0 then return 'queued:replay' .. ((string.sub(cur[3] or 'c', 1, 1) == 'o' or string.sub(cur[3] or 'c', 1, 1) == 'h') and '|' .. string.sub(cur[3], 1, 2) or '') end
  p = string.find(rlog, tag, p + 1, true)
end

local t = redis.call('TIME')
NOW = t[1] * 1000 + math.floor(t[2] / 1000)
NOWUS = (t[1] - 1577836800) * 1000000 + t[2]
local now = NOW
local nows = t[1] - 1577836800
local outcome, reason = nil, ''
-- A recipient who reported an email of this kind: "S<until>".
if string.byte(rlog, 1) == 83 then
  if tonumber(string.sub(rlog, 2)) > nows then outcome, reason = 'suppressed', 'reported' end
  rlog = ''
end
-- The closed breaker's fast path needs only the state's head.
local bst, brs, bidx, bprev, blim, bdidx, bdprev, bbud, bfl = string.match(cur[3] or '', BHEAD)
-- The n-th newest recipient admission's time is string.sub(rlog, 19n-9, 19n).
if outcome then
elseif cur[4] then
  outcome = 'suppressed'
elseif #rlog >= 19 and nows - tonumber(string.sub(rlog, 10, 19)) <= 120
  and not (bst == 'o' and redis.call('EXISTS', TAG .. 'H' .. string.sub(rkey, 6)) == 1) then
  -- (An email admitted before the trip and held at dispatch leaves its
  -- admission in the window: the open breaker's lanes judge the re-request.)
  outcome = 'duplicate'
elseif #rlog >= 57 and nows - tonumber(string.sub(rlog, 48, 57)) <= 3600 then
  outcome, reason = 'capped', 'recipient'
elseif #rlog >= 190 and nows - tonumber(string.sub(rlog, 181, 190)) <= 86400 then
  outcome, reason = 'capped', 'recipient'
elseif #slog >= 120 and now - u48(slog, 115) < 3600000 then
  outcome, reason = 'capped', 'source'
elseif #glog4 >= 360 and now - u48(glog4, 355) < 3600000 then
  outcome, reason = 'capped', 'group'
elseif #glog5 >= 120 and now - u48(glog5, 115) < 3600000 then
  outcome, reason = 'capped', 'group'
elseif #glog6 >= 360 and now - u48(glog6, 355) < 3600000 then
  outcome, reason = 'capped', 'group'
elseif bfl and tonumber(bfl) >= 2 and #slog >= 30 and now - u48(slog, 25) >= RDLAG
  and not redis.call('GET', TAG .. 'T' .. string.sub(skey, 6)) then
  -- The application confirms this kind's links, and none of this
  -- source's last 5 emails was redeemed: its cap shrinks to them.
  outcome, reason = 'capped', 'unredeemed'
end

-- The breaker. Only requests that passed the caps (eligible) count towards
-- its rate, so one source cannot move it beyond its own caps; requests
-- refused by caps count towards the refusal trip, which also needs many
-- distinct sources and recipients. Two cases need no breaker functions: a
-- closed breaker in the same window that does not trip, and an open one
-- (not for the relay) in the same window whose cooldown runs.
local nidx = math.floor(now / W)
local frac = 1 - (now - nidx * W) / W
-- Duplicates are not refusals here: they send nothing, and users who ask
-- again while their mail is slow make them from many sources.
local refused = outcome == 'capped'
local eligible = outcome == nil
local isnew = eligible and rlog == ''
local fast = bst ~= nil and tonumber(bidx) == nidx
local cf, lane
local sfx = ''
if eligible then CNT = redis.call('INCR', NK) end
if refused then
  cf = redis.call('INCR', FK)
  if cf == 1 then redis.call('PEXPIRE', FK, 2 * W + 1000) end
  redis.call('PFADD', FSK, who)
  redis.call('PFADD', FRK, rkey)
  if fast and bst == 'c' then
    local bprevf = tonumber(string.match(cur[3], BPREVF))
    local tot = (tonumber(bprev) + bprevf) * frac + (tonumber(cur[5]) or 0) + cf
    if tot >= RMINC and bprevf * frac + cf >= RR * tot then fast = false end
  end
  if fast and bst ~= 'c' then sfx = '|' .. bst .. brs end
elseif not eligible then
  -- Suppressed: nothing for the breaker to count.
  fast, sfx = true, ((string.sub(cur[3] or 'c', 1, 1) == 'o' or string.sub(cur[3] or 'c', 1, 1) == 'h') and '|' .. string.sub(cur[3], 1, 2) or '')
elseif fast and bst == 'c' then
  if tonumber(bprev) * frac + CNT > tonumber(blim) then fast = false end
  if fast and isnew and BUDON then
    DCNT = redis.call('INCR', DK)
    if tonumber(bdprev) * (1 - (now - tonumber(bdidx) * BUDP) / BUDP) + DCNT > tonumber(bbud) then fast = false end
  end
elseif fast and bst == 'o' and brs ~= 'r' then
  local buntl, bai, bli, bop = string.match(cur[3], BTAIL)
  if buntl == '0' or now < tonumber(buntl) then
  -- Open or half-open: lanes first, for what an attack cannot produce in
  -- bulk, each paced on its own; then probes (half-open) or the clamp;
  -- then the mode.
  hmkey, tskey, tgkey = TAG .. 'H' .. string.sub(rkey, 6), TAG .. 'T' .. string.sub(skey, 6), NONE
  if narrow ~= '0' then tgkey = TAG .. 'U' .. string.sub(KEYS[tonumber(narrow)], 6) end
  local o2 = redis.call('MGET', hmkey, tskey, tgkey)
  local hm, li = o2[1], tonumber(bli)
  -- A lane is a GCRA of interval li that lets LANEB emails through back to
  -- back: users arrive at random, and a strict spacing would refuse one
  -- whose neighbour passed a moment before.
  local function lanepass(k)
    local lt = math.max(tonumber(redis.call('GET', k)) or NOWUS, NOWUS)
    if lt - NOWUS > (LANEB - 1) * li then return false end
    redis.call('SET', k, string.format('%d', lt + li), 'PX', math.ceil((lt + li - NOWUS) / 1000) + 1)
    return true
  end
  if redis.call('HEXISTS', hkey, id) == 1 then outcome, reason = 'held', 'replay' end
  if not outcome and trust ~= '' then
    if lanepass(LTK) then
      lane = 'trusted'
    end
  end
  -- Sources (or their group) whose emails were redeemed before it opened.
  if not outcome and not lane and ((o2[2] and tonumber(o2[2]) <= tonumber(bop)) or (o2[3] and tonumber(o2[3]) <= tonumber(bop))) then
    if lanepass(LDK) then
      lane = 'redeemed'
    end
  end
  if not outcome and not lane and hm then
    -- An email to this recipient is held: a real user whose email did not
    -- arrive asks again; an attack on distinct victims asks once each.
    -- A source that asked for many recipients is an attack's, not a user's
    -- asking again: neither the lane nor a release takes its re-request.
    local again = nows - tonumber(string.match(hm, '^%d+')) >= RQAFTER and (#slog < 30 or now - u48(slog, 25) >= 3600000)
    if again then
      if lanepass(LQK) then
        lane = 'rerequest'
      end
    end
    if not lane then
      outcome, reason = 'duplicate', 'held'
      if again and string.sub(hm, -1) ~= 'r' then redis.call('SET', hmkey, hm .. 'r', 'KEEPTTL') end
    end
  end
  if lane then
    if hm then redis.call('DEL', hmkey) end
  elseif not outcome then
    local iv, pass = tonumber(bai), false
    if iv > 0 then
      local ptat = tonumber(redis.call('GET', qkey)) or NOWUS
      if ptat <= NOWUS then
        redis.call('SET', qkey, string.format('%d', NOWUS + iv), 'PX', math.ceil(iv / 1000) + 1)
        pass = true
      end
    end
    if pass then
      reason = 'clamp'
      if bst == 'h' then reason = 'probe' end
    elseif redis.call('HLEN', hkey) < HOLDMAX then
      redis.call('HSET', hkey, id, 'a' .. (NOW + HOLDTTL) .. ' ' .. payload)
      redis.call('PEXPIRE', hkey, HOLDTTL + SWEEPMS)
      redis.call('SET', hmkey, nows, 'PX', HOLDTTL)
      outcome, reason = 'held', 'breaker'
    else
      redis.call('SET', hmkey, nows, 'NX', 'PX', HOLDTTL)
      outcome, reason = 'shed', 'hold_full'
    end
  end

    sfx = '|' .. bst .. brs
  else
    fast = false
  end
else
  fast = false
end
if not fast then
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

B = bparse(cur[3])
if not B or B.idx ~= nidx then
  if eligible then broll(nidx, CNT - 1, 1) else broll(nidx, tonumber(cur[5]) or 0, 0) end
end
if B.st ~= 'c' then btick() end
local free = B.st ~= 'o' or B.rs == 'r'
if eligible and free then
  local est = B.prev * frac + CNT
  if B.thr > 0 and est > B.thr then
    bopen('s', B.st == 'h')
  elseif est > B.ceil then
    bopen('c', B.st == 'h')
  elseif isnew then
    DCNT = DCNT or redis.call('INCR', DK)
    if B.dprev * (1 - (NOW - B.didx * BUDP) / BUDP) + DCNT > B.bud then bopen('b', B.st == 'h') end
  end
end
if refused and free then
  if not cf then
    cf = redis.call('INCR', FK)
    if cf == 1 then redis.call('PEXPIRE', FK, 2 * W + 1000) end
  end
  local tot = (B.prev + B.prevf) * frac + (CNT or tonumber(cur[5]) or 0) + cf
  if tot >= RMINC and B.prevf * frac + cf >= RR * tot and redis.call('PFCOUNT', FSK) >= RSRC
    and redis.call('PFCOUNT', FRK) >= RSRC then
    bopen('f', B.st == 'h')
  end
end
if eligible and B.st ~= 'c' and B.rs ~= 'r' then
  -- Open or half-open: lanes first, for what an attack cannot produce in
  -- bulk, each paced on its own; then probes (half-open) or the clamp;
  -- then the mode.
  hmkey, tskey, tgkey = TAG .. 'H' .. string.sub(rkey, 6), TAG .. 'T' .. string.sub(skey, 6), NONE
  if narrow ~= '0' then tgkey = TAG .. 'U' .. string.sub(KEYS[tonumber(narrow)], 6) end
  local o2 = redis.call('MGET', hmkey, tskey, tgkey)
  local hm, li = o2[1], B.li
  -- A lane is a GCRA of interval li that lets LANEB emails through back to
  -- back: users arrive at random, and a strict spacing would refuse one
  -- whose neighbour passed a moment before.
  local function lanepass(k)
    local lt = math.max(tonumber(redis.call('GET', k)) or NOWUS, NOWUS)
    if lt - NOWUS > (LANEB - 1) * li then return false end
    redis.call('SET', k, string.format('%d', lt + li), 'PX', math.ceil((lt + li - NOWUS) / 1000) + 1)
    return true
  end
  if redis.call('HEXISTS', hkey, id) == 1 then outcome, reason = 'held', 'replay' end
  if not outcome and trust ~= '' then
    if lanepass(LTK) then
      lane = 'trusted'
    end
  end
  -- Sources (or their group) whose emails were redeemed before it opened.
  if not outcome and not lane and ((o2[2] and tonumber(o2[2]) <= B.op) or (o2[3] and tonumber(o2[3]) <= B.op)) then
    if lanepass(LDK) then
      lane = 'redeemed'
    end
  end
  if not outcome and not lane and hm then
    -- An email to this recipient is held: a real user whose email did not
    -- arrive asks again; an attack on distinct victims asks once each.
    -- A source that asked for many recipients is an attack's, not a user's
    -- asking again: neither the lane nor a release takes its re-request.
    local again = nows - tonumber(string.match(hm, '^%d+')) >= RQAFTER and (#slog < 30 or now - u48(slog, 25) >= 3600000)
    if again then
      if lanepass(LQK) then
        lane = 'rerequest'
      end
    end
    if not lane then
      outcome, reason = 'duplicate', 'held'
      if again and string.sub(hm, -1) ~= 'r' then redis.call('SET', hmkey, hm .. 'r', 'KEEPTTL') end
    end
  end
  if lane then
    if hm then redis.call('DEL', hmkey) end
  elseif not outcome then
    local iv, pass = B.ai, false
    if iv > 0 then
      local ptat = tonumber(redis.call('GET', qkey)) or NOWUS
      if ptat <= NOWUS then
        redis.call('SET', qkey, string.format('%d', NOWUS + iv), 'PX', math.ceil(iv / 1000) + 1)
        pass = true
      end
    end
    if pass then
      reason = 'clamp'
      if B.st == 'h' then reason = 'probe' end
    elseif redis.call('HLEN', hkey) < HOLDMAX then
      redis.call('HSET', hkey, id, 'a' .. (NOW + HOLDTTL) .. ' ' .. payload)
      redis.call('PEXPIRE', hkey, HOLDTTL + SWEEPMS)
      redis.call('SET', hmkey, nows, 'PX', HOLDTTL)
      outcome, reason = 'held', 'breaker'
    else
      redis.call('SET', hmkey, nows, 'NX', 'PX', HOLDTTL)
      outcome, reason = 'shed', 'hold_full'
    end
  end

end
sfx = bsuffix()
end

local field
if not outcome then
  outcome = 'queued'
  redis.call('SET', rkey, tag .. string.format('%010d', nows) .. string.sub(rlog, 1, 171), 'PX', '86401000')
  if lane then
    redis.call('HINCRBY', stkey, KIND .. '|l:' .. lane, 1)
    reason = lane
    if isnew and not DCNT then redis.call('INCR', DK) end
  end
  if redis.call('INCR', akey) == 1 then redis.call('SADD', kkey, KIND) end
elseif reason ~= 'replay' then
  field = KIND .. '|a:' .. outcome
  if reason ~= '' then field = field .. ':' .. reason end
  redis.call('HINCRBY', stkey, field, 1)
end
-- Everything that passed the caps uses its source's quota, held and shed
-- alike, so one source cannot park more than its cap. (TTLs are string
-- literals here: Redis formats a Lua number argument with sprintf.)
if eligible and reason ~= 'replay' then
  redis.call('SET', skey, p48(now) .. string.sub(slog, 1, 114), 'PX', '3600000')
  if KEYS[4] ~= NONE then
    redis.call('SET', KEYS[4], p48(now) .. string.sub(glog4, 1, 354), 'PX', '3600000')
  end
  if KEYS[5] ~= NONE then
    redis.call('SET', KEYS[5], p48(now) .. string.sub(glog5, 1, 114), 'PX', '3600000')
  end
  if KEYS[6] ~= NONE then
    redis.call('SET', KEYS[6], p48(now) .. string.sub(glog6, 1, 354), 'PX', '3600000')
  end
end
-- The recipient's trace: every decision but a plain admission, which the
-- recipient log records already (unless caps key on an account). An entry
-- names the newest admission before it, so that a reader can interleave
-- the two.
if reason ~= 'replay' and (outcome ~= 'queued' or reason ~= '' or string.sub(tkey, 6) ~= string.sub(rkey, 6)) then
  local ttl = TRTTL
  if rlog == '' and outcome ~= 'queued' and redis.call('EXISTS', tkey) == 0 then
    -- A refusal about a recipient with no history: an enumeration makes
    -- one per victim, so only TRNEW such traces a minute are begun, each
    -- living as long as the source windows and held emails it explains.
    ttl = TRNTTL
    local bk = TBK .. math.floor(NOW / 60000)
    local n = redis.call('INCR', bk)
    if n == 1 then redis.call('PEXPIRE', bk, 120000) end
    if n > TRNEW then
      ttl = nil
      redis.call('HINCRBY', stkey, KIND .. '|t:skipped', 1)
    end
  end
  if ttl then
    local after = '-'
    if #rlog >= 19 then after = string.sub(rlog, 1, 9) end
    do local e = '\n' .. 'a' .. (NOW - TREPOCH) .. ' ' .. outcome .. ':' .. reason .. ' ' .. after .. ' ' .. id
  if redis.call('APPEND', tkey, e) > TRMAX then
    redis.call('SET', tkey, redis.call('GETRANGE', tkey, -(TRKEEP + #e), -1), 'PX', ttl)
  else redis.call('PEXPIRE', tkey, ttl) end end
  end
end
if (outcome ~= 'queued' and reason ~= 'replay') or sample == '1' then
  redis.call('XADD', logkey, 'MAXLEN', '~', LOGLEN, '*', 'stage', 'admit', 'kind', KIND,
    'outcome', outcome, 'reason', reason, 'id', id, 'rcpt', rcpt)
end
return outcome .. ':' .. reason .. sfx
