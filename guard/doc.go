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
// ([KindStats]). Admission precedence: suppressed (the list, or a report
// of this kind), duplicate, capped (recipient, then source, then source
// group, then an unredeemed source), then the breaker (held, shed or a
// lane). A refused request, whoever sent it, never uses up the
// recipient's or the source's allowance. A request that passed the caps
// uses its source's and its groups' quota whatever the breaker does with
// it (queued, held, shed), so that one source cannot park more than its
// cap; it uses the recipient's quota only when it is queued.
//
// Sources ([queue.Email].Source) are normalised ([NormalizeSource]: an IP
// address in its canonical form, IPv4-mapped IPv6 as IPv4, no zone or
// port); an IP source also counts under its networks, the prefixes of
// [KindPolicy].PerGroup (IPv4 /24, IPv6 /64 and /48 by default), each with
// caps of its own, so that an attacker rotating addresses inside one
// network meets one cap. With [queue.Email].Account set, per-recipient
// dedup and caps key on the account instead of the address.
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
// Admission is one EVALSHA of a script rendered per kind with the kind's
// settings and fixed keys as constants (internal/rkeys.AdmitScript; the
// Lua is in internal/rkeys/lua, the default policy's scripts are kept in
// testdata/scripts): the request sends only its email's keys (recipient
// log, source log, suppression, group logs). An admitted email on a closed
// breaker costs MGET of the recipient, source and group logs, the breaker
// state, the suppression key and the window count; TIME; INCR of the
// window count (and of the budget count for a new recipient); SET of each
// log; INCR of the kind's admitted counter; no Lua closure. A refusal
// skips the SETs and counts itself with HINCRBY in the stats hash, XADD to
// the decision log and, for the refusal trip, INCR and two PFADDs. The
// first request of each breaker window also rolls the window over (a few
// calls, once per window). Dispatch is one EVALSHA: MGET of claim, breaker,
// global and domain rate; TIME; SET of both rates and the claim. Settle is
// one EVALSHA: GET, TIME, SET or DEL, HINCRBY, for a sent email its
// redemption bucket (HINCRBY, PFADD), and, when the result says something
// about the relay, the breaker's relay counters. Admission and dispatch
// read the kind's breaker in the MGET they already make, so a transition
// made by one process is seen by every other process at its next
// decision.
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
// # Bounces and complaints
//
// [Guard.RecordBounce] applies a report that arrived after the relay's
// 250 (a DSN or a complaint at the bounce receiver, a provider's webhook):
// a hard bounce or a complaint suppresses its recipient, with the report's
// source in the entry ([Suppression].Source); every report is counted once
// per email (or provider event) and type in hourly buckets per kind and
// recipient domain, the policy's listed domains or "other", which bounds
// the labels. A [SentCounter] adds the sent emails, batched in memory, so
// [Guard.BounceStats] (also in [Stats]) and [Guard.BounceCollector]
// give bounce and complaint rates over the last 24 hours for every process.
// [Guard.RefuseBounce] counts the reports that were refused.
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
// inside the decision scripts. What trips it is what an attacker cannot
// cheaply produce, and what it learns cannot be dragged upward:
//
//   - Eligible requests only: the rate counts requests that passed dedup
//     and every cap, so one source (or group) adds at most its own cap,
//     which the defaults keep under the floor: one actor, at any rate,
//     changes no breaker; its excess is its own caps' business.
//   - Surge: the eligible rate over a sliding Window above max(SurgeFactor
//     × baseline, Floor) trips it (reason surge), as soon as it crosses.
//   - Learning ([LearnPolicy]): the baseline follows an average of each
//     closed window's rate, clipped at the threshold, over Learn.Horizon
//     (7d), rising no faster than MaxRise a window and MaxDailyRise (2×) a
//     day, so an attack ramping just under the threshold can at most
//     double it a day. A new kind warms up (Learn.Warmup, 24h): it learns,
//     the ceilings hold, the surge trip does not fire, so a fresh
//     deployment with organic traffic is not locked out.
//   - Ceilings ([CeilingPolicy]): a maximum eligible rate (reason ceiling)
//     and a budget of new recipients per period (reason budget), fixed or
//     derived from the baseline with a minimum, whatever the baseline says.
//   - Refusals: the share of requests refused by caps at RefusalRatio,
//     from at least RefusalSources distinct source groups and recipients
//     (HyperLogLogs), trips it (reason refusals): many sources enumerating.
//     Only capped requests count: duplicates send nothing, and users who
//     ask again while their mail is slow make them from many sources.
//   - Redemption ([RedemptionPolicy]): an attacker never sees the victims'
//     links, so they are never used. [Guard.Confirm] counts a sent email
//     redeemed in its bucket; a bucket judged Lag after it ends whose share
//     collapses below Collapse × the learned share, from enough source
//     groups, trips it (reason redemption): the low-and-slow attack under
//     every rate threshold still drives redemption towards zero. The
//     learned share falls no faster than MaxDailyFall a day. Per source:
//     a source whose last UntrustedAfter emails were never redeemed is
//     capped at them; one whose email was redeemed earns trust
//     ([KindPolicy].TrustTTL). Applications that never confirm never
//     establish a share: the breaker keeps its rate signals alone.
//   - Reports ([ReportPolicy]): [Guard.Report] (the recipient did not ask)
//     suppresses the recipient for the kind and counts towards a trip of
//     its own (reason reports).
//   - Relay: RelayFailures in a row, or RelayRatio of the window's relay
//     results, reported by [Guard.Settle] (see [IsRelayFailure]); and the
//     kind's bounce or complaint rate over the last hour ([BouncePolicy]):
//     after each hard bounce or complaint [Guard.RecordBounce] counts, the
//     kind's bounce trip script (internal/rkeys.BounceTripScript) weighs
//     them against the emails sent and opens it as a relay failure would.
//
// Open, the breaker first lets through, through every cap and each lane
// paced on its own ([LanePolicy]; twice the baseline, at least 60/1m, a
// burst of 10, by default), what an attack cannot produce in bulk: requests with a trust
// signal the application verified ([queue.Email].Trust), sources (or
// groups) whose emails were redeemed before it opened, and recipients with
// a held email at least RerequestAfter old who ask again (one who asks
// sooner is a duplicate of the held email) from a source that made at most
// RerequestSources requests of the kind in its longest per-source window
// (an attack source asks for many victims; a user for one account, a few
// times); what a lane admits is not held
// again at dispatch. Then hold parks the email in the held area (bounded
// by HoldMax, beyond it shed), clamp admits the baseline rate (at least
// the probe rate) and sheds the rest, shed refuses; each marks the
// recipient so that its re-request is recognised. Dispatch holds or sheds
// likewise the emails admitted before the trip. A relay breaker leaves
// admission alone: dispatch defers the kind's emails (reason "relay", no
// retry used) until the cooldown ends. Other kinds are not affected.
//
// After Cooldown the breaker is half-open: its counts start afresh, so the
// surge that opened it is not held against it, and Probe emails pass
// besides the lanes. A surge, ceiling or refusal breaker closes one Window
// later unless it trips again; a redemption or reports breaker only when
// the rate is back within CloseFactor × the baseline; a budget breaker
// only when the budget has room; a relay breaker on the first relay
// success (a failure re-opens it). Re-opening from half-open, or tripping
// again within one cooldown of closing, doubles the cooldown (up to
// MaxCooldown), so a square-wave load cannot make it cycle faster than its
// cooldown. A manual trip ([Guard.Trip]) lasts until [Guard.Reset].
//
// Every transition is reported by the one process whose script made it (the
// script's reply carries it): a log line (kind, from, to, reason, rate,
// baseline), floodgate_breaker_transitions_total, Config.OnTransition and,
// when Config.Webhook is set, an HMAC-signed JSON POST retried with backoff
// from a background goroutine that never blocks a decision. Every reply
// also carries the state, which sets floodgate_breaker_state in each
// process.
//
// Held emails are terminal outcomes (held) until they expire ([Guard.Sweep]
// counts them expired) or an operator acts. [Guard.Purge] recounts them as
// shed (reason purged). [Guard.Release] by default releases only those that
// would pass a lane now (trusted, redeemed source, re-requested), so that a
// release never delivers the held attack to its victims; ReleaseOptions.All
// releases every one. Released emails go through admission again
// (suppression, dedup, the recipient's caps; their source's quota they used
// when held), an email superseded by a later one to its recipient is
// counted a duplicate, and the rest are queued on [queue.ReleaseQueue],
// paced at the baseline, below the security mail of the moment. A release
// is not a new request: Stats moves the email from held to in flight, or
// to its new outcome, so requested = outcomes + in flight keeps holding.
package guard
