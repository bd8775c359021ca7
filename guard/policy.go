package guard

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/floodgate-dev/floodgate/queue"
)

// Bounds checked by [ParsePolicy] and [New].
const (
	// MaxWindowCount bounds N in per-recipient and per-source windows: the
	// windows are exact sliding logs whose size grows with N.
	MaxWindowCount = 1000
	// MaxWindow bounds every window, TTL and dedup window: guard keys live
	// at most this long.
	MaxWindow = 31 * 24 * time.Hour
	maxRetry  = 100
	// minBreakerWindow bounds the breaker's window and cooldown from
	// below; short ones are for tests.
	minBreakerWindow = 10 * time.Millisecond
)

// Policy is the guard's configuration: rates, caps and breaker settings per
// kind. Every field has a default ([DefaultPolicy]); a YAML file
// ([ParsePolicy]) overrides the fields it names. A Policy must not be changed
// after it is passed to [New].
type Policy struct {
	// Global limits sends across every worker. Default 200/1s, burst 400.
	Global Limit
	// Domains limits sends per recipient domain (after canonicalisation,
	// so googlemail.com counts as gmail.com). The entry "default" applies,
	// per domain, to every domain not listed. Default: default 600/1m,
	// gmail.com 3000/1m.
	Domains map[string]Limit
	// RecipientRules says which address variants count as one recipient.
	// Default: all rules on.
	RecipientRules LocalRules
	// KindPolicies configures each kind. The built-in kinds are always
	// present; a file may add kinds.
	KindPolicies map[string]KindPolicy
}

// KindPolicy configures one kind of email.
type KindPolicy struct {
	// Class selects the queue: security outranks notify.
	Class queue.Class
	// TTL is how long after enqueue the email may still be delivered.
	TTL time.Duration
	// MaxRetry bounds delivery attempts after the first; zero means
	// [queue.DefaultMaxRetry].
	MaxRetry int
	// Archive is how long a failed email's task is kept for inspection;
	// zero means [queue.DefaultArchive] (a day for security mail, a week
	// for notifications).
	Archive time.Duration
	// Required lists data keys the kind's templates need. Built-in kinds
	// always require their own keys in addition.
	Required []string
	// DedupWindow refuses a second email of the kind to the same recipient
	// within it as a duplicate; zero turns dedup off.
	DedupWindow time.Duration
	// PerRecipient caps admitted emails of the kind per canonical
	// recipient, one sliding window each.
	PerRecipient []Rate
	// PerSource caps the kind's requests that pass the other caps per
	// source (client IP or principal; emails without a source share one):
	// admitted, held and shed alike, so one source cannot park more than
	// its cap while the breaker is open.
	PerSource []Rate
	// PerGroup caps them likewise per source group: the network of an IP
	// source ([GroupPrefix], e.g. v4/24, v6/64, v6/48). Non-IP sources have
	// no group. Default v4/24 60/1h, v6/64 20/1h, v6/48 60/1h for resets
	// and verifications.
	PerGroup []GroupLimit
	// UntrustedAfter shrinks a source's per-source cap to this many emails
	// while none of its emails was redeemed, once the application is seen
	// to confirm this kind (see [Guard.Confirm]). Zero turns it off.
	// Default 5 for resets and verifications.
	UntrustedAfter int
	// TrustTTL is how long a source (and its group) keeps the trust one
	// redeemed email earned: it passes the redeemed lane of an open
	// breaker. Default 30d.
	TrustTTL time.Duration
	// ReportSuppress is how long a recipient who reported an email of the
	// kind ([Guard.Report]) is suppressed for it. Zero: not suppressed.
	// Default 30d.
	ReportSuppress time.Duration
	// Breaker configures the kind's surge breaker.
	Breaker BreakerPolicy
}

// GroupPrefix is a network size that groups IP sources: "v4/24" is the
// IPv4 /24 of an IPv4 source, "v6/64" the IPv6 /64 of an IPv6 source.
type GroupPrefix struct {
	// IPv6 selects the address family; Bits the prefix length.
	IPv6 bool
	Bits int
}

// String returns the prefix as the policy writes it, e.g. "v6/48".
func (g GroupPrefix) String() string {
	if g.IPv6 {
		return "v6/" + strconv.Itoa(g.Bits)
	}
	return "v4/" + strconv.Itoa(g.Bits)
}

// ParseGroupPrefix parses "v4/N" (N in 8..32) or "v6/N" (N in 16..128).
func ParseGroupPrefix(s string) (GroupPrefix, error) {
	fam, bits, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(bits)
	switch {
	case !ok || err != nil || (fam != "v4" && fam != "v6"):
		return GroupPrefix{}, fmt.Errorf("group %q: want v4/N or v6/N, e.g. v4/24", s)
	case fam == "v4" && (n < 8 || n > 32):
		return GroupPrefix{}, fmt.Errorf("group %q: an IPv4 prefix is 8 to 32 bits", s)
	case fam == "v6" && (n < 16 || n > 128):
		return GroupPrefix{}, fmt.Errorf("group %q: an IPv6 prefix is 16 to 128 bits", s)
	}
	return GroupPrefix{IPv6: fam == "v6", Bits: n}, nil
}

// GroupLimit caps the requests of one source group prefix.
type GroupLimit struct {
	Prefix GroupPrefix
	Rates  []Rate
}

// BreakerMode is what an open breaker does with new emails of its kind.
type BreakerMode string

// Breaker modes.
const (
	// BreakerHold parks emails, up to HoldMax; beyond it they are shed.
	BreakerHold BreakerMode = "hold"
	// BreakerClamp lets through at most the learned baseline rate.
	BreakerClamp BreakerMode = "clamp"
	// BreakerShed refuses emails.
	BreakerShed BreakerMode = "shed"
)

// BreakerPolicy configures a kind's surge breaker (see DESIGN.md, Surge
// breaker, and the package doc). The request rate is measured over a
// sliding Window; the breaker trips when it exceeds SurgeFactor times the
// learned baseline and Floor, when the share of requests refused by caps
// reaches RefusalRatio, or when the relay fails. Each trip can be turned off
// with a zero; in YAML, "breaker: off" turns all three off (the breaker then
// only opens by hand).
type BreakerPolicy struct {
	// SurgeFactor trips the breaker when the request rate exceeds this
	// multiple of the learned baseline (and Floor). Zero turns the surge
	// trip off. Default 5.
	SurgeFactor float64
	// Floor is the absolute request rate below which the surge trip never
	// fires. Default 60/1m.
	Floor Rate
	// Window is the sliding window over which the current rate is
	// measured: the breaker opens as soon as the requests of the last
	// Window exceed the threshold, so a fast surge trips it within a
	// fraction of it. Between 10ms and 1h. Default 1m.
	Window time.Duration
	// RefusalRatio trips the breaker when at least this share of the
	// requests in the window is refused by caps (capped; duplicates send
	// nothing and users asking again while mail is slow make them),
	// which is what enumeration looks like; zero turns it off. Default 0.5.
	RefusalRatio float64
	// RefusalMin is the request rate below which the refusal trip never
	// fires. Default 30/1m.
	RefusalMin Rate
	// RelayFailures trips the breaker after this many consecutive relay
	// failures reported by Settle (connection refused, timeouts, TLS or
	// AUTH failures, 421): dispatch then defers the kind's emails (reason
	// "relay") instead of using up retries, and half-open probes find
	// when the relay is back. Zero turns the relay trip off. Default 10.
	RelayFailures int
	// RelayRatio also trips it when relay failures are at least this share
	// of the relay's results in the window (and at least RelayFailures of
	// them); zero leaves only the consecutive count. Default 0.9.
	RelayRatio float64
	// Cooldown is how long it stays open before probing. It doubles, up
	// to MaxCooldown, each time the breaker re-opens from half-open or
	// trips again within one cooldown of closing. Default 10m.
	Cooldown time.Duration
	// MaxCooldown bounds the doubled cooldown; zero means 8 × Cooldown.
	MaxCooldown time.Duration
	// Probe is the rate of emails a half-open breaker lets through (and
	// the least an open clamp does). Default 1/1s.
	Probe Rate
	// Open is what an open breaker does. Default hold.
	Open BreakerMode
	// HoldMax bounds the parked emails of the kind. Default 100000.
	HoldMax int
	// RefusalSources is how many distinct source groups, and distinct
	// recipients, must be among a window's refusals for the refusal trip
	// to fire, so that one actor hammering one account cannot. Default 20.
	RefusalSources int
	// Learn says how the baseline is learned.
	Learn LearnPolicy
	// Ceilings are absolute bounds on the kind, whatever the baseline.
	Ceilings CeilingPolicy
	// Redemption trips the breaker when the share of sent emails whose
	// link is used collapses (see [Guard.Confirm]).
	Redemption RedemptionPolicy
	// Reports trips the breaker when recipients report emails they did
	// not ask for (see [Guard.Report]).
	Reports ReportPolicy
	// Bounces trips the relay breaker on the kind's bounce or complaint
	// rate (see [Guard.RecordBounce]).
	Bounces BouncePolicy
	// CloseFactor: a breaker opened by redemption or reports closes at the
	// end of a half-open window only when the rate is at most this
	// multiple of the baseline (the excess that made it trip is gone).
	// Default 2.
	CloseFactor float64
	// Lanes are what an open breaker still lets through.
	Lanes LanePolicy
}

// LearnPolicy says how a breaker learns its baseline: an average of the
// eligible rate of each window (clipped at the surge threshold) over
// Horizon, that the baseline follows no faster than MaxRise a window and
// MaxDailyRise a day, so that an attack ramping under the threshold cannot
// drag it up. A new kind learns for Warmup before the surge trip fires
// (the ceilings hold meanwhile). Day is the day of MaxDailyRise; with the
// other durations it can be shortened to compress time in tests and drills.
type LearnPolicy struct {
	// Horizon is the learning period. Default 7d.
	Horizon time.Duration
	// Warmup is how long a new kind learns before the surge trip fires.
	// Default 24h.
	Warmup time.Duration
	// MaxRise is the baseline's largest rise in one window, as a fraction
	// of the baseline or of the floor rate, whichever is more. Default 0.1.
	MaxRise float64
	// MaxDailyRise is the baseline's largest rise in one Day, as a factor
	// of the baseline at the day's start (or of the floor rate). Default 2.
	MaxDailyRise float64
	// Day is the period of MaxDailyRise. Default 24h.
	Day time.Duration
}

// CeilingPolicy bounds a kind absolutely: a maximum eligible rate and a
// budget of new recipients (no email of the kind in their logs' lifetime)
// per period. Each is fixed by the operator, or derived from the learned
// baseline ("auto": the larger of a minimum and a factor times the
// baseline), or off. A ceiling that is reached trips the breaker with a
// reason of its own (ceiling, budget).
type CeilingPolicy struct {
	// Rate is a fixed maximum rate; zero means auto (or off).
	Rate Rate
	// RateOff turns the rate ceiling off.
	RateOff bool
	// RateMin and RateFactor give the auto rate ceiling: max(RateMin,
	// RateFactor × baseline). Default 10 × the floor (600/1m) and 10; a
	// zero RateMin means 10 × the floor.
	RateMin    Rate
	RateFactor float64
	// NewRecipients is a fixed budget of new recipients per its period;
	// zero means auto (or off).
	NewRecipients Rate
	// NewRecipientsOff turns the budget off.
	NewRecipientsOff bool
	// NewRecipientsMin and NewRecipientsFactor give the auto budget:
	// max(NewRecipientsMin, NewRecipientsFactor × baseline × its period),
	// per NewRecipientsMin's period. Default 10000/24h and 3.
	NewRecipientsMin    Rate
	NewRecipientsFactor float64
}

// RedemptionPolicy configures the redemption trip. Sent emails are counted
// in buckets; a bucket is judged Lag after it ends, when most links that
// will be used have been: the share of its emails confirmed, against the
// share learned from earlier buckets. Applications that never confirm
// never establish a share, and the breaker keeps its rate signals alone.
type RedemptionPolicy struct {
	// Off turns redemption tracking off.
	Off bool
	// Bucket is the bucket length. Default 10m.
	Bucket time.Duration
	// Lag is how long after a bucket ends it is judged. Default 10m.
	Lag time.Duration
	// MinSends is the least number of sent emails in a bucket to judge it.
	// Default 20.
	MinSends int
	// MinSources is the least number of distinct source groups among a
	// bucket's emails for a collapse to trip. Default 5.
	MinSources int
	// Collapse trips when a bucket's share falls below this fraction of
	// the learned share. Default 0.5.
	Collapse float64
	// MinShare is the learned share below which redemption is not judged
	// (the application does not confirm). Default 0.05.
	MinShare float64
	// Buckets is how many buckets must be learned before judging. Default
	// 6.
	Buckets int
	// MaxDailyFall is the least factor the learned share keeps a day, so
	// that it cannot be dragged down quickly either. Default 0.9.
	MaxDailyFall float64
}

// ReportPolicy configures the reports trip: at least Min reports from
// Sources distinct source groups, and at least Ratio of the emails sent,
// over two redemption buckets. Min 0 turns it off.
type ReportPolicy struct {
	// Min is the least number of reports. Default 5.
	Min int
	// Sources is the least number of distinct source groups. Default 3.
	Sources int
	// Ratio is the least share of sent emails reported. Default 0.01.
	Ratio float64
}

// BouncePolicy configures the bounce trip: over the last hour, at least
// MinSends emails of the kind were sent, and hard bounces reached Ratio of
// them, or complaints ComplaintRatio. The relay breaker opens: dispatch
// defers the kind's emails until the cooldown ends, and probes find out
// whether the bounces went on. MinSends 0 turns it off.
type BouncePolicy struct {
	// MinSends is the least number of sent emails in the hour. Default 200.
	MinSends int
	// Ratio is the share of hard bounces that trips (0: not on bounces).
	// Default 0.05.
	Ratio float64
	// ComplaintRatio is the share of complaints that trips (0: not on
	// complaints). Default 0.005.
	ComplaintRatio float64
}

// LanePolicy configures the lanes of an open breaker: requests an attack
// cannot produce in bulk still pass, through every cap, each lane paced on
// its own at Rate, or (auto) at Factor × the baseline and at least Min.
type LanePolicy struct {
	// Rate is a fixed rate per lane; zero means auto.
	Rate Rate
	// Factor and Min give the auto rate. Default 2 and 60/1m.
	Factor float64
	Min    Rate
	// Burst is how many emails a lane lets through back to back (its pace
	// then resumes): users ask at random moments, and a strict spacing
	// would refuse one whose neighbour passed just before. Default 10.
	Burst int
	// Trusted lets requests with a trust signal through ([queue.Trust]).
	Trusted bool
	// Rerequest lets a recipient with a held email at least
	// RerequestAfter old through when they ask again.
	Rerequest      bool
	RerequestAfter time.Duration
	// RerequestSources lets a re-request through only when its source
	// made at most this many requests of the kind in its longest
	// per-source window: a user asks a few times for one account, an
	// attack source for many victims, so the attacker cannot fill the
	// lane with second asks unless it spends a source on every victim or
	// two. Zero: no such condition. Default 4.
	RerequestSources int
	// Redeemed lets sources (or source groups) whose emails were redeemed
	// before the breaker opened through.
	Redeemed bool
}

// EffectiveMaxCooldown returns MaxCooldown, or 8 × Cooldown when it is zero.
func (b BreakerPolicy) EffectiveMaxCooldown() time.Duration {
	if b.MaxCooldown > 0 {
		return b.MaxCooldown
	}
	return 8 * b.Cooldown
}

func defaultBreaker() BreakerPolicy {
	return BreakerPolicy{
		SurgeFactor: 5, Floor: Rate{60, time.Minute}, Window: time.Minute,
		RefusalRatio: 0.5, RefusalMin: Rate{30, time.Minute}, RefusalSources: 20, RelayFailures: 10, RelayRatio: 0.9,
		Cooldown: 10 * time.Minute, Probe: Rate{1, time.Second}, Open: BreakerHold, HoldMax: 100000,
		Learn: LearnPolicy{Horizon: 7 * 24 * time.Hour, Warmup: 24 * time.Hour, MaxRise: 0.1, MaxDailyRise: 2, Day: 24 * time.Hour},
		Ceilings: CeilingPolicy{RateFactor: 10,
			NewRecipientsMin: Rate{10000, 24 * time.Hour}, NewRecipientsFactor: 3},
		Redemption: RedemptionPolicy{Bucket: 10 * time.Minute, Lag: 10 * time.Minute, MinSends: 20, MinSources: 5,
			Collapse: 0.5, MinShare: 0.05, Buckets: 6, MaxDailyFall: 0.9},
		Reports:     ReportPolicy{Min: 5, Sources: 3, Ratio: 0.01},
		Bounces:     BouncePolicy{MinSends: 200, Ratio: 0.05, ComplaintRatio: 0.005},
		CloseFactor: 2,
		Lanes: LanePolicy{Factor: 2, Min: Rate{60, time.Minute}, Burst: 10, Trusted: true, Rerequest: true,
			RerequestAfter: time.Minute, RerequestSources: 4, Redeemed: true},
	}
}

// defaultGroups is the per-group cap of resets and verifications: a /64
// is usually one subscriber, a /24 or a /48 a network of many. No group's
// cap is above the breaker's floor (60/1m), so that no group alone can
// trip the surge trip.
func defaultGroups() []GroupLimit {
	return []GroupLimit{
		{GroupPrefix{Bits: 24}, []Rate{{60, time.Hour}}},
		{GroupPrefix{IPv6: true, Bits: 64}, []Rate{{20, time.Hour}}},
		{GroupPrefix{IPv6: true, Bits: 48}, []Rate{{60, time.Hour}}},
	}
}

// notificationBreaker is the default breaker of notifications: an app,
// not an outside party, decides to send them, and a campaign is a
// legitimate surge, so only the relay trip is on (no ceilings, no
// redemption, no lanes); an operator's trip clamps them to their baseline.
func notificationBreaker() BreakerPolicy {
	b := defaultBreaker()
	b.SurgeFactor, b.RefusalRatio, b.Open = 0, 0, BreakerClamp
	b.Ceilings.RateOff, b.Ceilings.NewRecipientsOff = true, true
	b.Redemption.Off, b.Reports.Min = true, 0
	return b
}

// builtinKinds returns the default policy of each built-in kind.
func builtinKinds() map[string]KindPolicy {
	specs := queue.DefaultKinds()
	kp := func(name string) KindPolicy {
		s := specs[name]
		return KindPolicy{Class: s.Class, TTL: s.TTL, MaxRetry: s.MaxRetry, Required: slices.Clone(s.Required), Breaker: defaultBreaker(),
			TrustTTL: 30 * 24 * time.Hour, ReportSuppress: 30 * 24 * time.Hour}
	}
	reset := kp(queue.KindPasswordReset)
	reset.DedupWindow = 2 * time.Minute
	reset.PerRecipient = []Rate{{3, time.Hour}, {10, 24 * time.Hour}}
	reset.PerSource = []Rate{{20, time.Hour}}
	reset.PerGroup, reset.UntrustedAfter = defaultGroups(), 5
	verify := kp(queue.KindVerifyEmail)
	verify.DedupWindow = 2 * time.Minute
	verify.PerRecipient = []Rate{{3, time.Hour}, {10, 24 * time.Hour}}
	verify.PerSource = []Rate{{20, time.Hour}}
	verify.PerGroup, verify.UntrustedAfter = defaultGroups(), 5
	note := kp(queue.KindNotification)
	note.PerRecipient = []Rate{{50, 24 * time.Hour}}
	note.Breaker = notificationBreaker()
	return map[string]KindPolicy{queue.KindPasswordReset: reset, queue.KindVerifyEmail: verify, queue.KindNotification: note}
}

// newKindDefaults is the starting point of a kind a policy file adds.
func newKindDefaults() KindPolicy {
	return KindPolicy{Class: queue.ClassNotify, TTL: 24 * time.Hour, PerRecipient: []Rate{{50, 24 * time.Hour}}, Breaker: defaultBreaker(),
		TrustTTL: 30 * 24 * time.Hour, ReportSuppress: 30 * 24 * time.Hour}
}

// DefaultPolicy returns a new policy with the built-in defaults: at most 3
// reset or verification emails an hour (10 a day) per recipient, a 2 minute
// dedup window, 20 an hour per source, 50 notifications a day per recipient,
// 200 sends a second overall and 600 a minute per domain. The reset and
// verification breakers hold their kind when its rate exceeds 5 × its
// learned baseline and 60/1m, when half of its requests are refused by caps
// (from 30/1m), or after 10 consecutive relay failures, for a 10m cooldown;
// the notification breaker trips on relay failures only and clamps when
// tripped by hand.
func DefaultPolicy() *Policy {
	return &Policy{
		Global:         Limit{Rate: Rate{200, time.Second}, Burst: 400},
		Domains:        map[string]Limit{"default": {Rate: Rate{600, time.Minute}}, "gmail.com": {Rate: Rate{3000, time.Minute}}},
		RecipientRules: DefaultLocalRules(),
		KindPolicies:   builtinKinds(),
	}
}

// Kinds returns the queue configuration of every kind in the policy: class,
// TTL, retry bound and required data (built-in kinds keep their own required
// keys).
func (p *Policy) Kinds() queue.Kinds {
	out := make(queue.Kinds, len(p.KindPolicies))
	builtin := queue.DefaultKinds()
	for name, k := range p.KindPolicies {
		req := slices.Clone(k.Required)
		for _, r := range builtin[name].Required {
			if !slices.Contains(req, r) {
				req = append(req, r)
			}
		}
		out[name] = queue.KindSpec{Class: k.Class, TTL: k.TTL, MaxRetry: k.MaxRetry, Required: req, Archive: k.Archive}
	}
	return out
}

// DomainLimit returns the limit that applies to a canonical domain.
func (p *Policy) DomainLimit(domain string) Limit {
	if l, ok := p.Domains[domain]; ok {
		return l
	}
	return p.Domains["default"]
}

// PolicyError is one problem in a policy: the field's path, e.g.
// "kinds.password_reset.per_recipient[1]", its position in the YAML document
// when known, and the reason.
type PolicyError struct {
	Path string
	// Line and Column are 1-based; zero when unknown (a policy built in
	// code, or a YAML syntax error, which has a line only).
	Line   int
	Column int
	Reason string
}

// Error returns "line:column: path: reason", or "path: reason" when the
// position is unknown.
func (e *PolicyError) Error() string {
	switch {
	case e.Line > 0 && e.Column > 0:
		return fmt.Sprintf("%d:%d: %s: %s", e.Line, e.Column, e.Path, e.Reason)
	case e.Line > 0:
		return fmt.Sprintf("%d: %s: %s", e.Line, e.Path, e.Reason)
	}
	return e.Path + ": " + e.Reason
}

// LoadPolicy reads and parses the policy file at path.
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("guard: policy: %w", err)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("guard: policy %s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy parses a YAML policy over [DefaultPolicy]: fields the document
// names replace the defaults, the rest keep them. Unknown fields are errors.
// The error joins one [*PolicyError] per problem, each naming the line and
// column, the field path and the reason, with a "did you mean" for a
// misspelt field or built-in kind, e.g.
//
//	3:27: kinds.password_reset.per_recipient[1]: rate "3/0s": duration must be positive
//	2:3: kinds.pasword_reset: not a built-in kind; did you mean "password_reset"?
//
// A kind the document adds must not be a near miss (one or two edits) of a
// built-in kind's name.
func ParsePolicy(doc []byte) (*Policy, error) {
	pol := DefaultPolicy()
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return nil, syntaxError(err)
	}
	d := &decoder{pos: map[string]position{}}
	if len(root.Content) > 0 {
		d.policy(resolve(root.Content[0]), pol)
	}
	// A field that failed to decode keeps a placeholder; do not report it
	// twice.
	failed := make(map[string]bool, len(d.errs))
	for _, e := range d.errs {
		failed[e.(*PolicyError).Path] = true
	}
	for _, e := range pol.validate(d.pos) {
		if !failed[e.(*PolicyError).Path] {
			d.errs = append(d.errs, e)
		}
	}
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return pol, nil
}

// Validate reports the problems of p as [*PolicyError] values joined, or nil.
func (p *Policy) Validate() error { return errors.Join(p.validate(nil)...) }

func (p *Policy) validate(pos map[string]position) []error {
	var errs []error
	bad := func(path, format string, args ...any) {
		at := pos[path]
		errs = append(errs, &PolicyError{Path: path, Line: at.line, Column: at.col, Reason: fmt.Sprintf(format, args...)})
	}
	checkLimit := func(path string, l Limit) {
		if l.Rate.N <= 0 || l.Rate.Per <= 0 {
			bad(path, "rate %q: count and duration must be positive", l.Rate.String())
		} else if l.Rate.Per/time.Duration(l.Rate.N) < time.Microsecond {
			bad(path, "rate %q: faster than one per microsecond", l.Rate.String())
		}
		if l.Burst < 0 {
			bad(path, "burst must not be negative")
		}
	}
	checkLimit("global", p.Global)
	if _, ok := p.Domains["default"]; !ok {
		bad("domains", "the entry \"default\" is required")
	}
	for _, name := range slices.Sorted(maps.Keys(p.Domains)) {
		path := "domains." + quoteKey(name)
		if name != "default" && canonicalDomain(name) != name {
			bad(path, "domain must be lower-case ASCII (IDNA), e.g. %q", canonicalDomain(name))
		}
		checkLimit(path, p.Domains[name])
	}
	if len(p.KindPolicies) == 0 {
		bad("kinds", "no kinds")
	}
	for _, name := range slices.Sorted(maps.Keys(p.KindPolicies)) {
		k := p.KindPolicies[name]
		path := "kinds." + quoteKey(name)
		if !validKindName(name) {
			bad(path, "kind name must be lower-case letters, digits, '_' or '-'")
		}
		if !k.Class.Valid() {
			bad(path+".class", "must be %q or %q", queue.ClassSecurity, queue.ClassNotify)
		}
		if k.TTL <= 0 || k.TTL > MaxWindow {
			bad(path+".ttl", "must be positive and at most %s", formatDuration(MaxWindow))
		}
		if k.Archive < 0 || k.Archive > 90*24*time.Hour {
			bad(path+".archive", "must be between 0 (the default) and 90d (asynq's own bound)")
		}
		if k.MaxRetry < 0 || k.MaxRetry > maxRetry {
			bad(path+".max_retry", "must be between 0 and %d", maxRetry)
		}
		for i, r := range k.Required {
			if !validDataKey(r) {
				bad(fmt.Sprintf("%s.required[%d]", path, i), "data key %q must be lower-case letters, digits or '_'", r)
			}
		}
		if k.DedupWindow != 0 && (k.DedupWindow < time.Second || k.DedupWindow > MaxWindow) {
			bad(path+".dedup_window", "must be 0 (off) or between 1s and %s", formatDuration(MaxWindow))
		}
		for _, w := range []struct {
			name  string
			rates []Rate
			min   time.Duration
		}{{"per_recipient", k.PerRecipient, time.Second}, {"per_source", k.PerSource, time.Millisecond}} {
			for i, r := range w.rates {
				rp := fmt.Sprintf("%s.%s[%d]", path, w.name, i)
				switch {
				case r.N <= 0 || r.Per <= 0:
					bad(rp, "rate %q: count and duration must be positive", r.String())
				case r.N > MaxWindowCount:
					bad(rp, "rate %q: count must be at most %d", r.String(), MaxWindowCount)
				case r.Per < w.min || r.Per > MaxWindow:
					bad(rp, "rate %q: window must be between %s and %s", r.String(), formatDuration(w.min), formatDuration(MaxWindow))
				}
			}
		}
		b := k.Breaker
		bp := path + ".breaker"
		if b.SurgeFactor != 0 && !(b.SurgeFactor >= 1 && b.SurgeFactor <= 1e6) {
			bad(bp+".surge_factor", "must be 0 (off) or between 1 and 1000000")
		}
		for _, r := range []struct {
			name string
			r    Rate
		}{{"floor", b.Floor}, {"refusal_min", b.RefusalMin}, {"probe", b.Probe}} {
			if r.r.N <= 0 || r.r.Per <= 0 {
				bad(bp+"."+r.name, "rate %q: count and duration must be positive", r.r.String())
			} else if r.r.Per/time.Duration(r.r.N) < time.Microsecond {
				bad(bp+"."+r.name, "rate %q: faster than one per microsecond", r.r.String())
			}
		}
		if b.Window < minBreakerWindow || b.Window > time.Hour {
			bad(bp+".window", "must be between %s and 1h", formatDuration(minBreakerWindow))
		}
		if b.RefusalRatio != 0 && !(b.RefusalRatio > 0 && b.RefusalRatio <= 1) {
			bad(bp+".refusal_ratio", "must be 0 (off) or in (0, 1]")
		}
		if b.RelayFailures < 0 || b.RelayFailures > 1000000 {
			bad(bp+".relay_failures", "must be between 0 (off) and 1000000")
		}
		if b.RelayRatio != 0 && !(b.RelayRatio > 0 && b.RelayRatio <= 1) {
			bad(bp+".relay_ratio", "must be 0 (off) or in (0, 1]")
		}
		if b.Cooldown < minBreakerWindow || b.Cooldown > MaxWindow {
			bad(bp+".cooldown", "must be between %s and %s", formatDuration(minBreakerWindow), formatDuration(MaxWindow))
		}
		if b.MaxCooldown != 0 && (b.MaxCooldown < b.Cooldown || b.MaxCooldown > MaxWindow) {
			bad(bp+".max_cooldown", "must be 0 (8 × cooldown) or between the cooldown and %s", formatDuration(MaxWindow))
		}
		switch b.Open {
		case BreakerHold, BreakerClamp, BreakerShed:
		default:
			bad(bp+".open", "must be %q, %q or %q", BreakerHold, BreakerClamp, BreakerShed)
		}
		if b.HoldMax < 0 {
			bad(bp+".hold_max", "must not be negative")
		}
		errs = append(errs, k.validateSignals(path, b.Window, pos)...)
	}
	return errs
}

// validateSignals checks a kind's source groups, trust and feedback
// settings and the breaker's learning, ceilings, redemption, reports and
// lanes.
func (k KindPolicy) validateSignals(path string, window time.Duration, pos map[string]position) []error {
	var errs []error
	bad := func(path, format string, args ...any) {
		at := pos[path]
		errs = append(errs, &PolicyError{Path: path, Line: at.line, Column: at.col, Reason: fmt.Sprintf(format, args...)})
	}
	rate := func(path string, r Rate) bool {
		if r.N <= 0 || r.Per <= 0 {
			bad(path, "rate %q: count and duration must be positive", r.String())
			return false
		} else if r.Per/time.Duration(r.N) < time.Microsecond {
			bad(path, "rate %q: faster than one per microsecond", r.String())
			return false
		}
		return true
	}
	between := func(path string, v, lo, hi float64) {
		if !(v >= lo && v <= hi) {
			bad(path, "must be between %g and %g", lo, hi)
		}
	}
	seen := map[GroupPrefix]bool{}
	for _, g := range k.PerGroup {
		gp := path + ".per_group." + quoteKey(g.Prefix.String())
		if seen[g.Prefix] {
			bad(gp, "duplicate group")
		}
		seen[g.Prefix] = true
		if _, err := ParseGroupPrefix(g.Prefix.String()); err != nil {
			bad(gp, "%v", err)
		}
		for j, r := range g.Rates {
			rp := fmt.Sprintf("%s[%d]", gp, j)
			switch {
			case r.N <= 0 || r.Per <= 0:
				bad(rp, "rate %q: count and duration must be positive", r.String())
			case r.N > MaxWindowCount:
				bad(rp, "rate %q: count must be at most %d", r.String(), MaxWindowCount)
			case r.Per < time.Millisecond || r.Per > MaxWindow:
				bad(rp, "rate %q: window must be between 1ms and %s", r.String(), formatDuration(MaxWindow))
			}
		}
	}
	if k.UntrustedAfter < 0 || k.UntrustedAfter > MaxWindowCount {
		bad(path+".untrusted_after", "must be between 0 (off) and %d", MaxWindowCount)
	}
	if k.TrustTTL <= 0 || k.TrustTTL > 366*24*time.Hour {
		bad(path+".trust_ttl", "must be positive and at most 366d")
	}
	if k.ReportSuppress < 0 || k.ReportSuppress > 366*24*time.Hour {
		bad(path+".report_suppress", "must be 0 (off) or at most 366d")
	}
	b := k.Breaker
	bp := path + ".breaker"
	if b.RefusalSources < 0 {
		bad(bp+".refusal_sources", "must not be negative")
	}
	l := b.Learn
	if l.Horizon < window || l.Horizon > 366*24*time.Hour {
		bad(bp+".learn.horizon", "must be between the window (%s) and 366d", formatDuration(window))
	}
	if l.Warmup < 0 || l.Warmup > MaxWindow {
		bad(bp+".learn.warmup", "must be between 0 and %s", formatDuration(MaxWindow))
	}
	if l.Day < window || l.Day > MaxWindow {
		bad(bp+".learn.day", "must be between the window (%s) and %s", formatDuration(window), formatDuration(MaxWindow))
	}
	if !(l.MaxRise > 0 && l.MaxRise <= 10) {
		bad(bp+".learn.max_rise", "must be in (0, 10]")
	}
	between(bp+".learn.max_daily_rise", l.MaxDailyRise, 1, 1000)
	c := b.Ceilings
	if c.Rate != (Rate{}) {
		rate(bp+".ceilings.rate", c.Rate)
	}
	if c.RateMin != (Rate{}) {
		rate(bp+".ceilings.rate_min", c.RateMin)
	}
	between(bp+".ceilings.rate_factor", c.RateFactor, 0, 1e6)
	for _, r := range []struct {
		name string
		r    Rate
	}{{"new_recipients", c.NewRecipients}, {"new_recipients_min", c.NewRecipientsMin}} {
		if r.r == (Rate{}) && r.name == "new_recipients" {
			continue
		}
		if rate(bp+".ceilings."+r.name, r.r) && (r.r.Per < window || r.r.Per%window != 0 || r.r.Per > MaxWindow) {
			bad(bp+".ceilings."+r.name, "the period must be a multiple of the window (%s), at most %s", formatDuration(window), formatDuration(MaxWindow))
		}
	}
	between(bp+".ceilings.new_recipients_factor", c.NewRecipientsFactor, 0, 1e6)
	if r := b.Redemption; !r.Off {
		rp := bp + ".redemption"
		if r.Bucket < window || r.Bucket > 24*time.Hour {
			bad(rp+".bucket", "must be between the window (%s) and 24h", formatDuration(window))
		}
		if r.Lag < 0 || r.Lag > 24*time.Hour {
			bad(rp+".lag", "must be between 0 and 24h")
		}
		if r.MinSends < 1 {
			bad(rp+".min_sends", "must be at least 1")
		}
		if r.MinSources < 0 {
			bad(rp+".min_sources", "must not be negative")
		}
		if !(r.Collapse > 0 && r.Collapse <= 1) {
			bad(rp+".collapse", "must be in (0, 1]")
		}
		between(rp+".min_share", r.MinShare, 0, 1)
		if r.Buckets < 1 {
			bad(rp+".buckets", "must be at least 1")
		}
		if !(r.MaxDailyFall > 0 && r.MaxDailyFall <= 1) {
			bad(rp+".max_daily_fall", "must be in (0, 1]")
		}
	}
	if bo := b.Bounces; bo.MinSends < 0 || bo.MinSends > 1000000000 {
		bad(bp+".bounces.min_sends", "must be between 0 (off) and 1000000000")
	}
	if r := b.Bounces.Ratio; r < 0 || r > 1 {
		bad(bp+".bounces.ratio", "must be 0 (off) or in (0, 1]")
	}
	if r := b.Bounces.ComplaintRatio; r < 0 || r > 1 {
		bad(bp+".bounces.complaint_ratio", "must be 0 (off) or in (0, 1]")
	}
	if r := b.Reports; r.Min < 0 || r.Sources < 0 {
		bad(bp+".reports", "min and sources must not be negative")
	} else {
		between(bp+".reports.ratio", r.Ratio, 0, 1)
	}
	between(bp+".close_factor", b.CloseFactor, 0, 1e6)
	ln := b.Lanes
	if ln.Rate != (Rate{}) {
		rate(bp+".lanes.rate", ln.Rate)
	}
	if rate(bp+".lanes.min", ln.Min) {
		between(bp+".lanes.factor", ln.Factor, 0, 1e6)
	}
	if ln.Burst < 1 || ln.Burst > MaxWindowCount {
		bad(bp+".lanes.burst", "must be between 1 and 1000")
	}
	if ln.RerequestSources < 0 || ln.RerequestSources > MaxWindowCount {
		bad(bp+".lanes.rerequest_sources", "must be between 0 (off) and 1000")
	}
	if ln.RerequestAfter < 0 || (k.TTL > 0 && ln.RerequestAfter > k.TTL) {
		bad(bp+".lanes.rerequest_after", "must be between 0 and the kind's ttl")
	}
	return errs
}

func validKindName(s string) bool {
	return s != "" && len(s) <= 64 && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	})
}

func validDataKey(s string) bool {
	return s != "" && len(s) <= 64 && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	})
}

// quoteKey quotes a map key for a path when it contains a dot.
func quoteKey(k string) string {
	if strings.ContainsAny(k, ".[] ") || k == "" {
		return strconv.Quote(k)
	}
	return k
}

// decoder walks a YAML node tree into a Policy, recording one error per bad
// field with its path, and the position of every field for later
// validation.
type decoder struct {
	errs []error
	pos  map[string]position
}

// position is a 1-based line and column in the YAML document.
type position struct{ line, col int }

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &PolicyError{Path: path, Line: n.Line, Column: n.Column, Reason: fmt.Sprintf(format, args...)})
}

// syntaxError turns a YAML parse error ("yaml: line 3: did not find
// expected key") into a PolicyError with its line.
func syntaxError(err error) *PolicyError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	pe := &PolicyError{Path: "policy", Reason: msg}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, reason, ok := strings.Cut(rest, ": "); ok {
			if line, err := strconv.Atoi(n); err == nil {
				pe.Line, pe.Reason = line, reason
			}
		}
	}
	return pe
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func join(path, key string) string {
	if path == "" {
		return quoteKey(key)
	}
	return path + "." + quoteKey(key)
}

// each calls f for every key of a mapping node, refusing duplicates.
func (d *decoder) each(n *yaml.Node, path string, f func(key string, k, v *yaml.Node, path string)) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, pathOr(path), "must be a mapping")
		return
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		child := join(path, k.Value)
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, pathOr(path), "keys must be strings")
			continue
		}
		if seen[k.Value] {
			d.errorf(k, child, "duplicate field")
			continue
		}
		seen[k.Value] = true
		d.pos[child] = position{k.Line, k.Column}
		f(k.Value, k, v, child)
	}
}

func pathOr(p string) string {
	if p == "" {
		return "policy"
	}
	return p
}

// fields walks a mapping with a fixed set of keys.
func (d *decoder) fields(n *yaml.Node, path string, set map[string]func(v *yaml.Node, path string)) {
	d.each(n, path, func(key string, k, v *yaml.Node, child string) {
		f, ok := set[key]
		if !ok {
			names := slices.Sorted(maps.Keys(set))
			d.errorf(k, child, "unknown field%s (want one of %s)", didYouMean(key, names), strings.Join(names, ", "))
			return
		}
		f(v, child)
	})
}

func (d *decoder) scalar(n *yaml.Node, path, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		d.errorf(n, path, "must be %s", what)
		return "", false
	}
	return n.Value, true
}

func (d *decoder) rate(n *yaml.Node, path string, out *Rate) {
	s, ok := d.scalar(n, path, "a rate like 3/1h")
	if !ok {
		return
	}
	r, err := ParseRate(s)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return
	}
	*out = r
}

func (d *decoder) rates(n *yaml.Node, path string, out *[]Rate) {
	if isNull(n) {
		*out = nil
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "must be a list of rates like [3/1h, 10/24h]")
		return
	}
	rs := make([]Rate, len(n.Content))
	for i, c := range n.Content {
		item := fmt.Sprintf("%s[%d]", path, i)
		d.pos[item] = position{c.Line, c.Column}
		d.rate(resolve(c), item, &rs[i])
	}
	*out = rs
}

func (d *decoder) duration(n *yaml.Node, path string, out *time.Duration) {
	s, ok := d.scalar(n, path, "a duration like 30m")
	if !ok {
		return
	}
	if s == "0" {
		*out = 0
		return
	}
	v, err := parseDuration(s)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return
	}
	*out = v
}

func (d *decoder) integer(n *yaml.Node, path string, out *int) {
	s, ok := d.scalar(n, path, "an integer")
	if !ok {
		return
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		d.errorf(n, path, "%q is not an integer", s)
		return
	}
	*out = v
}

func (d *decoder) float(n *yaml.Node, path string, out *float64) {
	s, ok := d.scalar(n, path, "a number")
	if !ok {
		return
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		d.errorf(n, path, "%q is not a number", s)
		return
	}
	*out = v
}

func (d *decoder) boolean(n *yaml.Node, path string, out *bool) {
	var v bool
	if n.Kind != yaml.ScalarNode || n.Decode(&v) != nil {
		d.errorf(n, path, "must be true or false")
		return
	}
	*out = v
}

func (d *decoder) strs(n *yaml.Node, path string, out *[]string) {
	if isNull(n) {
		*out = nil
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "must be a list of strings")
		return
	}
	ss := make([]string, 0, len(n.Content))
	for i, c := range n.Content {
		item := fmt.Sprintf("%s[%d]", path, i)
		d.pos[item] = position{c.Line, c.Column}
		if s, ok := d.scalar(resolve(c), item, "a string"); ok {
			ss = append(ss, s)
		}
	}
	*out = ss
}

// autoRate accepts "auto" (rate zero), "off" (off set) or a rate.
func (d *decoder) autoRate(n *yaml.Node, path string, out *Rate, off *bool) {
	s, ok := d.scalar(n, path, "auto, off or a rate like 600/1m")
	if !ok {
		return
	}
	switch s {
	case "auto":
		*out, *off = Rate{}, false
	case "off", "false":
		*out, *off = Rate{}, true
	default:
		r, err := ParseRate(s)
		if err != nil {
			d.errorf(n, path, "%v (or auto, off)", err)
			return
		}
		*out, *off = r, false
	}
}

// off reports whether n is the scalar "off" (YAML 1.1 may read it as
// false), setting *out; a mapping is for the caller to decode.
func (d *decoder) off(n *yaml.Node, path string, out *bool) bool {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return false
	}
	if n.Value != "off" && n.Value != "false" {
		d.errorf(n, path, "must be a mapping or off")
		return true
	}
	*out = true
	return true
}

// limit accepts "200/1s" or {rate: 200/1s, burst: 400}. A rate given
// without a burst resets the burst to the default (the rate's count).
func (d *decoder) limit(n *yaml.Node, path string, out *Limit) {
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		var r Rate
		before := len(d.errs)
		d.rate(n, path, &r)
		if len(d.errs) == before {
			*out = Limit{Rate: r}
		}
		return
	}
	var l Limit
	rateSet := false
	d.fields(n, path, map[string]func(*yaml.Node, string){
		"rate":  func(v *yaml.Node, p string) { rateSet = true; d.rate(v, p, &l.Rate) },
		"burst": func(v *yaml.Node, p string) { d.integer(v, p, &l.Burst) },
	})
	if !rateSet {
		l.Rate = out.Rate
	}
	*out = l
}

func (d *decoder) policy(n *yaml.Node, p *Policy) {
	d.fields(n, "", map[string]func(*yaml.Node, string){
		"global": func(v *yaml.Node, path string) { d.limit(v, path, &p.Global) },
		"domains": func(v *yaml.Node, path string) {
			d.each(v, path, func(key string, _, v *yaml.Node, child string) {
				name := key
				if name != "default" {
					name = canonicalDomain(key)
				}
				l := p.Domains[name]
				d.limit(v, child, &l)
				p.Domains[name] = l
			})
		},
		"recipient_rules": func(v *yaml.Node, path string) {
			r := &p.RecipientRules
			d.fields(v, path, map[string]func(*yaml.Node, string){
				"strip_tags":          func(v *yaml.Node, p string) { d.boolean(v, p, &r.StripTags) },
				"gmail_dots":          func(v *yaml.Node, p string) { d.boolean(v, p, &r.GmailDots) },
				"lowercase_local":     func(v *yaml.Node, p string) { d.boolean(v, p, &r.LowercaseLocal) },
				"proton_aliases":      func(v *yaml.Node, p string) { d.boolean(v, p, &r.ProtonAliases) },
				"fastmail_subdomains": func(v *yaml.Node, p string) { d.boolean(v, p, &r.FastmailSubdomains) },
				"icloud_aliases":      func(v *yaml.Node, p string) { d.boolean(v, p, &r.ICloudAliases) },
				"outlook_tags":        func(v *yaml.Node, p string) { d.boolean(v, p, &r.OutlookTags) },
				"yahoo_disposable":    func(v *yaml.Node, p string) { d.boolean(v, p, &r.YahooDisposable) },
			})
		},
		"kinds": func(v *yaml.Node, path string) {
			d.each(v, path, func(name string, kn, v *yaml.Node, child string) {
				k, ok := p.KindPolicies[name]
				if !ok {
					if hint := didYouMean(name, slices.Sorted(maps.Keys(builtinKinds()))); hint != "" {
						// A new kind one or two edits from a built-in one is a
						// typo that would otherwise add a kind with default caps.
						d.errorf(kn, child, "not a built-in kind%s", hint)
						return
					}
					k = newKindDefaults()
				}
				d.kind(v, child, &k)
				p.KindPolicies[name] = k
			})
		},
	})
}

func (d *decoder) kind(n *yaml.Node, path string, k *KindPolicy) {
	d.fields(n, path, map[string]func(*yaml.Node, string){
		"class": func(v *yaml.Node, p string) {
			if s, ok := d.scalar(v, p, "security or notify"); ok {
				k.Class = queue.Class(s)
			}
		},
		"ttl":           func(v *yaml.Node, p string) { d.duration(v, p, &k.TTL) },
		"max_retry":     func(v *yaml.Node, p string) { d.integer(v, p, &k.MaxRetry) },
		"archive":       func(v *yaml.Node, p string) { d.duration(v, p, &k.Archive) },
		"required":      func(v *yaml.Node, p string) { d.strs(v, p, &k.Required) },
		"dedup_window":  func(v *yaml.Node, p string) { d.duration(v, p, &k.DedupWindow) },
		"per_recipient": func(v *yaml.Node, p string) { d.rates(v, p, &k.PerRecipient) },
		"per_source":    func(v *yaml.Node, p string) { d.rates(v, p, &k.PerSource) },
		"per_group": func(v *yaml.Node, path string) {
			if isNull(v) {
				k.PerGroup = nil
				return
			}
			var gs []GroupLimit
			d.each(v, path, func(key string, kn, v *yaml.Node, child string) {
				g, err := ParseGroupPrefix(key)
				if err != nil {
					d.errorf(kn, child, "%v", err)
					return
				}
				gl := GroupLimit{Prefix: g}
				d.rates(v, child, &gl.Rates)
				gs = append(gs, gl)
			})
			k.PerGroup = gs
		},
		"untrusted_after": func(v *yaml.Node, p string) { d.integer(v, p, &k.UntrustedAfter) },
		"trust_ttl":       func(v *yaml.Node, p string) { d.duration(v, p, &k.TrustTTL) },
		"report_suppress": func(v *yaml.Node, p string) { d.duration(v, p, &k.ReportSuppress) },
		"breaker": func(v *yaml.Node, path string) {
			b := &k.Breaker
			if v.Kind == yaml.ScalarNode && !isNull(v) {
				// "breaker: off" (YAML 1.1 may read it as false).
				if v.Value != "off" && v.Value != "false" {
					d.errorf(v, path, "must be a mapping or off")
					return
				}
				b.SurgeFactor, b.RefusalRatio, b.RelayFailures = 0, 0, 0
				b.Ceilings.RateOff, b.Ceilings.NewRecipientsOff, b.Redemption.Off, b.Reports.Min = true, true, true, 0
				b.Bounces.MinSends = 0
				return
			}
			d.fields(v, path, map[string]func(*yaml.Node, string){
				"surge_factor": func(v *yaml.Node, p string) { d.float(v, p, &b.SurgeFactor) },
				"floor":        func(v *yaml.Node, p string) { d.rate(v, p, &b.Floor) },
				"window":       func(v *yaml.Node, p string) { d.duration(v, p, &b.Window) },
				// baseline: the learning horizon's name before learn.horizon.
				"baseline":       func(v *yaml.Node, p string) { d.duration(v, p, &b.Learn.Horizon) },
				"refusal_ratio":  func(v *yaml.Node, p string) { d.float(v, p, &b.RefusalRatio) },
				"refusal_min":    func(v *yaml.Node, p string) { d.rate(v, p, &b.RefusalMin) },
				"relay_failures": func(v *yaml.Node, p string) { d.integer(v, p, &b.RelayFailures) },
				"relay_ratio":    func(v *yaml.Node, p string) { d.float(v, p, &b.RelayRatio) },
				"cooldown":       func(v *yaml.Node, p string) { d.duration(v, p, &b.Cooldown) },
				"max_cooldown":   func(v *yaml.Node, p string) { d.duration(v, p, &b.MaxCooldown) },
				"probe":          func(v *yaml.Node, p string) { d.rate(v, p, &b.Probe) },
				"open": func(v *yaml.Node, p string) {
					if s, ok := d.scalar(v, p, "hold, clamp or shed"); ok {
						b.Open = BreakerMode(s)
					}
				},
				"hold_max":        func(v *yaml.Node, p string) { d.integer(v, p, &b.HoldMax) },
				"refusal_sources": func(v *yaml.Node, p string) { d.integer(v, p, &b.RefusalSources) },
				"close_factor":    func(v *yaml.Node, p string) { d.float(v, p, &b.CloseFactor) },
				"learn": func(v *yaml.Node, path string) {
					l := &b.Learn
					d.fields(v, path, map[string]func(*yaml.Node, string){
						"horizon":        func(v *yaml.Node, p string) { d.duration(v, p, &l.Horizon) },
						"warmup":         func(v *yaml.Node, p string) { d.duration(v, p, &l.Warmup) },
						"max_rise":       func(v *yaml.Node, p string) { d.float(v, p, &l.MaxRise) },
						"max_daily_rise": func(v *yaml.Node, p string) { d.float(v, p, &l.MaxDailyRise) },
						"day":            func(v *yaml.Node, p string) { d.duration(v, p, &l.Day) },
					})
				},
				"ceilings": func(v *yaml.Node, path string) {
					c := &b.Ceilings
					d.fields(v, path, map[string]func(*yaml.Node, string){
						"rate":                  func(v *yaml.Node, p string) { d.autoRate(v, p, &c.Rate, &c.RateOff) },
						"rate_min":              func(v *yaml.Node, p string) { d.rate(v, p, &c.RateMin) },
						"rate_factor":           func(v *yaml.Node, p string) { d.float(v, p, &c.RateFactor) },
						"new_recipients":        func(v *yaml.Node, p string) { d.autoRate(v, p, &c.NewRecipients, &c.NewRecipientsOff) },
						"new_recipients_min":    func(v *yaml.Node, p string) { d.rate(v, p, &c.NewRecipientsMin) },
						"new_recipients_factor": func(v *yaml.Node, p string) { d.float(v, p, &c.NewRecipientsFactor) },
					})
				},
				"redemption": func(v *yaml.Node, path string) {
					r := &b.Redemption
					if d.off(v, path, &r.Off) {
						return
					}
					r.Off = false
					d.fields(v, path, map[string]func(*yaml.Node, string){
						"bucket":         func(v *yaml.Node, p string) { d.duration(v, p, &r.Bucket) },
						"lag":            func(v *yaml.Node, p string) { d.duration(v, p, &r.Lag) },
						"min_sends":      func(v *yaml.Node, p string) { d.integer(v, p, &r.MinSends) },
						"min_sources":    func(v *yaml.Node, p string) { d.integer(v, p, &r.MinSources) },
						"collapse":       func(v *yaml.Node, p string) { d.float(v, p, &r.Collapse) },
						"min_share":      func(v *yaml.Node, p string) { d.float(v, p, &r.MinShare) },
						"buckets":        func(v *yaml.Node, p string) { d.integer(v, p, &r.Buckets) },
						"max_daily_fall": func(v *yaml.Node, p string) { d.float(v, p, &r.MaxDailyFall) },
					})
				},
				"reports": func(v *yaml.Node, path string) {
					r := &b.Reports
					var off bool
					if d.off(v, path, &off) {
						if off {
							r.Min = 0
						}
						return
					}
					d.fields(v, path, map[string]func(*yaml.Node, string){
						"min":     func(v *yaml.Node, p string) { d.integer(v, p, &r.Min) },
						"sources": func(v *yaml.Node, p string) { d.integer(v, p, &r.Sources) },
						"ratio":   func(v *yaml.Node, p string) { d.float(v, p, &r.Ratio) },
					})
				},
				"bounces": func(v *yaml.Node, path string) {
					bo := &b.Bounces
					var off bool
					if d.off(v, path, &off) {
						if off {
							bo.MinSends = 0
						}
						return
					}
					d.fields(v, path, map[string]func(*yaml.Node, string){
						"min_sends":       func(v *yaml.Node, p string) { d.integer(v, p, &bo.MinSends) },
						"ratio":           func(v *yaml.Node, p string) { d.float(v, p, &bo.Ratio) },
						"complaint_ratio": func(v *yaml.Node, p string) { d.float(v, p, &bo.ComplaintRatio) },
					})
				},
				"lanes": func(v *yaml.Node, path string) {
					l := &b.Lanes
					var off bool
					if d.off(v, path, &off) {
						if off {
							l.Trusted, l.Rerequest, l.Redeemed = false, false, false
						}
						return
					}
					d.fields(v, path, map[string]func(*yaml.Node, string){
						"rate": func(v *yaml.Node, p string) {
							var unused bool
							d.autoRate(v, p, &l.Rate, &unused)
							if unused {
								d.errorf(v, p, "must be auto or a rate like 60/1m (use lanes: off)")
							}
						},
						"factor":            func(v *yaml.Node, p string) { d.float(v, p, &l.Factor) },
						"min":               func(v *yaml.Node, p string) { d.rate(v, p, &l.Min) },
						"trusted":           func(v *yaml.Node, p string) { d.boolean(v, p, &l.Trusted) },
						"rerequest":         func(v *yaml.Node, p string) { d.boolean(v, p, &l.Rerequest) },
						"rerequest_after":   func(v *yaml.Node, p string) { d.duration(v, p, &l.RerequestAfter) },
						"rerequest_sources": func(v *yaml.Node, p string) { d.integer(v, p, &l.RerequestSources) },
						"burst":             func(v *yaml.Node, p string) { d.integer(v, p, &l.Burst) },
						"redeemed":          func(v *yaml.Node, p string) { d.boolean(v, p, &l.Redeemed) },
					})
				},
			})
		},
	})
}
