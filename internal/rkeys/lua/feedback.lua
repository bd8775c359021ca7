-- Feedback on one sent {{.Kind}} email (see rkeys.FeedbackScript).
local ckey, stkey, logkey = KEYS[1], STK, LOGK
local op, id, trustms, supms = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])

local v = redis.call('GET', ckey)
if not v then return 'unknown' end
local c = string.sub(v, 1, 1)
if c == '7' or c == '8' then return 'already' end
if c ~= '1' or #v < 39 then return 'unknown' end
local b = tonumber(string.sub(v, 2, 11))
local src, grp, rcp = string.sub(v, 12, 20), string.sub(v, 21, 29), string.sub(v, 30, 38)
local tskey, tgkey, rkey = TAG .. 'T' .. src, nil, TAG .. 'r' .. rcp
if grp ~= NOGROUP then tgkey = TAG .. 'U' .. grp end
local t = redis.call('TIME')
{{clock}}
local nows = t[1] - 1577836800
if op == 'confirm' then
  redis.call('SET', ckey, '7' .. string.sub(v, 2), 'KEEPTTL')
  if RDB > 0 then redis.call('HINCRBY', RK, b .. 'c', 1) end
  -- Trust keeps the time it was first earned, so a source that confirms
  -- while a breaker is open cannot date its trust after the opening.
  for _, k in ipairs({tskey, tgkey}) do
    if not redis.call('SET', k, NOW, 'NX', 'PX', trustms) then redis.call('PEXPIRE', k, trustms) end
  end
  redis.call('HINCRBY', stkey, KIND .. '|f:confirmed', 1)
  redis.call('XADD', logkey, 'MAXLEN', '~', LOGLEN, '*', 'stage', 'feedback', 'kind', KIND,
    'outcome', 'confirmed', 'reason', '', 'id', id, 'rcpt', '')
  return 'confirmed'
end
-- A report: the recipient is suppressed for this kind, the source loses
-- its trust, and reports feed the breaker.
redis.call('SET', ckey, '8' .. string.sub(v, 2), 'KEEPTTL')
if supms > 0 then redis.call('SET', rkey, 'S' .. (nows + math.ceil(supms / 1000)), 'PX', supms) end
redis.call('DEL', tskey)
if tgkey then redis.call('DEL', tgkey) end
redis.call('HINCRBY', stkey, KIND .. '|f:reported', 1)
redis.call('XADD', logkey, 'MAXLEN', '~', LOGLEN, '*', 'stage', 'feedback', 'kind', KIND,
  'outcome', 'reported', 'reason', '', 'id', id, 'rcpt', '')
if RDB <= 0 or RPMIN <= 0 then return 'reported' end
local who = grp
if who == NOGROUP then who = src end
redis.call('HINCRBY', RK, b .. 'p', 1)
redis.call('PFADD', RPPFX .. b, who)
redis.call('PEXPIRE', RPPFX .. b, 3 * RDB + 2 * RDLAG + 60000)
-- Reports over this bucket and the one before, against what was sent.
local f = redis.call('HMGET', RK, b .. 's', b .. 'p', (b - 1) .. 's', (b - 1) .. 'p')
local sends = (tonumber(f[1]) or 0) + (tonumber(f[3]) or 0)
local reps = (tonumber(f[2]) or 0) + (tonumber(f[4]) or 0)
if reps < RPMIN or reps < RPRAT * sends or redis.call('PFCOUNT', RPPFX .. b, RPPFX .. (b - 1)) < RPSRC then
  return 'reported'
end
{{lib}}
B = bparse(redis.call('GET', BK))
if not B then return 'reported' end
btick()
if B.st ~= 'o' or B.rs == 'r' then bopen('p', B.st == 'h') end
return 'reported' .. bsuffix()
