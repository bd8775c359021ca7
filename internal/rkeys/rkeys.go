// Package rkeys names every Redis key the guard uses and holds the Lua
// scripts behind its decisions, so that key layout and scripts can be read
// and reviewed in one place.
//
// Every key carries the hash tag [Tag]: on Redis Cluster all guard keys live
// in one slot and each script runs on one node in one round trip. Recipient
// and source keys are built from truncated SHA-256 digests and hold no
// address; the suppression hash is keyed by a digest too.
package rkeys

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Tag is the hash tag shared by every guard key.
const Tag = "{fg}"

// Fixed keys.
const (
	// Suppressions is a hash: field [SuppressionField], value
	// "<reason>|<unix ms>". It never expires: entries are removed by
	// Unsuppress.
	Suppressions = Tag + ":sup"
	// Global is the global send rate's GCRA state (theoretical arrival time
	// in µs since [GCRAEpoch]); it expires when the bucket is full again.
	Global = Tag + ":g"
	// Stats is a hash of counters: field "<kind>|a:<outcome>[:<reason>]"
	// for admission decisions, "<kind>|d:<outcome>[:<reason>]" for dispatch
	// and settle decisions. Bounded by kinds × outcomes × reasons.
	Stats = Tag + ":stats"
	// Decisions is the decision log, a stream trimmed with MAXLEN ~.
	Decisions = Tag + ":log"
)

// Digest lengths. A recipient key is 14 bytes (tag, type byte, 9-byte
// digest) so that Redis stores it in a 16-byte allocation; see the package
// doc of guard for the memory figures behind this.
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
	h := sha256.New()
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(s))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	var b strings.Builder
	b.Grow(len(Tag) + 1 + n)
	b.WriteString(Tag)
	b.WriteByte(typ)
	b.Write(sum[:n])
	return b.String()
}

// SuppressionField returns the field of a canonical recipient in
// [Suppressions]: the first 16 bytes of its SHA-256.
func SuppressionField(canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	return string(sum[:supDigest])
}

// EmailTag returns the tag that marks an email's entry in a recipient log,
// so that a re-sent admission script recognises its own earlier admission:
// 9 decimal digits from 100000000 to 922337202 (about 2^29.6 values), so an
// entry never starts with 0 and a single entry stays below 2^63.
func EmailTag(id string) string {
	sum := sha256.Sum256([]byte(id))
	return strconv.FormatUint(100000000+binary.BigEndian.Uint64(sum[:8])%822337203, 10)
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

// Admit decides whether an email may be queued: suppression, dedup window,
// every per-recipient window, every per-source window and the kind's
// breaker, atomically. Counters are written only when the email is queued,
// so a refusal consumes nobody's quota. Every decision is counted in
// [Stats]; refusals, and admissions when sampled, are appended to
// [Decisions]. If the recipient log already holds this email's tag the
// email was admitted by an earlier run whose reply was lost: the script
// answers "queued:replay" and changes nothing.
//
// KEYS[1] -> recipient log ([Recipient])
// KEYS[2] -> [Suppressions]
// KEYS[3] -> source log ([Source])
// KEYS[4] -> breaker state ([Breaker])
// KEYS[5] -> held emails ([Held])
// KEYS[6] -> [Stats]
// KEYS[7] -> [Decisions]
// --
// ARGV[1]  -> email tag ([EmailTag])
// ARGV[2]  -> suppression field ([SuppressionField])
// ARGV[3]  -> email id
// ARGV[4]  -> encoded payload (stored only when held)
// ARGV[5]  -> "1" to log an admission (refusals are always logged)
// ARGV[6]  -> recipient hash for the log
// ARGV[7]  -> kind
// ARGV[8]  -> decision log MAXLEN
// ARGV[9]  -> breaker open mode: "hold", "shed" or "clamp"
// ARGV[10] -> hold_max
// ARGV[11] -> dedup window, whole seconds (0 = none)
// ARGV[12] -> recipient log TTL, ms
// ARGV[13] -> recipient log length (entries kept)
// ARGV[14] -> nr, the number of per-recipient windows
// ARGV[15] -> nr pairs: limit, window in whole seconds
// then     -> source log TTL ms, source log length, ns, and ns pairs
//
// Returns "<outcome>:<reason>": "queued:", "queued:replay",
// "suppressed:", "duplicate:", "capped:recipient", "capped:source",
// "held:breaker", "held:replay", "shed:breaker" or "shed:hold_full".
var Admit = redis.NewScript(`
local rkey, supkey, skey, bkey, hkey, stkey, logkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local tag, supf, id, payload, sample, rcpt = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local kind, loglen, mode, holdmax = ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10])
local dedup, rkeep, rkmax, nr = tonumber(ARGV[11]), ARGV[12], tonumber(ARGV[13]), tonumber(ARGV[14])
local si = 15 + 2 * nr
local skeep, skmax, ns = ARGV[si], tonumber(ARGV[si + 1]), tonumber(ARGV[si + 2])

local rlog = redis.call('GET', rkey) or ''
local p = string.find(rlog, tag, 1, true)
while p do
  if (p - 1) % 19 == 0 then return 'queued:replay' end
  p = string.find(rlog, tag, p + 1, true)
end

local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local nows = t[1] - 1577836800
-- age in whole seconds of the n-th newest recipient admission
local function age(n)
  return nows - tonumber(string.sub(rlog, n * 19 - 9, n * 19))
end
local outcome, reason, slog = nil, '', ''
if redis.call('HEXISTS', supkey, supf) == 1 then
  outcome = 'suppressed'
elseif dedup > 0 and #rlog >= 19 and age(1) <= dedup then
  outcome = 'duplicate'
else
  for j = 0, nr - 1 do
    local n, w = tonumber(ARGV[15 + 2 * j]), tonumber(ARGV[16 + 2 * j])
    if #rlog >= n * 19 and age(n) <= w then
      outcome, reason = 'capped', 'recipient'
      break
    end
  end
  if not outcome and ns > 0 then
    slog = redis.call('GET', skey) or ''
    for j = 0, ns - 1 do
      local n, w = tonumber(ARGV[si + 3 + 2 * j]), tonumber(ARGV[si + 4 + 2 * j])
      if #slog >= n * 6 and now - struct.unpack('>I6', slog, (n - 1) * 6 + 1) < w then
        outcome, reason = 'capped', 'source'
        break
      end
    end
  end
  if not outcome and redis.call('GET', bkey) == 'open' then
    if mode == 'shed' then
      outcome, reason = 'shed', 'breaker'
    elseif mode == 'hold' then
      if redis.call('HEXISTS', hkey, id) == 1 then return 'held:replay' end
      if redis.call('HLEN', hkey) < holdmax then
        redis.call('HSET', hkey, id, payload)
        outcome, reason = 'held', 'breaker'
      else
        outcome, reason = 'shed', 'hold_full'
      end
    end
  end
end

if not outcome then
  outcome = 'queued'
  redis.call('SET', rkey, tag .. string.format('%010d', nows) .. string.sub(rlog, 1, (rkmax - 1) * 19), 'PX', rkeep)
  if ns > 0 then
    redis.call('SET', skey, struct.pack('>I6', now) .. string.sub(slog, 1, (skmax - 1) * 6), 'PX', skeep)
  end
end
local field = kind .. '|a:' .. outcome
if reason ~= '' then field = field .. ':' .. reason end
redis.call('HINCRBY', stkey, field, 1)
if outcome ~= 'queued' or sample == '1' then
  redis.call('XADD', logkey, 'MAXLEN', '~', loglen, '*', 'stage', 'admit', 'kind', kind,
    'outcome', outcome, 'reason', reason, 'id', id, 'rcpt', rcpt)
end
return outcome .. ':' .. reason
`)

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

local claim = redis.call('GET', ckey)
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

if redis.call('GET', bkey) == 'open' then
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
local function gcra(key, interval, offset)
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new = tat + interval
  local wait = new - offset - now
  if wait > 0 then return nil, wait end
  return new, 0
end
local gnew, gwait = gcra(gkey, gi, gb)
local dnew, dwait = gcra(dkey, di, db)
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
