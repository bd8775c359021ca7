local KIND, TAG, LOGLEN = 'notification', '{fg}', '10000'
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
-- One held notification email for a release, a dry run or a purge (see
-- rkeys.ReleaseScript).
local rkey, ukey, ckey, skey, gkey, tkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local hkey, hrkey, stkey, logkey, akey, kkey = HK, HRK, STK, LOGK, AK, KK
local hmkey, tskey, tgkey = TAG .. 'H' .. string.sub(rkey, 6), TAG .. 'T' .. string.sub(skey, 6), NONE
if gkey ~= NONE then tgkey = TAG .. 'U' .. string.sub(gkey, 6) end
local tag, id, op, rcpt, trust = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local v = redis.call('HGET', hkey, id)
if not v then return 'gone:' end
local at = string.sub(v, 1, 1)
local e, payload = string.match(v, '^[ad](%d+) (.*)$')
local exp = tonumber(e)
if not exp then payload = string.sub(v, 2) end
if at ~= 'a' and at ~= 'd' then at, payload = 'a', v end

local t = redis.call('TIME')
NOW = t[1] * 1000 + math.floor(t[2] / 1000)
NOWUS = (t[1] - 1577836800) * 1000000 + t[2]
local nows = t[1] - 1577836800
-- The recipient's trace (none for a payload that cannot be opened).
local function trace(outcome, reason)
  if tkey == NONE then return end
  do local e = '\n' .. 'r' .. (NOW - TREPOCH) .. ' ' .. outcome .. ':' .. reason .. ' ' .. id
  if redis.call('APPEND', tkey, e) > TRMAX then
    redis.call('SET', tkey, redis.call('GETRANGE', tkey, -(TRKEEP + #e), -1), 'PX', TRTTL)
  else redis.call('PEXPIRE', tkey, TRTTL) end end
end
local function refuse(outcome, reason)
  trace(outcome, reason)
  redis.call('HDEL', hkey, id)
  redis.call('HINCRBY', stkey, KIND .. '|' .. at .. ':held:breaker', -1)
  local field = KIND .. '|' .. at .. ':' .. outcome
  if reason ~= '' then field = field .. ':' .. reason end
  redis.call('HINCRBY', stkey, field, 1)
  redis.call('XADD', logkey, 'MAXLEN', '~', LOGLEN, '*', 'stage', 'release', 'kind', KIND,
    'outcome', outcome, 'reason', reason, 'id', id, 'rcpt', rcpt)
  return outcome .. ':' .. reason
end
if op == 'purge' then return refuse('shed', 'purged') end
if op == 'invalid' then return refuse('failed', 'payload') end

local o = redis.call('MGET', hmkey, tskey, tgkey, rkey, ukey)
local rlog = o[4] or ''
local sup = o[5] ~= false and o[5] ~= nil
if string.byte(rlog, 1) == 83 then
  if tonumber(string.sub(rlog, 2)) > nows then sup = true end
  rlog = ''
end
-- The lane the email would pass now: trusted, a source (or group) that
-- earned trust before the breaker opened, or a recipient who asked again.
local opened = tonumber(redis.call('HGET', IK, 'opened')) or NOW
local lane = ''
if trust ~= '' then
  lane = 'trusted'
elseif (o[2] and tonumber(o[2]) <= opened) or (o[3] and tonumber(o[3]) <= opened) then
  lane = 'redeemed'
elseif o[1] and string.sub(o[1], -1) == 'r' then
  lane = 'rerequest'
end
local expired = exp and NOW >= exp
-- Superseded: the recipient got an email admitted since this one was held
-- at admission (through a lane, say). The held entry's expiry is Redis
-- time: the hold's time plus the TTL.
local superseded = false
if at == 'a' and exp and #rlog >= 19 then
  superseded = tonumber(string.sub(rlog, 10, 19)) >= math.floor((exp - HOLDTTL) / 1000) - 1577836800
end
if op == 'dry' then
  if expired then return 'dry:expired' end
  if superseded then return 'dry:superseded' end
  if lane == '' then return 'dry:none' end
  return 'dry:' .. lane
end
if expired then return refuse('expired', 'held') end
if superseded then return refuse('duplicate', 'superseded') end
if op == 'release' and lane == '' then return 'kept:' end

if at == 'd' then
  redis.call('HDEL', hkey, id)
  redis.call('HINCRBY', stkey, KIND .. '|d:held:breaker', -1)
  if redis.call('GET', ckey) == '4' then redis.call('DEL', ckey) end
  redis.call('HSET', hrkey, id, payload)
  trace('queued', lane)
  return 'queued:' .. lane
end
-- Held at admission, it used no recipient quota: admitted again with
-- suppression, the dedup window and the per-recipient windows. (It used
-- its source's quota when it was held.)
local outcome, reason = nil, ''
if sup then
  outcome = 'suppressed'
elseif #rlog >= 950 and nows - tonumber(string.sub(rlog, 941, 950)) <= 86400 then
  outcome, reason = 'capped', 'recipient'
end
if outcome then return refuse(outcome, reason) end
redis.call('HDEL', hkey, id)
redis.call('HINCRBY', stkey, KIND .. '|a:held:breaker', -1)
redis.call('SET', rkey, tag .. string.format('%010d', nows) .. string.sub(rlog, 1, 931), 'PX', 86401000)
redis.call('DEL', hmkey)
if redis.call('INCR', akey) == 1 then redis.call('SADD', kkey, KIND) end
redis.call('HSET', hrkey, id, payload)
trace('queued', lane)
return 'queued:' .. lane
