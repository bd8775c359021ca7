// Package rkeys names every Redis key the guard uses and holds the Lua
// scripts behind its decisions, so that key layout and scripts can be read
// and reviewed in one place.
//
// Every key carries the hash tag [Tag]: on Redis Cluster all guard keys live
// in one slot and each script runs on one node in one round trip. Recipient,
// source and suppression keys are built from truncated SHA-256 digests and
// hold no address. Scripts, each compiled per kind with the kind's settings
// as constants: [AdmitScript], [DispatchScript], [SettleScript],
// [ControlScript] (the breaker's admin operations) and [ReleaseScript] (held
// emails); the breaker's Lua, shared by them, is described at
// [BreakerConfig].
package rkeys

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Tag is the hash tag shared by every guard key.
const Tag = "{fg}"

// Fixed keys.
const (
	// Suppressions is a hash listing the suppression list for the admin
	// API: field [SuppressionField], value "<reason>|<unix ms>". Each entry
	// is mirrored by a [Suppression] key, which admission reads. Neither
	// expires: entries are removed by Unsuppress.
	Suppressions = Tag + ":sup"
	// Global is the global send rate's GCRA state (theoretical arrival time
	// in µs since [GCRAEpoch]); it expires when the bucket is full again.
	Global = Tag + ":g"
	// Stats is a hash of counters: field "<kind>|a:<outcome>[:<reason>]"
	// for admission refusals (admissions are counted by [Admitted]),
	// "<kind>|d:<outcome>[:<reason>]" for dispatch and settle decisions.
	// Bounded by kinds × outcomes × reasons.
	Stats = Tag + ":stats"
	// Decisions is the decision log, a stream trimmed with MAXLEN ~.
	Decisions = Tag + ":log"
	// Kinds is the set of kinds that have an [Admitted] counter.
	Kinds = Tag + ":kinds"
)

// Digest lengths. A recipient key is 14 bytes (tag, type byte, 9-byte
// digest, 72 bits) so that Redis stores it in a 16-byte allocation; a
// 32-byte digest costs 16 bytes more per tracked recipient.
const (
	logDigest = 9
	supDigest = 16
)

// LogEpoch is the origin (2020-01-01, unix seconds) of recipient log
// timestamps.
const LogEpoch = 1577836800

// GCRAEpoch is the origin (2020-01-01, unix seconds) of the µs timestamps in
// GCRA keys, which keeps them exact in Lua's doubles.
const GCRAEpoch = 1577836800

// Recipient returns the key of the admission log of a canonical recipient
// for one kind: "{fg}r" + sha256(kind NUL canonical)[:9]. The value is the
// newest-first list of admissions, 19 decimal digits each: the email's tag
// ([EmailTag], 9 digits) and the admission time in seconds since
// [LogEpoch] (10 digits, zero-padded). A log of one entry is a decimal
// integer below 2^63, which Redis stores as a bare integer object: the
// common case of a recipient seen once costs no string allocation.
func Recipient(kind, canonical string) string {
	return digestKey('r', kind, canonical, logDigest)
}

// Source returns the key of the admission log of a source for one kind:
// "{fg}s" + sha256(kind NUL source)[:9]. The value is the newest-first list
// of admission timestamps, 6 bytes each (big-endian unix milliseconds).
func Source(kind, source string) string {
	return digestKey('s', kind, source, logDigest)
}

func digestKey(typ byte, kind, s string, n int) string {
	var in [192]byte
	sum := sha256.Sum256(append(append(append(in[:0], kind...), 0), s...))
	out := make([]byte, 0, len(Tag)+1+n)
	out = append(append(append(out, Tag...), typ), sum[:n]...)
	return string(out)
}

// SuppressionField returns the field of a canonical recipient in
// [Suppressions]: the first 16 bytes of its SHA-256.
func SuppressionField(canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	return string(sum[:supDigest])
}

// Suppression returns the key admission reads to learn that a canonical
// recipient is suppressed: "{fg}u" + [SuppressionField]; value as in
// [Suppressions]. A string key, so the admission script fetches it with the
// recipient's other state in one MGET.
func Suppression(canonical string) string { return Tag + "u" + SuppressionField(canonical) }

// EmailTag returns the tag that marks an email's entry in a recipient log,
// so that a re-sent admission script recognises its own earlier admission:
// 9 decimal digits from 100000000 to 922337202 (about 2^29.6 values), so an
// entry never starts with 0 and a single entry stays below 2^63.
func EmailTag(id string) string {
	// floodgate's ids are 32 random (or SHA-256) hex digits: their first
	// 64 bits are already uniform.
	n, err := strconv.ParseUint(id[:min(len(id), 16)], 16, 64)
	if len(id) < 16 || err != nil {
		sum := sha256.Sum256([]byte(id))
		n = binary.BigEndian.Uint64(sum[:8])
	}
	return strconv.FormatUint(100000000+n%822337203, 10)
}

// Claim returns the idempotency claim key of an email id: "{fg}c" and the
// id, hex-decoded when it is hex so the key stays short.
func Claim(id string) string {
	if raw, err := hex.DecodeString(id); err == nil && len(raw) > 0 {
		return Tag + "c" + string(raw)
	}
	return Tag + "c:" + id
}

// Domain returns the GCRA key of a recipient domain's send rate.
func Domain(domain string) string { return Tag + ":d:" + domain }

// Admitted returns the counter of emails of a kind queued by admission. It
// is the one admission count kept outside [Stats]: INCR of a string is
// several times cheaper than HINCRBY, and it runs on every admitted email.
func Admitted(kind string) string { return Tag + ":n:" + kind }

// Breaker returns the breaker state key of a kind, read by every decision
// in the MGET it already makes. The value is
//
//	"<state><reason> <window> <prev> <prevrefused> <threshold> <until> <interval>"
//
// state c (closed), o (open) or h (half-open); reason s (surge), f
// (refusals), r (relay), m (manual) or - (none); window the index of the
// current counting window (Redis ms / window length); prev and prevrefused
// the requests and cap refusals counted in the window before it; threshold
// the request count per window that trips the breaker; until the Redis ms
// at which an open breaker turns half-open or a half-open one closes (0:
// not by time); interval the µs between the emails an open clamp or a
// half-open breaker lets through (0: none). No key means closed. It does
// not expire.
func Breaker(kind string) string { return Tag + ":b:" + kind }

// BreakerInfo returns the hash of a kind's breaker details, written on
// transitions and window rollovers only: "reason", "since", "opened" (Redis
// ms), "closed" (ms of the last close), "lvl" (how many times the cooldown
// was doubled), "base" (learned baseline, requests/s), and the relay
// counters "rc" (consecutive relay failures), "ri" (their window index),
// "rf" and "ro" (relay failures and successes in it), "pf" and "po" (in the
// window before). It does not expire.
func BreakerInfo(kind string) string { return Tag + ":bi:" + kind }

// BreakerCount returns the counter of a kind's admission requests in the
// current window; the first request of a window moves it into [Breaker]'s
// prev and resets it. It expires two windows after its last reset.
func BreakerCount(kind string) string { return Tag + ":bn:" + kind }

// BreakerRefused returns the counter of a kind's requests refused by caps
// (duplicate or capped) in the current window, reset like [BreakerCount].
func BreakerRefused(kind string) string { return Tag + ":bf:" + kind }

// BreakerPace returns the key pacing the admissions that an open clamp or a
// half-open breaker lets through: the Redis time (µs since [GCRAEpoch])
// before which the next one is refused. It expires when that time passes.
func BreakerPace(kind string) string { return Tag + ":bq:" + kind }

// BreakerSendPace returns the key pacing the sends (dispatch) that an open
// clamp or a half-open breaker lets through, like [BreakerPace].
func BreakerSendPace(kind string) string { return Tag + ":bs:" + kind }

// Held returns the hash holding parked emails of a kind: field email id,
// value "a" (held at admission) or "d" (held at dispatch) followed by the
// encoded payload. It expires one TTL of the kind after the newest email
// was parked, when none of them could still be delivered.
func Held(kind string) string { return Tag + ":h:" + kind }

// Releasing returns the hash of held emails of a kind that a release took
// out of [Held] but has not yet handed to the queue: field email id, value
// the encoded payload. A release interrupted between the two steps is
// finished by the next one.
func Releasing(kind string) string { return Tag + ":hr:" + kind }

// Claim values other than an attempt ("a:<nonce>"): terminal states.
const (
	ClaimSent    = "1"
	ClaimFailed  = "2"
	ClaimExpired = "3"
	ClaimHeld    = "4"
	ClaimShed    = "5"
)

// AttemptValue returns the claim value of a send attempt.
func AttemptValue(attempt string) string { return "a:" + attempt }

// AdmitConfig is one kind's admission settings. [AdmitScript] compiles
// them into the kind's script as constants, so the hot path neither sends
// nor parses them.
type AdmitConfig struct {
	// Kind is the kind's name: lower-case letters, digits, '_' or '-'.
	Kind string
	// LogLen is the decision log's MAXLEN.
	LogLen int
	// Breaker is the kind's breaker.
	Breaker BreakerConfig
	// Dedup is the dedup window in whole seconds; 0 = none.
	Dedup int64
	// RecipientTTL is how long a recipient log lives after its newest
	// entry, ms; RecipientLen how many entries it keeps.
	RecipientTTL int64
	RecipientLen int
	// Recipient are the per-recipient windows: limit and whole seconds.
	Recipient [][2]int64
	// SourceTTL and SourceLen are the source log's TTL (ms) and length.
	SourceTTL int64
	SourceLen int
	// Source are the per-source windows: limit and ms.
	Source [][2]int64
}

// BreakerConfig is one kind's surge breaker, compiled into the kind's
// scripts as constants. Rates are counted over a sliding window of WindowMS:
// the count of the window before, weighted by the share of it still inside
// the sliding window, plus the count of the current one.
//
// Every script that reads a breaker ends its reply with a suffix: the
// state ("|<state><reason>", as in [Breaker]) when it is not closed or when
// it moved, then one "|from,to,reason,rate,baseline,at_ms,until_ms,level"
// per transition the script made (states "closed", "open", "half_open";
// rate and baseline in requests/s; until 0 when none). Transitions happen
// inside the scripts, so exactly one process, the one whose decision moved
// the breaker, learns of each.
type BreakerConfig struct {
	// WindowMS is the length of the counting window, ms.
	WindowMS int64
	// FloorCount is the request count per window below which the surge
	// trip never fires; SurgeFactor the multiple of the baseline that
	// fires it (0: surge trip off).
	FloorCount, SurgeFactor float64
	// Alpha is the weight of one window's rate in the baseline (an EWMA
	// over windows): window / learning period.
	Alpha float64
	// RefusalRatio is the share of requests refused by caps that trips
	// (0: off), once RefusalCount requests were counted in the window.
	RefusalRatio, RefusalCount float64
	// RelayFailures is how many consecutive relay failures trip (0: off);
	// RelayRatio the share of relay failures among relay results in the
	// window that trips, with at least RelayFailures of them (0: off).
	RelayFailures int
	RelayRatio    float64
	// CooldownMS is how long the breaker stays open before probing;
	// MaxCooldownMS bounds it after doublings.
	CooldownMS, MaxCooldownMS int64
	// ProbeUS is the interval between probes while half-open, µs.
	ProbeUS int64
	// Mode is "hold", "clamp" or "shed".
	Mode string
	// HoldMax bounds the held emails; HoldTTLMS is how long [Held] lives
	// after the newest of them.
	HoldMax   int
	HoldTTLMS int64
}

// breakerHead declares what every breaker script shares at its top level.
// The script sets BK, IK, NK, FK, PK and SK to the kind's [Breaker],
// [BreakerInfo], [BreakerCount], [BreakerRefused], [BreakerPace] and
// [BreakerSendPace] keys and NOW (Redis ms) and NOWUS (µs since
// [GCRAEpoch]) from TIME.
const breakerHead = `
local BK, IK, NK, FK, PK, SK
local B, NOW, NOWUS, CNT
local dirty, trans = false, nil
`

// rawSuffix returns a Lua expression for the breaker suffix of the
// unparsed state v, for replies made before the state is loaded (or when
// it needs no loading): "|<state><reason>" when open or half-open.
func rawSuffix(v string) string {
	return "((string.sub(" + v + " or 'c', 1, 1) == 'o' or string.sub(" + v + " or 'c', 1, 1) == 'h') and '|' .. string.sub(" + v + ", 1, 2) or '')"
}

// breakerLib defines the functions that move a breaker. Creating Lua
// closures costs more than the rest of a decision, so scripts write it
// inside the block that needs it (a window's first request, a trip, a
// breaker that is not closed, the admin operations), and a decision on a
// closed breaker in the current window creates none. It loads B with bparse
// (or broll, which also creates it), and ends with bsuffix, which saves B
// when it changed and returns the suffix described at [BreakerConfig].
const breakerLib = `
local STATES = {c = 'closed', o = 'open', h = 'half_open'}
local REASONS = {s = 'surge', f = 'refusals', r = 'relay', m = 'manual'}
local BASE

local function bparse(s)
  if not s then return nil end
  local st, rs, idx, prev, prevf, thr, untl, ai = string.match(s, '^(%a)(%S) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$')
  if not st then return nil end
  return {st = st, rs = rs, idx = tonumber(idx), prev = tonumber(prev), prevf = tonumber(prevf),
    thr = tonumber(thr), untl = tonumber(untl), ai = tonumber(ai)}
end

local function bbase()
  if not BASE then BASE = tonumber(redis.call('HGET', IK, 'base')) or 0 end
  return BASE
end

local function bthr(base)
  local t = FLOORC
  if SF > 0 and SF * base * W / 1000 > t then t = SF * base * W / 1000 end
  return math.ceil(t)
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

-- Requests per second over the last window. cnt is the current window's
-- count when known; B may be stale (dispatch and settle do not roll
-- windows over).
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
  if rc ~= 'r' and MODE == 'clamp' then B.ai = bclamp(bbase()) end
  if from == 'o' then
    redis.call('HSET', IK, 'reason', REASONS[rc], 'lvl', lvl)
  else
    redis.call('HSET', IK, 'reason', REASONS[rc], 'since', NOW, 'opened', NOW, 'lvl', lvl)
  end
  btrans(from, rc, lvl)
end

-- bhalf lets probes through: a surge breaker closes one window later
-- unless the surge re-opens it; a relay breaker closes on the first relay
-- success and re-opens on a failure.
local function bhalf()
  B.st = 'h'
  if B.rs == 'r' then
    B.untl, B.ai = 0, PROBE
  else
    B.untl, B.ai = NOW + W, PROBE
    if MODE == 'clamp' then B.ai = bclamp(bbase()) end
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

local function btick()
  if B.st == 'o' and B.untl > 0 and NOW >= B.untl then bhalf() end
  if B.st == 'h' and B.untl > 0 and NOW >= B.untl then bclose(B.rs) end
end

-- broll starts window nidx (creating B if needed): cnt is the count of
-- window B.idx, cntnew the count the new window starts with (CNT becomes
-- it). While closed, the finished window's rate (at most the threshold)
-- feeds the baseline, and empty windows decay it.
local function broll(nidx, cnt, cntnew)
  if B then
    if nidx <= B.idx then return end
    local gap = nidx - B.idx
    local cntf = tonumber(redis.call('GET', FK)) or 0
    if B.st == 'c' then
      local base, s = bbase(), cnt
      if s > B.thr then s = B.thr end
      base = base + ALPHA * (s * 1000 / W - base)
      if gap > 1 then base = base * (1 - ALPHA) ^ (gap - 1) end
      BASE = base
      redis.call('HSET', IK, 'base', string.format('%.6g', base))
    end
    if gap == 1 then B.prev, B.prevf = cnt, cntf else B.prev, B.prevf = 0, 0 end
    B.idx = nidx
  else
    B = {st = 'c', rs = '-', idx = nidx, prev = 0, prevf = 0, untl = 0, ai = 0}
  end
  B.thr = bthr(bbase())
  redis.call('SET', NK, cntnew, 'PX', 2 * W + 1000)
  redis.call('DEL', FK)
  CNT = cntnew
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
    redis.call('SET', BK, string.format('%s%s %d %d %d %d %d %d', B.st, B.rs, B.idx, B.prev, B.prevf, B.thr, B.untl, B.ai))
    dirty = false
  end
  if B.st == 'c' and not trans then return '' end
  local s = '|' .. B.st .. B.rs
  if trans then s = s .. '|' .. table.concat(trans, '|') end
  return s
end
`

// num formats f as a Lua number literal.
func num(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// writeBreaker writes the breaker's constants and [breakerHead].
func writeBreaker(b *strings.Builder, kind string, c BreakerConfig) {
	checkKind(kind)
	switch c.Mode {
	case "hold", "clamp", "shed":
	default:
		panic("rkeys: breaker mode " + strconv.Quote(c.Mode))
	}
	fmt.Fprintf(b, "local KIND = '%s'\n", kind)
	fmt.Fprintf(b, "local W, FLOORC, SF, ALPHA = %d, %s, %s, %s\n", max(c.WindowMS, 1), num(c.FloorCount), num(c.SurgeFactor), num(c.Alpha))
	fmt.Fprintf(b, "local RR, RMINC, RF, RRAT = %s, %s, %d, %s\n", num(c.RefusalRatio), num(c.RefusalCount), c.RelayFailures, num(c.RelayRatio))
	fmt.Fprintf(b, "local COOL, MAXCOOL, PROBE, MODE = %d, %d, %d, '%s'\n", max(c.CooldownMS, 1), max(c.MaxCooldownMS, c.CooldownMS, 1), max(c.ProbeUS, 1), c.Mode)
	fmt.Fprintf(b, "local HOLDMAX, HOLDTTL = %d, %d\n", c.HoldMax, max(c.HoldTTLMS, 1))
	b.WriteString(breakerHead)
}

// clockLua sets NOW and NOWUS from TIME in t.
const clockLua = `NOW = t[1] * 1000 + math.floor(t[2] / 1000)
NOWUS = (t[1] - 1577836800) * 1000000 + t[2]
`

func checkKind(kind string) {
	if kind == "" || strings.ContainsFunc(kind, func(r rune) bool { return !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }) {
		panic("rkeys: kind name " + strconv.Quote(kind) + " cannot be embedded in a script")
	}
}

// writeRecipientChecks writes the "elseif" chain of the dedup window and
// the per-recipient windows, over rlog and nows.
func writeRecipientChecks(b *strings.Builder, c AdmitConfig) {
	if c.Dedup > 0 {
		fmt.Fprintf(b, "elseif #rlog >= 19 and nows - tonumber(string.sub(rlog, 10, 19)) <= %d then\n  outcome = 'duplicate'\n", c.Dedup)
	}
	for _, w := range c.Recipient {
		fmt.Fprintf(b, "elseif #rlog >= %d and nows - tonumber(string.sub(rlog, %d, %d)) <= %d then\n  outcome, reason = 'capped', 'recipient'\n",
			w[0]*19, w[0]*19-9, w[0]*19, w[1])
	}
}

// writeRecipientLog writes the SET that records an admission in rlog.
func writeRecipientLog(b *strings.Builder, c AdmitConfig) {
	fmt.Fprintf(b, "  redis.call('SET', rkey, tag .. string.format('%%010d', nows) .. string.sub(rlog, 1, %d), 'PX', %d)\n",
		(max(c.RecipientLen, 1)-1)*19, max(c.RecipientTTL, 1))
}

// writeAdmitBreaker writes what an open or half-open breaker does with an
// email the caps let through: one per interval (iv, µs; 0 none) passes,
// reason "clamp" (open) or "probe" (half-open, st == 'h'); the rest are
// held (up to HOLDMAX, then shed), shed or, for clamp, shed as "clamp".
func writeAdmitBreaker(b *strings.Builder, mode, iv, st string) {
	fmt.Fprintf(b, `  local iv, pass = %s, false
  if iv > 0 then
    local ptat = tonumber(redis.call('GET', qkey)) or NOWUS
    if ptat <= NOWUS then
      redis.call('SET', qkey, string.format('%%d', NOWUS + iv), 'PX', math.ceil(iv / 1000) + 1)
      pass = true
    end
  end
  if pass then
    reason = 'clamp'
    if %s == 'h' then reason = 'probe' end
`, iv, st)
	switch mode {
	case "shed":
		b.WriteString("  else\n    outcome, reason = 'shed', 'breaker'\n")
	case "clamp":
		b.WriteString("  else\n    outcome, reason = 'shed', 'clamp'\n")
	default:
		b.WriteString(`  elseif redis.call('HEXISTS', hkey, id) == 1 then
    outcome, reason = 'held', 'replay'
  elseif redis.call('HLEN', hkey) < HOLDMAX then
    redis.call('HSET', hkey, id, 'a' .. payload)
    redis.call('PEXPIRE', hkey, HOLDTTL)
    outcome, reason = 'held', 'breaker'
  else
    outcome, reason = 'shed', 'hold_full'
`)
	}
	b.WriteString("  end\n")
}

// AdmitScript returns the admission script of one kind. It decides whether
// an email may be queued: suppression, dedup window, every per-recipient
// window, every per-source window and the kind's breaker, atomically and in
// that order of precedence. Logs are written only when the email is queued,
// so a refusal consumes nobody's quota. Every decision is counted in
// [Stats]; refusals, and admissions when sampled, are appended to
// [Decisions]. If the recipient log already holds this email's tag, an
// earlier run admitted it and its reply was lost: the script answers
// "queued:replay" and changes nothing.
//
// The breaker: every request is counted in [BreakerCount] (and refusals by
// caps in [BreakerRefused]); the first request of a window rolls the
// window over and updates the baseline. When the requests in the last
// window exceed the threshold (or the refused share reaches the refusal
// ratio) the breaker opens, and this request is already subject to it. An
// open breaker (not for relay) holds, clamps or sheds what the caps let
// through; half-open, it lets one email per probe interval through.
//
// On the common path (breaker closed, same window, no trip) it makes six
// Redis calls: one MGET of everything it reads, TIME, INCR of the window
// count, a SET per log and one INCR, and creates no Lua closure for the
// breaker (see [breakerLib]). The kind's settings are constants in the
// script (one script per kind and policy, cached by Redis under its SHA1).
//
// KEYS[1] -> recipient log ([Recipient])
// KEYS[2] -> source log ([Source])
// KEYS[3] -> breaker state ([Breaker])
// KEYS[4] -> suppression ([Suppression])
// KEYS[5] -> held emails ([Held])
// KEYS[6] -> [Stats]
// KEYS[7] -> [Decisions]
// KEYS[8] -> admitted counter ([Admitted])
// KEYS[9] -> [Kinds]
// KEYS[10] -> [BreakerCount]
// KEYS[11] -> [BreakerRefused]
// KEYS[12] -> [BreakerInfo]
// KEYS[13] -> [BreakerPace]
// KEYS[14] -> [BreakerSendPace]
// --
// ARGV[1] -> email tag ([EmailTag])
// ARGV[2] -> email id
// ARGV[3] -> encoded payload (stored only when held)
// ARGV[4] -> "1" to log an admission (refusals are always logged)
// ARGV[5] -> recipient hash for the log
//
// Returns "<outcome>:<reason>" followed by the breaker suffix (see
// [BreakerConfig]): "queued:", "queued:replay", "queued:probe",
// "queued:clamp", "suppressed:", "duplicate:", "capped:recipient",
// "capped:source", "held:breaker", "held:replay", "shed:breaker",
// "shed:clamp" or "shed:hold_full".
func AdmitScript(c AdmitConfig) *redis.Script {
	var b strings.Builder
	writeBreaker(&b, c.Kind, c.Breaker)
	fmt.Fprintf(&b, "local LOGLEN = %d\n", c.LogLen)
	b.WriteString(`local rkey, skey, ukey, hkey, stkey, logkey, qkey = KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[13]
BK, NK, FK, IK, PK, SK = KEYS[3], KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[14]
local tag, id, payload, sample, rcpt = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
`)
	if len(c.Source) > 0 {
		b.WriteString(`-- 48-bit big-endian times in plain Lua (no struct library, which
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
`)
	}
	b.WriteString(`
local cur = redis.call('MGET', rkey, skey, BK, ukey, NK)
local rlog, slog = cur[1] or '', cur[2] or ''
local p = string.find(rlog, tag, 1, true)
while p do
  if (p - 1) % 19 == 0 then return 'queued:replay' .. ` + rawSuffix("cur[3]") + ` end
  p = string.find(rlog, tag, p + 1, true)
end

local t = redis.call('TIME')
` + clockLua + `local now = NOW
local nows = t[1] - 1577836800
local outcome, reason = nil, ''
-- The n-th newest recipient admission's time is string.sub(rlog, 19n-9, 19n).
if cur[4] then
  outcome = 'suppressed'
`)
	writeRecipientChecks(&b, c)
	for _, w := range c.Source {
		fmt.Fprintf(&b, "elseif #slog >= %d and now - u48(slog, %d) < %d then\n  outcome, reason = 'capped', 'source'\n", w[0]*6, (w[0]-1)*6+1, w[1])
	}
	b.WriteString(`end

-- The breaker. Every request counts in the window. Two cases need no
-- breaker functions: a closed breaker in the same window that does not
-- trip, and an open one (not for the relay) in the same window whose
-- cooldown runs.
local nidx = math.floor(now / W)
CNT = redis.call('INCR', NK)
local frac = 1 - (now - nidx * W) / W
local refused = outcome == 'duplicate' or outcome == 'capped'
local cf
local sfx = ''
local bst, brs, bidx, bprev, bprevf, bthr, buntl, bai = string.match(cur[3] or '', '^(%a)(%S) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$')
local fast = bst ~= nil and tonumber(bidx) == nidx
if fast and bst == 'c' then
`)
	if c.Breaker.SurgeFactor > 0 {
		b.WriteString("  if tonumber(bprev) * frac + CNT > tonumber(bthr) then fast = false end\n")
	}
	if c.Breaker.RefusalRatio > 0 {
		b.WriteString(`  if fast and refused then
    cf = redis.call('INCR', FK)
    if cf == 1 then redis.call('PEXPIRE', FK, 2 * W + 1000) end
    local est = tonumber(bprev) * frac + CNT
    if est >= RMINC and tonumber(bprevf) * frac + cf >= RR * est then fast = false end
  end
`)
	}
	b.WriteString(`elseif fast and bst == 'o' and brs ~= 'r' and (buntl == '0' or now < tonumber(buntl)) then
`)
	if c.Breaker.RefusalRatio > 0 {
		b.WriteString(`  if refused then
    cf = redis.call('INCR', FK)
    if cf == 1 then redis.call('PEXPIRE', FK, 2 * W + 1000) end
  end
`)
	}
	b.WriteString("  if not outcome then\n")
	writeAdmitBreaker(&b, c.Breaker.Mode, "tonumber(bai)", "bst")
	b.WriteString(`  end
  sfx = '|' .. bst .. brs
else
  fast = false
end
if not fast then
`)
	b.WriteString(breakerLib)
	b.WriteString(`B = bparse(cur[3])
if not B or B.idx ~= nidx then broll(nidx, CNT - 1, 1) end
if B.st ~= 'c' then btick() end
local est = B.prev * frac + CNT
`)
	if c.Breaker.SurgeFactor > 0 {
		b.WriteString("if (B.st ~= 'o' or B.rs == 'r') and est > B.thr then bopen('s', B.st == 'h') end\n")
	}
	if c.Breaker.RefusalRatio > 0 {
		b.WriteString(`if refused then
  if not cf then
    cf = redis.call('INCR', FK)
    if cf == 1 then redis.call('PEXPIRE', FK, 2 * W + 1000) end
  end
  if (B.st ~= 'o' or B.rs == 'r') and est >= RMINC and B.prevf * frac + cf >= RR * est then bopen('f', B.st == 'h') end
end
`)
	}
	b.WriteString("if not outcome and B.st ~= 'c' and B.rs ~= 'r' then\n")
	writeAdmitBreaker(&b, c.Breaker.Mode, "B.ai", "B.st")
	b.WriteString("end\nsfx = bsuffix()\nend\n")
	b.WriteString("\nlocal field\nif not outcome then\n  outcome = 'queued'\n")
	writeRecipientLog(&b, c)
	if len(c.Source) > 0 {
		fmt.Fprintf(&b, "  redis.call('SET', skey, p48(now) .. string.sub(slog, 1, %d), 'PX', %d)\n",
			(max(c.SourceLen, 1)-1)*6, max(c.SourceTTL, 1))
	}
	b.WriteString(`  if redis.call('INCR', KEYS[8]) == 1 then redis.call('SADD', KEYS[9], KIND) end
elseif reason ~= 'replay' then
  field = KIND .. '|a:' .. outcome
  if reason ~= '' then field = field .. ':' .. reason end
  redis.call('HINCRBY', stkey, field, 1)
end
if (outcome ~= 'queued' and reason ~= 'replay') or sample == '1' then
  redis.call('XADD', logkey, 'MAXLEN', '~', LOGLEN, '*', 'stage', 'admit', 'kind', KIND,
    'outcome', outcome, 'reason', reason, 'id', id, 'rcpt', rcpt)
end
return outcome .. ':' .. reason .. sfx
`)
	return redis.NewScript(b.String())
}

// ReleaseScript returns the script that takes one email out of a kind's
// [Held] hash, for a release or a purge. The entry's held outcome is
// uncounted in [Stats] (the "a:" or "d:" field it was counted in) and the
// email's new fate counted instead, so each request keeps exactly one
// terminal outcome or is in flight again:
//
//   - purge: counted shed, reason "purged";
//   - invalid (the payload cannot be decoded): counted failed, "payload";
//   - release of an email held at dispatch: it was admitted before, so it
//     is in flight again; its "held" claim is deleted so that dispatch
//     decides afresh;
//   - release of an email held at admission: admitted again without the
//     per-source windows (the source is not kept) and without the breaker,
//     but with suppression, the dedup window and the per-recipient windows,
//     because held emails consumed no quota: a refusal is counted as that
//     outcome; an admission writes the recipient log and is counted in
//     [Admitted].
//
// A released email is moved to [Releasing]; the caller enqueues it and
// then removes it from there.
//
// KEYS[1] -> recipient log ([Recipient]; any guard key for purge/invalid)
// KEYS[2] -> suppression ([Suppression]; likewise)
// KEYS[3] -> [Held]
// KEYS[4] -> [Releasing]
// KEYS[5] -> [Stats]
// KEYS[6] -> [Decisions]
// KEYS[7] -> admitted counter ([Admitted])
// KEYS[8] -> [Kinds]
// KEYS[9] -> claim ([Claim])
// --
// ARGV[1] -> email tag ([EmailTag])
// ARGV[2] -> email id
// ARGV[3] -> "release", "purge" or "invalid"
// ARGV[4] -> recipient hash for the log
//
// Returns "gone:" (not held any more), "queued:" (moved to [Releasing]),
// "shed:purged", "failed:payload", or the refusal "<outcome>:<reason>".
func ReleaseScript(c AdmitConfig) *redis.Script {
	checkKind(c.Kind)
	var b strings.Builder
	fmt.Fprintf(&b, "local KIND, LOGLEN = '%s', %d\n", c.Kind, c.LogLen)
	b.WriteString(`local rkey, ukey, hkey, hrkey, stkey, logkey, akey, kkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local tag, id, op, rcpt = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local v = redis.call('HGET', hkey, id)
if not v then return 'gone:' end
local at, payload = string.sub(v, 1, 1), string.sub(v, 2)
if at ~= 'a' and at ~= 'd' then at, payload = 'a', v end
redis.call('HDEL', hkey, id)
redis.call('HINCRBY', stkey, KIND .. '|' .. at .. ':held:breaker', -1)
local function refuse(outcome, reason)
  local field = KIND .. '|' .. at .. ':' .. outcome
  if reason ~= '' then field = field .. ':' .. reason end
  redis.call('HINCRBY', stkey, field, 1)
  redis.call('XADD', logkey, 'MAXLEN', '~', LOGLEN, '*', 'stage', 'release', 'kind', KIND,
    'outcome', outcome, 'reason', reason, 'id', id, 'rcpt', rcpt)
  return outcome .. ':' .. reason
end
if op == 'purge' then return refuse('shed', 'purged') end
if op == 'invalid' then return refuse('failed', 'payload') end
if at == 'd' then
  if redis.call('GET', ckey) == '4' then redis.call('DEL', ckey) end
  redis.call('HSET', hrkey, id, payload)
  return 'queued:'
end
local cur = redis.call('MGET', rkey, ukey)
local rlog = cur[1] or ''
local nows = redis.call('TIME')[1] - 1577836800
local outcome, reason = nil, ''
if cur[2] then
  outcome = 'suppressed'
`)
	writeRecipientChecks(&b, c)
	b.WriteString("end\nif outcome then return refuse(outcome, reason) end\n")
	writeRecipientLog(&b, c)
	b.WriteString(`if redis.call('INCR', akey) == 1 then redis.call('SADD', kkey, KIND) end
redis.call('HSET', hrkey, id, payload)
return 'queued:'
`)
	return redis.NewScript(b.String())
}

// DispatchScript returns the dispatch script of one kind. It decides
// whether one send attempt may proceed now. In order:
//
//  1. the idempotency claim: this attempt's claim → allowed again (a re-sent
//     script; the lease is renewed, no rate is consumed twice); "sent" →
//     duplicate (counted "redelivered", not as a new outcome); another
//     terminal state → that outcome again, uncounted; another attempt's live
//     claim → deferred until its lease ends;
//  2. expiry: past the email's expires_at (Redis clock) → expired, terminal;
//  3. the kind's breaker: open for relay → deferred ("relay") until it
//     turns half-open; open in hold mode → parked in [Held] (beyond
//     hold_max, shed); open in shed mode → shed; open in clamp mode or
//     half-open → paced by [BreakerSendPace], the rest deferred ("breaker",
//     or "relay" for a relay breaker);
//  4. the global and the domain GCRA, both checked before either (or the
//     breaker's pace) is consumed; if either is exhausted → deferred,
//     nothing consumed, no claim taken;
//  5. otherwise the rates are consumed and the claim is taken with a lease.
//
// KEYS[1] -> claim ([Claim])
// KEYS[2] -> [Global]
// KEYS[3] -> domain rate ([Domain])
// KEYS[4] -> breaker state ([Breaker])
// KEYS[5] -> held emails ([Held])
// KEYS[6] -> [Stats]
// KEYS[7] -> [Decisions]
// KEYS[8] -> [BreakerInfo]
// KEYS[9] -> [BreakerCount]
// KEYS[10] -> [BreakerSendPace]
// KEYS[11] -> [BreakerPace]
// --
// ARGV[1]  -> claim value of this attempt ([AttemptValue])
// ARGV[2]  -> lease, ms
// ARGV[3]  -> expires_at, unix ms
// ARGV[4]  -> how long terminal claims outlive expires_at, ms
// ARGV[5]  -> global emission interval, µs
// ARGV[6]  -> global burst offset (interval × burst), µs
// ARGV[7]  -> domain emission interval, µs
// ARGV[8]  -> domain burst offset, µs
// ARGV[9]  -> email id
// ARGV[10] -> encoded payload (stored only when held)
// ARGV[11] -> "1" to log an allowed or deferred attempt
// ARGV[12] -> recipient hash for the log
// ARGV[13] -> decision log MAXLEN
//
// Returns, followed by the breaker suffix: "allow:", "allow:replay",
// "duplicate:sent", "expired:", "held:breaker", "shed:breaker",
// "shed:hold_full", "<terminal outcome>:replay", "deferred:claimed:<ms>",
// "deferred:relay:<ms>", "deferred:breaker:<ms>", "deferred:global:<ms>"
// or "deferred:domain:<ms>" (ms ≥ 1).
func DispatchScript(kind string, c BreakerConfig) *redis.Script {
	var b strings.Builder
	writeBreaker(&b, kind, c)
	b.WriteString(`local ckey, gkey, dkey, hkey, stkey, logkey, pkey = KEYS[1], KEYS[2], KEYS[3], KEYS[5], KEYS[6], KEYS[7], KEYS[10]
BK, IK, NK, SK, PK = KEYS[4], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local attempt, lease, exp, margin = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local gi, gb, di, db = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local id, payload, sample, rcpt, loglen = ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]

local function record(field, outcome, reason, always)
  redis.call('HINCRBY', stkey, KIND .. '|d:' .. field, 1)
  if always or sample == '1' then
    redis.call('XADD', logkey, 'MAXLEN', '~', loglen, '*', 'stage', 'dispatch', 'kind', KIND,
      'outcome', outcome, 'reason', reason, 'id', id, 'rcpt', rcpt)
  end
end

local cur = redis.call('MGET', ckey, BK, gkey, dkey)
local claim = cur[1]
local sfx = ` + rawSuffix("cur[2]") + `
if claim then
  if claim == attempt then
    redis.call('PEXPIRE', ckey, lease)
    return 'allow:replay' .. sfx
  end
  if claim == '1' then
    record('redelivered', 'duplicate', 'sent', true)
    return 'duplicate:sent' .. sfx
  end
  if claim == '2' then return 'failed:replay' .. sfx end
  if claim == '3' then return 'expired:replay' .. sfx end
  if claim == '4' then return 'held:replay' .. sfx end
  if claim == '5' then return 'shed:replay' .. sfx end
  local left = redis.call('PTTL', ckey)
  if left < 1 then left = 1 end
  record('deferred:claimed', 'deferred', 'claimed', false)
  return 'deferred:claimed:' .. left .. sfx
end

local t = redis.call('TIME')
` + clockLua + `local now_ms = NOW
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

-- The breaker: nothing to do when it is closed.
local paced
if sfx ~= '' then
`)
	b.WriteString(breakerLib)
	b.WriteString(`B = bparse(cur[2])
btick()
if B.st == 'o' and B.rs == 'r' then
  local left = B.untl - now_ms
  if B.untl == 0 then left = COOL end
  return defer('relay', left) .. bsuffix()
elseif B.st == 'o' and MODE == 'hold' then
  if redis.call('HLEN', hkey) < HOLDMAX then
    redis.call('HSET', hkey, id, 'd' .. payload)
    redis.call('PEXPIRE', hkey, HOLDTTL)
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
redis.call('SET', ckey, attempt, 'PX', lease)
if sample == '1' then
  redis.call('XADD', logkey, 'MAXLEN', '~', loglen, '*', 'stage', 'dispatch', 'kind', KIND,
    'outcome', 'dispatched', 'reason', '', 'id', id, 'rcpt', rcpt)
end
return 'allow:' .. sfx
`)
	return redis.NewScript(b.String())
}

// SettleScript returns the settle script of one kind: it records the
// result of an allowed send attempt.
//
// "retry" (a temporary failure) deletes the claim if it is still this
// attempt's, so a later attempt may send; "sent", "failed" and "expired" make
// the claim terminal until expires_at plus a margin, unless it already is.
// Terminal states never change, so a re-sent script, or a second attempt
// that raced after a lost lease, counts nothing twice.
//
// A recorded result that says something about the relay feeds the relay
// breaker: a failure counts towards RelayFailures consecutive failures and
// the window's failure ratio, and re-opens a half-open relay breaker; a
// success resets the consecutive count and closes a half-open relay
// breaker.
//
// KEYS[1] -> claim ([Claim])
// KEYS[2] -> [Stats]
// KEYS[3] -> [Decisions]
// KEYS[4] -> breaker state ([Breaker])
// KEYS[5] -> [BreakerInfo]
// KEYS[6] -> [BreakerCount]
// KEYS[7] -> [BreakerPace]
// KEYS[8] -> [BreakerSendPace]
// --
// ARGV[1] -> claim value of this attempt ([AttemptValue])
// ARGV[2] -> "sent", "failed", "expired" or "retry"
// ARGV[3] -> reason ("" or a short token)
// ARGV[4] -> expires_at, unix ms
// ARGV[5] -> how long terminal claims outlive expires_at, ms
// ARGV[6] -> "1" to log a sent email (other results are always logged)
// ARGV[7] -> recipient hash for the log
// ARGV[8] -> email id
// ARGV[9] -> decision log MAXLEN
// ARGV[10] -> relay result: "f" (the relay failed), "s" (it answered) or ""
//
// Returns "recorded" when the result was counted, "noop" otherwise,
// followed by the breaker suffix.
func SettleScript(kind string, c BreakerConfig) *redis.Script {
	var b strings.Builder
	writeBreaker(&b, kind, c)
	b.WriteString(`local ckey, stkey, logkey = KEYS[1], KEYS[2], KEYS[3]
BK, IK, NK, PK, SK = KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local attempt, outcome, reason, exp, margin = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local sample, rcpt, id, loglen, relay = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]

local claim = redis.call('GET', ckey)
if outcome == 'retry' then
  if claim ~= attempt then return 'noop' end
  redis.call('DEL', ckey)
else
  if claim == '1' or claim == '2' or claim == '3' or claim == '4' or claim == '5' then return 'noop' end
  local code = '1'
  if outcome == 'failed' then code = '2' elseif outcome == 'expired' then code = '3' end
  local t = redis.call('TIME')
  local ttl = exp - (t[1] * 1000 + math.floor(t[2] / 1000))
  if ttl < 0 then ttl = 0 end
  redis.call('SET', ckey, code, 'PX', ttl + margin)
end
local field = KIND .. '|d:' .. outcome
if reason ~= '' then field = field .. ':' .. reason end
redis.call('HINCRBY', stkey, field, 1)
if outcome ~= 'sent' or sample == '1' then
  redis.call('XADD', logkey, 'MAXLEN', '~', loglen, '*', 'stage', 'settle', 'kind', KIND,
    'outcome', outcome, 'reason', reason, 'id', id, 'rcpt', rcpt)
end
if relay == '' then return 'recorded' end

local t = redis.call('TIME')
` + clockLua)
	b.WriteString(breakerLib)
	b.WriteString(`B = bparse(redis.call('GET', BK))
if not B then
  B = {st = 'c', rs = '-', idx = math.floor(NOW / W), prev = 0, prevf = 0, thr = bthr(bbase()), untl = 0, ai = 0}
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
`)
	return redis.NewScript(b.String())
}

// ControlScript returns the script behind the admin API of one kind's
// breaker. It rolls the counting window over and applies the transitions
// that are due by time, so that a quiet kind shows its true state; "trip"
// then opens the breaker by hand (until reset: it does not turn half-open
// by time), "reset" closes it and clears its counts, its relay counters and
// its cooldown doublings.
//
// KEYS[1] -> breaker state ([Breaker])
// KEYS[2] -> [BreakerInfo]
// KEYS[3] -> [BreakerCount]
// KEYS[4] -> [BreakerRefused]
// KEYS[5] -> [Held]
// KEYS[6] -> [Releasing]
// KEYS[7] -> [BreakerPace]
// KEYS[8] -> [BreakerSendPace]
// --
// ARGV[1] -> "state", "trip" or "reset"
// ARGV[2] -> reason code for trip: "s", "f", "r" or "m"
//
// Returns {state code, reason code, since ms, opened ms, rate (req/s),
// baseline (req/s), held, until ms, threshold (requests per window), level,
// releasing} followed by one transition record per transition (see
// [BreakerConfig]).
func ControlScript(kind string, c BreakerConfig) *redis.Script {
	var b strings.Builder
	writeBreaker(&b, kind, c)
	b.WriteString(`BK, IK, NK, FK, PK, SK = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[7], KEYS[8]
local hkey, hrkey = KEYS[5], KEYS[6]
local op, rc = ARGV[1], ARGV[2]

local t = redis.call('TIME')
` + clockLua)
	b.WriteString(breakerLib)
	b.WriteString(`local nidx = math.floor(NOW / W)
B = bparse(redis.call('GET', BK))
CNT = tonumber(redis.call('GET', NK)) or 0
if not B or B.idx ~= nidx then broll(nidx, CNT, 0) end
btick()
if op == 'trip' then
  if not (B.st == 'o' and B.untl == 0 and B.rs == rc) then bopen(rc, false, true) end
elseif op == 'reset' then
  if B.st ~= 'c' then bclose('m') end
  B.prev, B.prevf, CNT, dirty = 0, 0, 0, true
  redis.call('SET', NK, 0, 'PX', 2 * W + 1000)
  redis.call('DEL', FK)
  redis.call('HSET', IK, 'lvl', 0, 'rc', 0, 'rf', 0, 'ro', 0, 'pf', 0, 'po', 0)
end
bsuffix()
local info = redis.call('HMGET', IK, 'since', 'opened', 'lvl')
local res = {B.st, B.rs, info[1] or '0', info[2] or '0', string.format('%.3f', brate(CNT)), string.format('%.6f', bbase()),
  redis.call('HLEN', hkey), string.format('%d', B.untl), string.format('%d', B.thr), info[3] or '0', redis.call('HLEN', hrkey)}
if trans then
  for i = 1, #trans do res[#res + 1] = trans[i] end
end
return res
`)
	return redis.NewScript(b.String())
}
