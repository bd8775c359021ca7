// Package rkeys names every Redis key the guard uses and holds the Lua
// scripts behind its decisions, so that key layout and scripts can be read
// and reviewed in one place.
//
// Every key carries the hash tag [Tag]: on Redis Cluster all guard keys live
// in one slot and each script runs on one node in one round trip. Recipient,
// source and suppression keys are built from truncated SHA-256 digests and
// hold no address. Scripts: [AdmitScript] (one per kind), [Dispatch],
// [Settle].
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

// Breaker returns the breaker state key of a kind. The admission and
// dispatch scripts read it: "open" means the kind's breaker is open; any
// other value or no key means closed.
func Breaker(kind string) string { return Tag + ":b:" + kind }

// Held returns the hash holding parked emails of a kind: field email id,
// value the encoded payload.
func Held(kind string) string { return Tag + ":h:" + kind }

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
	// Hold and Shed say what an open breaker does; neither (clamp) is not
	// applied yet.
	Hold, Shed bool
	// HoldMax bounds the held emails of the kind.
	HoldMax int
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
// On the common path it makes five Redis calls: one MGET of everything it
// reads, TIME, a SET per log and one INCR. The kind's settings are
// constants in the script (one script per kind and policy, cached by Redis
// under its SHA1).
//
// KEYS[1] -> recipient log ([Recipient])
// KEYS[2] -> source log ([Source])
// KEYS[3] -> breaker state ([Breaker])
// KEYS[4] -> suppression ([Suppression])
// KEYS[5] -> held emails ([Held])
// KEYS[6] -> [Stats]
// KEYS[7] -> [Decisions]
// --
// KEYS[8] -> admitted counter ([Admitted])
// KEYS[9] -> [Kinds]
// --
// ARGV[1] -> email tag ([EmailTag])
// ARGV[2] -> email id
// ARGV[3] -> encoded payload (stored only when held)
// ARGV[4] -> "1" to log an admission (refusals are always logged)
// ARGV[5] -> recipient hash for the log
//
// Returns "<outcome>:<reason>": "queued:", "queued:replay",
// "suppressed:", "duplicate:", "capped:recipient", "capped:source",
// "held:breaker", "held:replay", "shed:breaker" or "shed:hold_full".
func AdmitScript(c AdmitConfig) *redis.Script {
	if strings.ContainsFunc(c.Kind, func(r rune) bool { return !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }) {
		panic("rkeys: kind name " + strconv.Quote(c.Kind) + " cannot be embedded in a script")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "local KIND, LOGLEN = '%s', %d\n", c.Kind, c.LogLen)
	b.WriteString(`local rkey, skey, bkey, ukey, hkey, stkey, logkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
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
local cur = redis.call('MGET', rkey, skey, bkey, ukey)
local rlog, slog = cur[1] or '', cur[2] or ''
local p = string.find(rlog, tag, 1, true)
while p do
  if (p - 1) % 19 == 0 then return 'queued:replay' end
  p = string.find(rlog, tag, p + 1, true)
end

local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local nows = t[1] - 1577836800
local outcome, reason = nil, ''
-- The n-th newest recipient admission's time is string.sub(rlog, 19n-9, 19n).
if cur[4] then
  outcome = 'suppressed'
`)
	if c.Dedup > 0 {
		fmt.Fprintf(&b, "elseif #rlog >= 19 and nows - tonumber(string.sub(rlog, 10, 19)) <= %d then\n  outcome = 'duplicate'\n", c.Dedup)
	}
	for _, w := range c.Recipient {
		fmt.Fprintf(&b, "elseif #rlog >= %d and nows - tonumber(string.sub(rlog, %d, %d)) <= %d then\n  outcome, reason = 'capped', 'recipient'\n",
			w[0]*19, w[0]*19-9, w[0]*19, w[1])
	}
	for _, w := range c.Source {
		fmt.Fprintf(&b, "elseif #slog >= %d and now - u48(slog, %d) < %d then\n  outcome, reason = 'capped', 'source'\n", w[0]*6, (w[0]-1)*6+1, w[1])
	}
	switch {
	case c.Shed:
		b.WriteString("elseif cur[3] == 'open' then\n  outcome, reason = 'shed', 'breaker'\n")
	case c.Hold:
		fmt.Fprintf(&b, `elseif cur[3] == 'open' then
  if redis.call('HEXISTS', hkey, id) == 1 then return 'held:replay' end
  if redis.call('HLEN', hkey) < %d then
    redis.call('HSET', hkey, id, payload)
    outcome, reason = 'held', 'breaker'
  else
    outcome, reason = 'shed', 'hold_full'
  end
`, c.HoldMax)
	}
	b.WriteString("end\n\nlocal field\nif not outcome then\n  outcome = 'queued'\n")
	fmt.Fprintf(&b, "  redis.call('SET', rkey, tag .. string.format('%%010d', nows) .. string.sub(rlog, 1, %d), 'PX', %d)\n",
		(max(c.RecipientLen, 1)-1)*19, max(c.RecipientTTL, 1))
	if len(c.Source) > 0 {
		fmt.Fprintf(&b, "  redis.call('SET', skey, p48(now) .. string.sub(slog, 1, %d), 'PX', %d)\n",
			(max(c.SourceLen, 1)-1)*6, max(c.SourceTTL, 1))
	}
	b.WriteString(`  if redis.call('INCR', KEYS[8]) == 1 then redis.call('SADD', KEYS[9], KIND) end
else
  field = KIND .. '|a:' .. outcome
  if reason ~= '' then field = field .. ':' .. reason end
  redis.call('HINCRBY', stkey, field, 1)
end
if outcome ~= 'queued' or sample == '1' then
  redis.call('XADD', logkey, 'MAXLEN', '~', LOGLEN, '*', 'stage', 'admit', 'kind', KIND,
    'outcome', outcome, 'reason', reason, 'id', id, 'rcpt', rcpt)
end
return outcome .. ':' .. reason
`)
	return redis.NewScript(b.String())
}

// Dispatch decides whether one send attempt may proceed now. In order:
//
//  1. the idempotency claim: this attempt's claim → allowed again (a re-sent
//     script; the lease is renewed, no rate is consumed twice); "sent" →
//     duplicate (counted "redelivered", not as a new outcome); another
//     terminal state → that outcome again, uncounted; another attempt's live
//     claim → deferred until its lease ends;
//  2. expiry: past the email's expires_at (Redis clock) → expired, terminal;
//  3. the kind's breaker (open: hold parks the payload, shed refuses);
//  4. the global and the domain GCRA, both checked before either is
//     consumed; if either is exhausted → deferred, nothing consumed, no
//     claim taken;
//  5. otherwise both rates are consumed and the claim is taken with a lease.
//
// KEYS[1] -> claim ([Claim])
// KEYS[2] -> [Global]
// KEYS[3] -> domain rate ([Domain])
// KEYS[4] -> breaker state ([Breaker])
// KEYS[5] -> held emails ([Held])
// KEYS[6] -> [Stats]
// KEYS[7] -> [Decisions]
// --
// ARGV[1]  -> claim value of this attempt ([AttemptValue])
// ARGV[2]  -> lease, ms
// ARGV[3]  -> expires_at, unix ms
// ARGV[4]  -> how long terminal claims outlive expires_at, ms
// ARGV[5]  -> global emission interval, µs
// ARGV[6]  -> global burst offset (interval × burst), µs
// ARGV[7]  -> domain emission interval, µs
// ARGV[8]  -> domain burst offset, µs
// ARGV[9]  -> breaker open mode
// ARGV[10] -> hold_max
// ARGV[11] -> email id
// ARGV[12] -> encoded payload (stored only when held)
// ARGV[13] -> kind
// ARGV[14] -> "1" to log an allowed or deferred attempt
// ARGV[15] -> recipient hash for the log
// ARGV[16] -> decision log MAXLEN
//
// Returns "allow:", "allow:replay", "duplicate:sent", "expired:",
// "held:breaker", "shed:breaker", "shed:hold_full",
// "<terminal outcome>:replay", "deferred:claimed:<ms>",
// "deferred:global:<ms>" or "deferred:domain:<ms>" (ms ≥ 1).
var Dispatch = redis.NewScript(`
local ckey, gkey, dkey, bkey, hkey, stkey, logkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local attempt, lease, exp, margin = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local gi, gb, di, db = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local mode, holdmax, id, payload = ARGV[9], tonumber(ARGV[10]), ARGV[11], ARGV[12]
local kind, sample, rcpt, loglen = ARGV[13], ARGV[14], ARGV[15], ARGV[16]

local function record(field, outcome, reason, always)
  redis.call('HINCRBY', stkey, kind .. '|d:' .. field, 1)
  if always or sample == '1' then
    redis.call('XADD', logkey, 'MAXLEN', '~', loglen, '*', 'stage', 'dispatch', 'kind', kind,
      'outcome', outcome, 'reason', reason, 'id', id, 'rcpt', rcpt)
  end
end

local cur = redis.call('MGET', ckey, bkey, gkey, dkey)
local claim, brk = cur[1], cur[2]
if claim then
  if claim == attempt then
    redis.call('PEXPIRE', ckey, lease)
    return 'allow:replay'
  end
  if claim == '1' then
    record('redelivered', 'duplicate', 'sent', true)
    return 'duplicate:sent'
  end
  if claim == '2' then return 'failed:replay' end
  if claim == '3' then return 'expired:replay' end
  if claim == '4' then return 'held:replay' end
  if claim == '5' then return 'shed:replay' end
  local left = redis.call('PTTL', ckey)
  if left < 1 then left = 1 end
  record('deferred:claimed', 'deferred', 'claimed', false)
  return 'deferred:claimed:' .. left
end

local t = redis.call('TIME')
local now_ms = t[1] * 1000 + math.floor(t[2] / 1000)
local function terminal(code, field, outcome, reason)
  local ttl = exp - now_ms
  if ttl < 0 then ttl = 0 end
  redis.call('SET', ckey, code, 'PX', ttl + margin)
  record(field, outcome, reason, true)
  if reason ~= '' then return outcome .. ':' .. reason end
  return outcome .. ':'
end
if now_ms >= exp then return terminal('3', 'expired', 'expired', '') end

if brk == 'open' then
  if mode == 'shed' then return terminal('5', 'shed:breaker', 'shed', 'breaker') end
  if mode == 'hold' then
    if redis.call('HLEN', hkey) < holdmax then
      redis.call('HSET', hkey, id, payload)
      return terminal('4', 'held:breaker', 'held', 'breaker')
    end
    return terminal('5', 'shed:hold_full', 'shed', 'hold_full')
  end
end

local now = (t[1] - 1577836800) * 1000000 + t[2]
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
  local ms = math.ceil(wait / 1000)
  if ms < 1 then ms = 1 end
  record('deferred:' .. which, 'deferred', which, false)
  return 'deferred:' .. which .. ':' .. ms
end
redis.call('SET', gkey, string.format('%d', gnew), 'PX', math.ceil((gnew - now) / 1000))
redis.call('SET', dkey, string.format('%d', dnew), 'PX', math.ceil((dnew - now) / 1000))
redis.call('SET', ckey, attempt, 'PX', lease)
if sample == '1' then
  redis.call('XADD', logkey, 'MAXLEN', '~', loglen, '*', 'stage', 'dispatch', 'kind', kind,
    'outcome', 'dispatched', 'reason', '', 'id', id, 'rcpt', rcpt)
end
return 'allow:'
`)

// Settle records the result of an allowed send attempt.
//
// "retry" (a temporary failure) deletes the claim if it is still this
// attempt's, so a later attempt may send; "sent", "failed" and "expired" make
// the claim terminal until expires_at plus a margin, unless it already is.
// Terminal states never change, so a re-sent script, or a second attempt
// that raced after a lost lease, counts nothing twice.
//
// KEYS[1] -> claim ([Claim])
// KEYS[2] -> [Stats]
// KEYS[3] -> [Decisions]
// --
// ARGV[1] -> claim value of this attempt ([AttemptValue])
// ARGV[2] -> "sent", "failed", "expired" or "retry"
// ARGV[3] -> reason ("" or a short token)
// ARGV[4] -> expires_at, unix ms
// ARGV[5] -> how long terminal claims outlive expires_at, ms
// ARGV[6] -> kind
// ARGV[7] -> "1" to log a sent email (other results are always logged)
// ARGV[8] -> recipient hash for the log
// ARGV[9] -> email id
// ARGV[10] -> decision log MAXLEN
//
// Returns "recorded" when the result was counted, "noop" otherwise.
var Settle = redis.NewScript(`
local ckey, stkey, logkey = KEYS[1], KEYS[2], KEYS[3]
local attempt, outcome, reason, exp, margin = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local kind, sample, rcpt, id, loglen = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]

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
local field = kind .. '|d:' .. outcome
if reason ~= '' then field = field .. ':' .. reason end
redis.call('HINCRBY', stkey, field, 1)
if outcome ~= 'sent' or sample == '1' then
  redis.call('XADD', logkey, 'MAXLEN', '~', loglen, '*', 'stage', 'settle', 'kind', kind,
    'outcome', outcome, 'reason', reason, 'id', id, 'rcpt', rcpt)
end
return 'recorded'
`)
