  -- Open or half-open: lanes first, for what an attack cannot produce in
  -- bulk, each paced on its own; then probes (half-open) or the clamp;
  -- then the mode.
  hmkey, tskey, tgkey = TAG .. 'H' .. string.sub(rkey, 6), TAG .. 'T' .. string.sub(skey, 6), NONE
  if narrow ~= '0' then tgkey = TAG .. 'U' .. string.sub(KEYS[tonumber(narrow)], 6) end
  local o2 = redis.call('MGET', hmkey, tskey, tgkey)
  local hm, li = o2[1], {{.Li}}
  -- A lane is a GCRA of interval li that lets LANEB emails through back to
  -- back: users arrive at random, and a strict spacing would refuse one
  -- whose neighbour passed a moment before.
  local function lanepass(k)
    local lt = math.max(tonumber(redis.call('GET', k)) or NOWUS, NOWUS)
    if lt - NOWUS > (LANEB - 1) * li then return false end
    redis.call('SET', k, string.format('%d', lt + li), 'PX', math.ceil((lt + li - NOWUS) / 1000) + 1)
    return true
  end
{{- if eq .Mode "hold"}}
  if redis.call('HEXISTS', hkey, id) == 1 then outcome, reason = 'held', 'replay' end
{{- end}}
{{- if .LaneTrusted}}
  if not outcome and trust ~= '' then
    if lanepass(LTK) then
      lane = 'trusted'
    end
  end
{{- end}}
{{- if .LaneRedeemed}}
  -- Sources (or their group) whose emails were redeemed before it opened.
  if not outcome and not lane and ((o2[2] and tonumber(o2[2]) <= {{.Op}}) or (o2[3] and tonumber(o2[3]) <= {{.Op}})) then
    if lanepass(LDK) then
      lane = 'redeemed'
    end
  end
{{- end}}
  if not outcome and not lane and hm then
    -- An email to this recipient is held: a real user whose email did not
    -- arrive asks again; an attack on distinct victims asks once each.
    -- A source that asked for many recipients is an attack's, not a user's
    -- asking again: neither the lane nor a release takes its re-request.
    local again = nows - tonumber(string.match(hm, '^%d+')) >= RQAFTER{{if .RqSrcLen}} and (#slog < {{.RqSrcLen}} or now - u48(slog, {{.RqSrcFrom}}) >= {{.RqSrcMS}}){{end}}
{{- if .LaneRerequest}}
    if again then
      if lanepass(LQK) then
        lane = 'rerequest'
      end
    end
{{- end}}
    if not lane then
      outcome, reason = 'duplicate', 'held'
      if again and string.sub(hm, -1) ~= 'r' then redis.call('SET', hmkey, hm .. 'r', 'KEEPTTL') end
    end
  end
  if lane then
    if hm then redis.call('DEL', hmkey) end
  elseif not outcome then
    local iv, pass = {{.Ai}}, false
    if iv > 0 then
      local ptat = tonumber(redis.call('GET', qkey)) or NOWUS
      if ptat <= NOWUS then
        redis.call('SET', qkey, string.format('%d', NOWUS + iv), 'PX', math.ceil(iv / 1000) + 1)
        pass = true
      end
    end
    if pass then
      reason = 'clamp'
      if {{.St}} == 'h' then reason = 'probe' end
{{- if eq .Mode "shed"}}
    else
      -- The marker lets the re-request lane recognise the user who asks again.
      redis.call('SET', hmkey, nows, 'NX', 'PX', HOLDTTL)
      outcome, reason = 'shed', 'breaker'
{{- else if eq .Mode "clamp"}}
    else
      redis.call('SET', hmkey, nows, 'NX', 'PX', HOLDTTL)
      outcome, reason = 'shed', 'clamp'
{{- else}}
    elseif redis.call('HLEN', hkey) < HOLDMAX then
      redis.call('HSET', hkey, id, 'a' .. (NOW + HOLDTTL) .. ' ' .. payload)
      redis.call('PEXPIRE', hkey, HOLDTTL + SWEEPMS)
      redis.call('SET', hmkey, nows, 'PX', HOLDTTL)
      outcome, reason = 'held', 'breaker'
    else
      redis.call('SET', hmkey, nows, 'NX', 'PX', HOLDTTL)
      outcome, reason = 'shed', 'hold_full'
{{- end}}
    end
  end
