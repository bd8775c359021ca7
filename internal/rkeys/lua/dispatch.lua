-- Dispatch of one {{.Kind}} send attempt (see rkeys.DispatchScript).
local ckey, gkey, dkey, tkey, hkey, stkey, logkey, pkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], HK, STK, LOGK, SK
local attempt, lease, exp, margin = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local gi, gb, di, db = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local id, payload, sample, rcpt, loglen, laned = ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14] == '1'

local cur = redis.call('MGET', ckey, BK, gkey, dkey)
-- The recipient's trace gets this decision. A deferral repeating the
-- newest entry (same email, same reason) is not written again, so a
-- rate-limited email cannot push its history out; only the trace's tail,
-- as long as such an entry can be, is read for it.
local function trace(outcome, reason)
  if outcome == 'deferred' then
    local tail = redis.call('GETRANGE', tkey, -(#reason + #id + 40), -1)
    local o, i = string.match(tail, '\nd%d+ ([^\n]-) ([^\n]*)$')
    if o == outcome .. ':' .. reason and i == id then return end
  end
  local now = NOW
  if not now then
    local tt = redis.call('TIME')
    now = tt[1] * 1000 + math.floor(tt[2] / 1000)
  end
  now = now - TREPOCH
  {{trace "'d' .. now .. ' ' .. outcome .. ':' .. reason .. ' ' .. id" "TRTTL"}}
end
local function record(field, outcome, reason, always)
  redis.call('HINCRBY', stkey, KIND .. '|d:' .. field, 1)
  if always or sample == '1' then
    redis.call('XADD', logkey, 'MAXLEN', '~', loglen, '*', 'stage', 'dispatch', 'kind', KIND,
      'outcome', outcome, 'reason', reason, 'id', id, 'rcpt', rcpt)
  end
  trace(outcome, reason)
end

local claim = cur[1]
local sfx = {{suffix "cur[2]"}}
-- The count of ambiguous results rides on the claim: "m<n>" once released
-- for a retry (free to take), "<attempt>~<n>" while an attempt holds it.
local amb = 0
if claim then
  local n = string.match(claim, '^m(%d+)$')
  if n then
    claim, amb = nil, tonumber(n)
  else
    local a, m = string.match(claim, '^(a:.*)~(%d+)$')
    if a then claim, amb = a, tonumber(m) end
  end
end
local ambsfx, mine = '', attempt
if amb > 0 then ambsfx, mine = ';' .. amb, attempt .. '~' .. amb end
if claim then
  if claim == attempt then
    redis.call('PEXPIRE', ckey, lease)
    return 'allow:replay' .. ambsfx .. sfx
  end
  -- Terminal states: "1" sent ("7" confirmed, "8" reported since), "2"
  -- failed, "3" expired, "4" held, "5" shed; an attempt is "a:<nonce>".
  local c = string.sub(claim, 1, 1)
  if c == '1' or c == '7' or c == '8' then
    record('redelivered', 'duplicate', 'sent', true)
    return 'duplicate:sent' .. sfx
  end
  if c == '2' then return 'failed:replay' .. sfx end
  if c == '3' then return 'expired:replay' .. sfx end
  if c == '4' then return 'held:replay' .. sfx end
  if c == '5' then return 'shed:replay' .. sfx end
  local left = redis.call('PTTL', ckey)
  if left < 1 then left = 1 end
  record('deferred:claimed', 'deferred', 'claimed', false)
  return 'deferred:claimed:' .. left .. sfx
end

local t = redis.call('TIME')
{{clock}}
local now_ms = NOW
local function terminal(code, field, outcome, reason)
  local ttl = exp - now_ms
  if ttl < 0 then ttl = 0 end
  redis.call('SET', ckey, code, 'PX', ttl + margin)
  record(field, outcome, reason, true)
  return outcome .. ':' .. reason
end
local function defer(which, ms)
  ms = math.ceil(ms)
  if ms < 1 then ms = 1 end
  record('deferred:' .. which, 'deferred', which, false)
  return 'deferred:' .. which .. ':' .. ms
end
if now_ms >= exp then return terminal('3', 'expired', 'expired', '') .. sfx end

-- The breaker: nothing to do when it is closed. An email admitted or
-- released through a lane passed the breaker already; only the relay
-- breaker defers it.
local paced
if sfx ~= '' then
{{lib}}
B = bparse(cur[2])
btick()
if B.st == 'o' and B.rs == 'r' then
  local left = B.untl - now_ms
  if B.untl == 0 then left = COOL end
  return defer('relay', left) .. bsuffix()
elseif laned then
  if B.st ~= 'c' and B.rs == 'r' and B.ai > 0 then
    local ok, wait = bpace(pkey, B.ai, false)
    if not ok then return defer('relay', wait / 1000) .. bsuffix() end
    paced = B.ai
  end
elseif B.st == 'o' and MODE == 'hold' then
  if redis.call('HLEN', hkey) < HOLDMAX then
    redis.call('HSET', hkey, id, 'd' .. exp .. ' ' .. payload)
    redis.call('PEXPIRE', hkey, HOLDTTL + SWEEPMS)
    -- Admitted before the trip and held now: the recipient's re-request
    -- must find it (its admission is in the dedup window).
    redis.call('SET', ARGV[15], t[1] - 1577836800, 'NX', 'PX', HOLDTTL)
    return terminal('4', 'held:breaker', 'held', 'breaker') .. bsuffix()
  end
  return terminal('5', 'shed:hold_full', 'shed', 'hold_full') .. bsuffix()
elseif B.st == 'o' and MODE == 'shed' then
  return terminal('5', 'shed:breaker', 'shed', 'breaker') .. bsuffix()
elseif B.st ~= 'c' and B.ai > 0 then
  local ok, wait = bpace(pkey, B.ai, false)
  if not ok then
    if B.rs == 'r' then return defer('relay', wait / 1000) .. bsuffix() end
    return defer('breaker', wait / 1000) .. bsuffix()
  end
  paced = B.ai
end
sfx = bsuffix()
end

local now = NOWUS
local function gcra(stored, interval, offset)
  local tat = tonumber(stored) or now
  if tat < now then tat = now end
  local new = tat + interval
  local wait = new - offset - now
  if wait > 0 then return nil, wait end
  return new, 0
end
local gnew, gwait = gcra(cur[3], gi, gb)
local dnew, dwait = gcra(cur[4], di, db)
if not gnew or not dnew then
  local which, wait = 'global', gwait
  if dwait > gwait then which, wait = 'domain', dwait end
  return defer(which, wait / 1000) .. sfx
end
redis.call('SET', gkey, string.format('%d', gnew), 'PX', math.ceil((gnew - now) / 1000))
redis.call('SET', dkey, string.format('%d', dnew), 'PX', math.ceil((dnew - now) / 1000))
if paced then redis.call('SET', pkey, string.format('%d', now + paced), 'PX', math.ceil(paced / 1000) + 1) end
redis.call('SET', ckey, mine, 'PX', lease)
trace('dispatched', '')
if sample == '1' then
  redis.call('XADD', logkey, 'MAXLEN', '~', loglen, '*', 'stage', 'dispatch', 'kind', KIND,
    'outcome', 'dispatched', 'reason', '', 'id', id, 'rcpt', rcpt)
end
return 'allow:' .. ambsfx .. sfx
