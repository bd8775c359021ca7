-- One held {{.Kind}} email for a release, a dry run or a purge (see
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
{{clock}}
local nows = t[1] - 1577836800
-- The recipient's trace (none for a payload that cannot be opened).
local function trace(outcome, reason)
  if tkey == NONE then return end
  {{trace "'r' .. (NOW - TREPOCH) .. ' ' .. outcome .. ':' .. reason .. ' ' .. id" "TRTTL"}}
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
{{- if .Dedup}}
elseif #rlog >= 19 and nows - tonumber(string.sub(rlog, 10, 19)) <= {{.Dedup}} then
  outcome = 'duplicate'
{{- end}}
{{- range .Recipient}}
elseif #rlog >= {{.Len}} and nows - tonumber(string.sub(rlog, {{.From}}, {{.Len}})) <= {{.Per}} then
  outcome, reason = 'capped', 'recipient'
{{- end}}
end
if outcome then return refuse(outcome, reason) end
redis.call('HDEL', hkey, id)
redis.call('HINCRBY', stkey, KIND .. '|a:held:breaker', -1)
redis.call('SET', rkey, tag .. string.format('%010d', nows) .. string.sub(rlog, 1, {{.RecipientKeep}}), 'PX', {{.RecipientTTL}})
redis.call('DEL', hmkey)
if redis.call('INCR', akey) == 1 then redis.call('SADD', kkey, KIND) end
redis.call('HSET', hrkey, id, payload)
trace('queued', lane)
return 'queued:' .. lane
