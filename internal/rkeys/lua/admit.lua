-- Admission of one {{.Kind}} email: suppression, dedup window, every
-- per-recipient, per-source and per-source-group window, the source's
-- redemption record, then the kind's breaker (see rkeys.AdmitScript).
local rkey, skey, ukey, tkey = KEYS[1], KEYS[2], KEYS[3], KEYS[{{.TraceKey}}]
local hkey, stkey, logkey, akey, kkey, qkey = HK, STK, LOGK, AK, KK, PK
local tag, id, payload, sample, rcpt, trust, who, narrow = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
{{- if .Logs}}

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
{{- end}}

local cur = redis.call('MGET', rkey, skey, BK, ukey, NK{{range .Groups}}, KEYS[{{.Key}}]{{end}})
local rlog, slog = cur[1] or '', cur[2] or ''
{{- range .Groups}}
local glog{{.Key}} = cur[{{.Cur}}] or ''
{{- end}}
-- The held marker and the trust keys, which only an open breaker reads
-- (open.lua names them then): building them costs every decision.
local hmkey, tskey, tgkey
-- A re-sent script finds its own admission in the recipient log.
local p = string.find(rlog, tag, 1, true)
while p do
  if (p - 1) % 19 == 0 then return 'queued:replay' .. {{suffix "cur[3]"}} end
  p = string.find(rlog, tag, p + 1, true)
end

local t = redis.call('TIME')
{{clock}}
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
{{- if .Dedup}}
elseif #rlog >= 19 and nows - tonumber(string.sub(rlog, 10, 19)) <= {{.Dedup}}
  and not (bst == 'o' and redis.call('EXISTS', TAG .. 'H' .. string.sub(rkey, 6)) == 1) then
  -- (An email admitted before the trip and held at dispatch leaves its
  -- admission in the window: the open breaker's lanes judge the re-request.)
  outcome = 'duplicate'
{{- end}}
{{- range .Recipient}}
elseif #rlog >= {{.Len}} and nows - tonumber(string.sub(rlog, {{.From}}, {{.Len}})) <= {{.Per}} then
  outcome, reason = 'capped', 'recipient'
{{- end}}
{{- range .Source}}
elseif #slog >= {{.Len}} and now - u48(slog, {{.From}}) < {{.Per}} then
  outcome, reason = 'capped', 'source'
{{- end}}
{{- range $g := .Groups}}{{range .Windows}}
elseif #glog{{$g.Key}} >= {{.Len}} and now - u48(glog{{$g.Key}}, {{.From}}) < {{.Per}} then
  outcome, reason = 'capped', 'group'
{{- end}}{{end}}
{{- if .Untrusted}}
elseif bfl and tonumber(bfl) >= 2 and #slog >= {{.Untrusted.Len}} and now - u48(slog, {{.Untrusted.From}}) >= RDLAG
  and not redis.call('GET', TAG .. 'T' .. string.sub(skey, 6)) then
  -- The application confirms this kind's links, and none of this
  -- source's last {{.Untrusted.N}} emails was redeemed: its cap shrinks to them.
  outcome, reason = 'capped', 'unredeemed'
{{- end}}
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
{{- if .Refusals}}
  cf = redis.call('INCR', FK)
  if cf == 1 then redis.call('PEXPIRE', FK, 2 * W + 1000) end
  redis.call('PFADD', FSK, who)
  redis.call('PFADD', FRK, rkey)
  if fast and bst == 'c' then
    local bprevf = tonumber(string.match(cur[3], BPREVF))
    local tot = (tonumber(bprev) + bprevf) * frac + (tonumber(cur[5]) or 0) + cf
    if tot >= RMINC and bprevf * frac + cf >= RR * tot then fast = false end
  end
{{- end}}
  if fast and bst ~= 'c' then sfx = '|' .. bst .. brs end
elseif not eligible then
  -- Suppressed: nothing for the breaker to count.
  fast, sfx = true, {{suffix "cur[3]"}}
elseif fast and bst == 'c' then
  if tonumber(bprev) * frac + CNT > tonumber(blim) then fast = false end
  if fast and isnew and BUDON then
    DCNT = redis.call('INCR', DK)
    if tonumber(bdprev) * (1 - (now - tonumber(bdidx) * BUDP) / BUDP) + DCNT > tonumber(bbud) then fast = false end
  end
elseif fast and bst == 'o' and brs ~= 'r' then
  local buntl, bai, bli, bop = string.match(cur[3], BTAIL)
  if buntl == '0' or now < tonumber(buntl) then
{{open "tonumber(bli)" "tonumber(bop)" "tonumber(bai)" "bst"}}
    sfx = '|' .. bst .. brs
  else
    fast = false
  end
else
  fast = false
end
if not fast then
{{lib}}
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
{{- if .Refusals}}
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
{{- end}}
if eligible and B.st ~= 'c' and B.rs ~= 'r' then
{{open "B.li" "B.op" "B.ai" "B.st"}}
end
sfx = bsuffix()
end

local field
if not outcome then
  outcome = 'queued'
  redis.call('SET', rkey, tag .. string.format('%010d', nows) .. string.sub(rlog, 1, {{.RecipientKeep}}), 'PX', '{{.RecipientTTL}}')
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
{{- if .Source}}
  redis.call('SET', skey, p48(now) .. string.sub(slog, 1, {{.SourceKeep}}), 'PX', '{{.SourceTTL}}')
{{- end}}
{{- range .Groups}}
  if KEYS[{{.Key}}] ~= NONE then
    redis.call('SET', KEYS[{{.Key}}], p48(now) .. string.sub(glog{{.Key}}, 1, {{.Keep}}), 'PX', '{{.TTL}}')
  end
{{- end}}
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
    {{trace "'a' .. (NOW - TREPOCH) .. ' ' .. outcome .. ':' .. reason .. ' ' .. after .. ' ' .. id" "ttl"}}
  end
end
if (outcome ~= 'queued' and reason ~= 'replay') or sample == '1' then
  redis.call('XADD', logkey, 'MAXLEN', '~', LOGLEN, '*', 'stage', 'admit', 'kind', KIND,
    'outcome', outcome, 'reason', reason, 'id', id, 'rcpt', rcpt)
end
return outcome .. ':' .. reason .. sfx
