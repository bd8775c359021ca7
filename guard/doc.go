// Package guard decides whether floodgate may queue and send each email:
// dedup, per-recipient, per-source, per-domain and global caps, the
// suppression list and the surge breaker's state, each decision one atomic
// Lua script in one Redis round trip, shared by every process that uses the
// same Redis.
//
// A [Guard] is built from a [Policy] ([DefaultPolicy], or YAML through
// [ParsePolicy] / [LoadPolicy]). [Guard.Admit] runs at enqueue (it implements
// [queue.Admitter]); [Guard.Dispatch] and [Guard.Settle] run in the worker
// around each send attempt; [Guard.Handler] serves the admin API.
//
// # Recipients
//
// Keys are built from the [Canonical] recipient: domain lower-cased and
// converted to ASCII per IDNA (RFC 5890, RFC 5891, UTS #46), address
// reduced by [LocalRules], so that variants of one mailbox share one dedup
// window and one set of caps. On every domain: case and "+tag". Per
// provider, what it documents about its own addresses: Gmail ignores dots
// and googlemail.com is gmail.com; Proton ignores '.', '-' and '_' and its
// four domains are one (proton.me); Fastmail delivers
// "anything@alice.fastmail.com" to alice@fastmail.com; icloud.com, me.com
// and mac.com are one (icloud.com); Yahoo's "base-keyword" is "base". Each
// provider rule also applies case and "+tag" on its domains, and each has a
// switch (recipient_rules in YAML, all on by default). The rules only merge
// what the provider delivers to one mailbox: Microsoft's outlook.com,
// hotmail.com and live.com stay apart, as do fastmail.com and fastmail.fm.
// Changing the rules changes the canonical form of the addresses they
// touch, and with it their keys: their windows start afresh, and a
// suppression entry made under the old rules no longer matches them.
// Keys hold a truncated SHA-256 of the canonical recipient, never the address;
// logs carry a short hash (rcpt_hash). The digest is not keyed: it hides
// addresses from casual reading, not from someone who can guess them.
//
// # Decisions and accounting
//
// Every request ends in one terminal outcome (DESIGN.md, Decisions), counted
// per kind in Redis by the script that decides it, so
// requested = sum of outcomes + in flight holds across processes
// ([KindStats]). Admission precedence: suppressed, duplicate, capped
// (recipient, then source), then the breaker (held or shed). Quota is
// consumed only by admitted emails: a refused request, whoever sent it,
// never uses up the recipient's or the source's allowance. Held emails do
// not consume quota either; releasing them goes through admission again
// (see Surge breaker).
//
// Per-recipient and per-source windows are sliding logs: the key holds the
// times (Redis TIME) of the last N admissions, newest first, and "N/period"
// refuses when the N-th newest is younger than the period. One key per
// recipient and kind holds all of its windows and its dedup state (the age of
// the newest entry). Recipient times are whole seconds and compared
// conservatively (a window may last up to a second longer, never shorter);
// a single entry is a decimal integer that Redis stores without a string
// allocation, which is what keeps a recipient seen once at 113 bytes of
// Redis memory (1,000,000 recipients, TestMemoryPerRecipient). Source times
// are milliseconds. Every log expires
// one longest window after its last admission, so memory returns to the
// baseline when traffic stops. Counts per window are bounded by
// [MaxWindowCount].
//
// Dispatch checks the idempotency claim (keyed by the email id), the
// email's expiry, the breaker, then the global and the per-domain rate, two
// GCRAs on Redis TIME checked together before either is consumed; an
// exhausted rate defers the email (Verdict Deferred, RetryAfter > 0) without
// taking the claim. An allowed attempt holds the claim for a lease
// (Config.Lease, default the kind's attempt timeout plus 90s); Settle makes
// it "sent" (a redelivered task is then a duplicate), terminal, or releases
// it for a retry. A claim released after an ambiguous result (reason
// "ambiguous": the relay may have accepted the message) keeps the count of
// such results, and the next Dispatch reports it (Verdict.Ambiguous), so the
// worker can bound the copies across attempts and processes.
//
// A worker that dies mid-send loses the claim when the lease ends, and the
// email is then sent by the next attempt: if the relay had already answered
// 250, that is a second copy, so a killed worker can cause at most one per
// SMTP transaction it had in flight. A live worker keeps retrying Settle
// while Redis does not answer; the lease's 90s margin lets a one-minute
// outage right after the slowest 250 end before the claim does, so a
// redelivered task meanwhile finds the claim held and waits.
//
// # Round trips
//
// Admission is one EVALSHA of a script compiled per kind with the kind's
// settings as constants (internal/rkeys.AdmitScript). An admitted email costs
// six Redis calls inside it: MGET of the recipient log, source log, breaker
// state, suppression key and the breaker's window count; TIME; INCR of the
// window count; SET of each log; INCR of the kind's admitted counter. A
// refusal skips the SETs and counts itself with HINCRBY in the stats hash
// and XADD to the decision log. The first request of each breaker window
// also rolls the window over (a few calls, once per window). Dispatch is one
// EVALSHA: MGET of claim, breaker, global and domain rate; TIME; SET of both
// rates and the claim. Settle is one EVALSHA: GET, TIME, SET or DEL,
// HINCRBY, and, when the result says something about the relay, the
// breaker's relay counters. Admission and dispatch read the kind's breaker
// in the MGET they already make, so a transition made by one process is seen
// by every other process at its next decision. On a closed breaker (and on
// an open one, during an attack) the breaker costs an admission one more
// MGET key, one INCR and one string match, and no Lua closure: 10 to 30%
// more Redis time per admission than without it (BenchmarkAdmit,
// BenchmarkAdmitBreaker).
//
// # Re-running scripts
//
// A client may re-send a script whose reply was lost, so each script is safe
// to run twice. Admission tags each recipient-log entry with a 9-digit hash of
// the email id; a second run of an admitted email answers "queued" and
// counts nothing. A refused request that is re-sent is counted twice, in
// requested and in its outcome alike, so the conservation law still holds.
// Dispatch answers "allowed" again to the attempt that holds the claim,
// without consuming the rates twice. Settle never changes a terminal claim,
// and releases only its own.
//
// # Redis Cluster: one hash tag
//
// Every guard key carries the hash tag "{fg}" (internal/rkeys), so all of
// them live in one slot and each decision is one script on one node. The
// alternative, one script per slot (recipient, source, kind) sent in one
// pipeline, was rejected:
//
//   - the per-kind breaker state and stats, and for dispatch the global
//     rate, are read or written by every decision, so one slot per kind (and
//     one for the global rate) is hot in either layout;
//   - split scripts cannot count the final outcome in the same atomic step
//     that decides it, so the conservation law would need a second round
//     trip or tolerate drift, and a partial refusal over-counts quota;
//   - one node runs tens of thousands of admission scripts a second, far
//     above the send rates the guard protects, while asynq's queues live in
//     their own slots on other nodes;
//   - measured on a 3-master cluster (BenchmarkClusterAdmit), the split
//     prototype, three scripts in one pipeline, took 2.1 to 2.5 times as
//     long per admission as the one-tag script: each decision pays three
//     script invocations and a fan-out instead of one.
//
// The cost is that the guard's keys and CPU sit on one master.
//
// # Failure
//
// The guard fails closed: when Redis does not answer, Admit, Dispatch and
// Settle return an [*OpError] matching [ErrUnavailable] and never allow.
// Redis client types do not cross the API.
//
// # Redis settings
//
// The guard's counters and claims, and asynq's queues, live in Redis, so a
// server that evicts keys under memory pressure lifts caps and loses emails
// without a trace. [CheckRedis] reads maxmemory-policy from every master
// (CONFIG GET, or INFO's maxmemory_policy field where CONFIG is disabled or
// renamed) and refuses anything but noeviction ([ErrEviction]); when
// neither answers the policy is unknown ([ErrPolicyUnknown]) and the caller
// decides: floodgate's commands refuse unless told it is noeviction. It
// also reports persistence ([RedisReport.NotPersistent]). Producers call it
// once at start-up; the worker also repeats it and reports it on /readyz.
//
// # Surge breaker
//
// One breaker per kind ([BreakerPolicy]), its state in Redis and moved only
// inside the decision scripts. The admission script counts every request
// of the kind in a sliding window (Window, default 1m: the previous fixed
// window's count, weighted by the part of it still inside the sliding
// window, plus the current one's) and trips as soon as the count exceeds
// max(SurgeFactor × baseline, Floor) over the window: at thousands of
// requests a second a surge opens the breaker within milliseconds of
// crossing the floor, while it is still ramping. The baseline is an
// exponentially weighted average of the rate of closed windows over the
// Baseline period, each window capped at the threshold, so an attack is
// not learned. It also trips when the share of requests refused by caps
// (duplicate or capped) reaches RefusalRatio with at least RefusalMin
// requests, and on relay failures reported by [Guard.Settle] (see
// [IsRelayFailure]): RelayFailures in a row, or RelayRatio of the window's
// relay results.
//
// Open, the breaker applies after the caps: hold parks the email in the
// held area (bounded by HoldMax, beyond it shed; the area expires one TTL
// after its newest email, when none could be delivered any more), clamp
// admits the baseline rate (at least the probe rate) and sheds the rest,
// shed refuses. Dispatch holds or sheds likewise the emails admitted before
// the trip, and paces them in clamp mode. A relay breaker leaves admission
// alone: dispatch defers the kind's emails (reason "relay", no retry used)
// until the cooldown ends. Other kinds are not affected.
//
// After Cooldown the breaker is half-open and lets Probe emails through
// (admission and dispatch each, from the start of each half-open period);
// a surge breaker closes one Window later unless the rate trips it again,
// a relay breaker closes on the first relay success and re-opens on a
// failure. Re-opening from half-open, or tripping again within one cooldown
// of closing, doubles the cooldown (up to MaxCooldown), so a square-wave
// load cannot make the breaker cycle faster than its cooldown. A manual
// trip ([Guard.Trip]) lasts until [Guard.Reset].
//
// Every transition is reported by the one process whose script made it (the
// script's reply carries it): a log line (kind, from, to, reason, rate,
// baseline), floodgate_breaker_transitions_total, Config.OnTransition and,
// when Config.Webhook is set, an HMAC-signed JSON POST retried with backoff
// from a background goroutine that never blocks a decision. Every reply
// also carries the state, which sets floodgate_breaker_state in each
// process.
//
// Held emails are terminal outcomes (held) until an operator acts.
// [Guard.Purge] recounts them as shed (reason purged). [Guard.Release]
// puts them back in the queue (asynq tasks with the kind's options) through
// the guard again: one held at admission is admitted again without its
// source's window and without the breaker, with the recipient's caps
// (which it did not consume); one held at dispatch was admitted already.
// A release is not a new request: Stats moves the email from held to in
// flight, or to the refusal admission gives it, so requested = outcomes +
// in flight keeps holding. Released emails pass the dispatch guard, so an
// open breaker holds them again: reset before releasing.
package guard
