// Package rkeys names every Redis key the guard uses and holds the Lua
// scripts behind its decisions, so that key layout and scripts can be read
// and reviewed in one place.
//
// Every key carries the hash tag [Tag]: on Redis Cluster all guard keys live
// in one slot and each script runs on one node in one round trip. Recipient,
// source and suppression keys are built from truncated SHA-256 digests and
// hold no address. The scripts are Lua files under lua/, rendered per kind
// with the kind's settings as constants: [AdmitScript], [DispatchScript],
// [SettleScript], [FeedbackScript] (redemption and reports),
// [ControlScript] (the breaker's admin operations), [ReleaseScript] and
// [SweepScript] (held emails). The breaker's functions (lua/breaker.lua)
// are shared by them and described at [BreakerConfig]. The rendered
// scripts of the default policy are kept under testdata/ as golden files.
package rkeys

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
)

// Tag is the hash tag shared by every guard key.
const Tag = "{fg}"

// Fixed keys.
const (
	// Suppressions is a hash listing the suppression list for the admin
	// API: field [SuppressionField], value "<reason>|<unix ms>|<source>"
	// (older entries have no source). Each entry
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
// for one kind: "{fg}r" + the first 9 bytes of the [Digests] of kind NUL canonical. The value is the
// newest-first list of admissions, 19 decimal digits each: the email's tag
// ([EmailTag], 9 digits) and the admission time in seconds since
// [LogEpoch] (10 digits, zero-padded). A log of one entry is a decimal
// integer below 2^63, which Redis stores as a bare integer object: the
// common case of a recipient seen once costs no string allocation.
func Recipient(kind, canonical string) string { return unkeyed.Recipient(kind, canonical) }

// Source returns the key of the admission log of a source for one kind:
// "{fg}s" + the first 9 bytes of the [Digests] of kind NUL source. The value is the newest-first list
// of the times (6 bytes each, big-endian unix milliseconds) of the source's
// requests that passed the caps: admitted, held or shed by the breaker.
func Source(kind, source string) string { return unkeyed.Source(kind, source) }

// Account returns the recipient log key of an application account, used
// instead of [Recipient] when an email names its account: the same layout,
// from a digest that no address can produce (addresses hold no NUL).
func Account(kind, account string) string { return unkeyed.Account(kind, account) }

// Group returns the key of the admission log of a source group (a network
// such as "192.0.2.0/24") for one kind: "{fg}g" + the first 9 bytes of the [Digests] of kind NUL group,
// laid out like [Source].
func Group(kind, group string) string { return unkeyed.Group(kind, group) }

// None is a key that is never written: it stands for a group a source
// does not have (a non-IP source, or an IPv4 source for an IPv6 prefix).
const None = Tag + ":none"

// HeldMarker returns the key that marks a recipient with a held (or
// breaker-shed) email, from its recipient log key: "{fg}H" + the same
// digest. The value is the time it was held (seconds since [LogEpoch]),
// followed by "r" once the recipient asked again. It expires with the
// kind's TTL.
func HeldMarker(recipientKey string) string { return swapType(recipientKey, 'H') }

// Trace returns the key of a canonical recipient's trace for one kind, from
// its [Recipient] key: "{fg}e" + the same digest. It is keyed on the
// address even when the email names an account (whose caps use [Account]),
// so an operator can ask about an address. The value is the oldest-first
// list of the decisions about the recipient's emails, one line each, each
// line preceded by its newline:
//
//	\n<stage><ms since LogEpoch> <outcome>:<reason> <email id>
//
// stage a (admission), d (dispatch), s (settle) or r (release), appended
// by the scripts that take those decisions. Past [TraceMax] bytes a script
// keeps its entry and the [TraceKeep] bytes before it (the cut entry at the
// start, before the first newline, is ignored by the reader); the reader
// shows the newest entry and the older ones that fit in TraceKeep bytes,
// so the trace reads the same whenever it was cut. The scripts set the key
// to expire with the kind's longest per-recipient window or its TTL,
// whichever is longer; a trace begun by a refusal about a recipient with
// no history is budgeted ([TraceBudget]) and expires with the kind's
// source and group windows or its TTL. It holds no address, name, source
// or link. (An earlier layout, newest first and rewritten by every
// decision, was "{fg}t"; such keys are no longer read and expire.)
func Trace(recipientKey string) string { return swapType(recipientKey, 'e') }

// TraceBudget returns the prefix of the per-minute counters of the traces
// a kind's refusals begin for recipients with no history
// ("<prefix><minute since the Unix epoch>"); each expires after two minutes.
func TraceBudget(kind string) string { return Tag + ":tb:" + kind + ":" }

// TraceKeep bounds a trace: the bytes of entries older than the newest
// that a trace shows (about 30 entries).
const TraceKeep = 2048

// TraceMax bounds the bytes a trace key holds before a script cuts it back
// to its newest entry and TraceKeep bytes: appending the other decisions
// writes only their own entry.
const TraceMax = 2 * TraceKeep

// SourceTrust returns the key of the trust a source earned for a kind,
// from its [Source] key: "{fg}T" + the same digest. The value is the Redis
// ms at which one of its emails was first redeemed; it lasts the policy's
// trust period after the last redemption and is deleted by a report.
func SourceTrust(sourceKey string) string { return swapType(sourceKey, 'T') }

// GroupTrust returns the key of the trust a source group earned, from its
// [Group] key: "{fg}U" + the same digest, valued like [SourceTrust].
func GroupTrust(groupKey string) string { return swapType(groupKey, 'U') }

// swapType returns key with its type byte (after [Tag]) replaced.
func swapType(key string, typ byte) string {
	if len(key) <= len(Tag) || key == None {
		return None
	}
	return Tag + string(typ) + key[len(Tag)+1:]
}

// Digest returns the 9-byte digest part of a recipient, source or group
// key, as kept in a sent email's claim (see [SettleScript]).
func Digest(key string) string {
	if len(key) != len(Tag)+1+logDigest {
		return NoGroup
	}
	return key[len(Tag)+1:]
}

// NoGroup is the digest that stands for no group in a claim.
const NoGroup = "\x00\x00\x00\x00\x00\x00\x00\x00\x00"

// SuppressionField returns the field of a canonical recipient in
// [Suppressions]: the first 16 bytes of its unkeyed digest ([Digests]).
func SuppressionField(canonical string) string { return unkeyed.SuppressionField(canonical) }

// Suppression returns the key admission reads to learn that a canonical
// recipient is suppressed: "{fg}u" + [SuppressionField]; value as in
// [Suppressions]. A string key, so the admission script fetches it with the
// recipient's other state in one MGET.
func Suppression(canonical string) string { return unkeyed.Suppression(canonical) }

// SuppressionOfField returns the [Suppression] key of the recipient a
// [SuppressionField] names.
func SuppressionOfField(field string) string { return Tag + "u" + field }

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
//	"<st><rs> <idx> <prev> <prevf> <thr> <ceil> <until> <ai> <li> <opened> <didx> <dprev> <budget> <flags>"
//
// st c (closed), o (open) or h (half-open); rs the reason: s (surge), f
// (refusals), r (relay), m (manual), c (ceiling), b (budget), x
// (redemption), p (reports) or - (none); idx the index of the current
// counting window (Redis ms / window length); prev and prevf the eligible
// requests and the cap refusals of the window before it; thr the eligible
// count per window that trips the surge trip (0: off, as while warming
// up); ceil the rate ceiling per window; until the Redis ms at which an
// open breaker turns half-open or a half-open one ends (0: not by time); ai
// the µs between the emails an open clamp or a half-open breaker lets
// through (0: none); li the µs between the emails each lane of an open
// breaker lets through; opened the Redis ms the breaker last opened from
// closed; didx the index of the current budget period, dprev the new
// recipients admitted in the one before, budget the budget per period;
// flags 1 = warming up, 2 = the kind's redemption share is established.
// No key means closed. It does not expire: it is one short string per kind.
func Breaker(kind string) string { return Tag + ":b:" + kind }

// BreakerInfo returns the hash of a kind's breaker details, written on
// transitions and window rollovers only: "reason", "since", "opened" (Redis
// ms), "closed" (ms of the last close), "lvl" (how many times the cooldown
// was doubled), "born" (ms of the kind's first window), the learning state
// "cand" (the horizon average), "base" (the baseline, eligible requests/s),
// "n" (windows learned), "anc" and "ad" (the baseline at the start of day
// "ad"), the redemption state "rr" (learned share of sent emails
// redeemed), "rn" (buckets learned), "rb" (last bucket judged), and the
// relay counters "rc" (consecutive relay failures), "ri" (their window
// index), "rf" and "ro" (relay failures and successes in it), "pf" and
// "po" (in the window before). It does not expire: it is one small hash per
// kind, and what it learned must outlive quiet periods.
func BreakerInfo(kind string) string { return Tag + ":bi:" + kind }

// BreakerCount returns the counter of a kind's eligible requests (those
// that passed the caps) in the current window; the first request of a
// window moves it into [Breaker]'s prev and resets it. It expires two
// windows after its last reset.
func BreakerCount(kind string) string { return Tag + ":bn:" + kind }

// BreakerRefused returns the counter of a kind's requests refused by caps
// (duplicate or capped) in the current window, reset like [BreakerCount].
func BreakerRefused(kind string) string { return Tag + ":bf:" + kind }

// RefusedSources and RefusedRecipients return the HyperLogLogs of the
// distinct source groups and recipients refused by caps in the current
// window, reset with it: the refusal trip needs many of each, so one actor
// cannot fire it.
func RefusedSources(kind string) string    { return Tag + ":bfs:" + kind }
func RefusedRecipients(kind string) string { return Tag + ":bfr:" + kind }

// Budget returns the counter of new recipients (no admission in their
// log's lifetime) admitted in the current budget period; the period's first
// window moves it into [Breaker]'s dprev. It expires two periods after its
// last reset.
func Budget(kind string) string { return Tag + ":bd:" + kind }

// Lane returns the pacing key of one lane of a kind's open breaker
// (lane 't' trusted, 'q' re-request, 'd' redeemed source), like
// [BreakerPace].
func Lane(kind string, lane byte) string { return Tag + ":bl" + string(lane) + ":" + kind }

// Redemption returns the hash of a kind's redemption buckets: fields
// "<bucket>s" (emails sent in the bucket), "<bucket>c" (of them, confirmed)
// and "<bucket>p" (reported), bucket = Redis ms / bucket length. Judged
// buckets are deleted; the hash expires a few buckets after its last write.
func Redemption(kind string) string { return Tag + ":rd:" + kind }

// RedemptionSources and ReportSources return the prefixes of the per-bucket
// HyperLogLogs of the distinct source groups of a kind's sent and reported
// emails ("<prefix><bucket>"); each expires with its bucket.
func RedemptionSources(kind string) string { return Tag + ":rg:" + kind + ":" }
func ReportSources(kind string) string     { return Tag + ":rp:" + kind + ":" }

// BreakerPace returns the key pacing the admissions that an open clamp or a
// half-open breaker lets through: the Redis time (µs since [GCRAEpoch])
// before which the next one is refused. It expires when that time passes.
func BreakerPace(kind string) string { return Tag + ":bq:" + kind }

// BreakerSendPace returns the key pacing the sends (dispatch) that an open
// clamp or a half-open breaker lets through, like [BreakerPace].
func BreakerSendPace(kind string) string { return Tag + ":bs:" + kind }

// Held returns the hash holding parked emails of a kind: field email id,
// value "a" (held at admission) or "d" (held at dispatch), the email's
// expiry (unix ms), a space and the encoded payload. [SweepScript] counts
// expired ones out; the hash itself expires one TTL of the kind plus
// [SweepMargin] after the newest email was parked.
func Held(kind string) string { return Tag + ":h:" + kind }

// SweepMargin is how long the held area outlives its newest email, for the
// sweep to count the last ones expired.
const SweepMargin = 3600000

// Releasing returns the hash of held emails of a kind that a release took
// out of [Held] but has not yet handed to the queue: field email id, value
// the encoded payload. A release interrupted between the two steps is
// finished by the next one.
func Releasing(kind string) string { return Tag + ":hr:" + kind }

// Claim values other than an attempt ("a:<nonce>"): terminal states,
// told by their first byte. A sent email's claim continues with the
// redemption bucket (10 digits) and the digests of its source, source group
// and recipient log ([Digest]), for feedback; confirmed and reported ones
// keep that with their own first byte.
const (
	ClaimSent      = "1"
	ClaimFailed    = "2"
	ClaimExpired   = "3"
	ClaimHeld      = "4"
	ClaimShed      = "5"
	ClaimConfirmed = "7"
	ClaimReported  = "8"
)

// AttemptValue returns the claim value of a send attempt.
func AttemptValue(attempt string) string { return "a:" + attempt }
