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
	// Required lists data keys the kind's templates need. Built-in kinds
	// always require their own keys in addition.
	Required []string
	// DedupWindow refuses a second email of the kind to the same recipient
	// within it as a duplicate; zero turns dedup off.
	DedupWindow time.Duration
	// PerRecipient caps admitted emails of the kind per canonical
	// recipient, one sliding window each.
	PerRecipient []Rate
	// PerSource caps admitted emails of the kind per source (client IP or
	// principal; emails without a source share one).
	PerSource []Rate
	// Breaker configures the kind's surge breaker.
	Breaker BreakerPolicy
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
	// Baseline is the period the baseline rate is learned over (an
	// exponentially weighted average of closed windows, so a surge is not
	// learned). At least Window. Default 1h.
	Baseline time.Duration
	// RefusalRatio trips the breaker when at least this share of the
	// requests in the window is refused by caps (duplicate or capped),
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
		SurgeFactor: 5, Floor: Rate{60, time.Minute}, Window: time.Minute, Baseline: time.Hour,
		RefusalRatio: 0.5, RefusalMin: Rate{30, time.Minute}, RelayFailures: 10, RelayRatio: 0.9,
		Cooldown: 10 * time.Minute, Probe: Rate{1, time.Second}, Open: BreakerHold, HoldMax: 100000,
	}
}

// notificationBreaker is the default breaker of notifications: an app,
// not an outside party, decides to send them, and a campaign is a
// legitimate surge, so only the relay trip is on; an operator's trip
// clamps them to their baseline.
func notificationBreaker() BreakerPolicy {
	b := defaultBreaker()
	b.SurgeFactor, b.RefusalRatio, b.Open = 0, 0, BreakerClamp
	return b
}

// builtinKinds returns the default policy of each built-in kind.
func builtinKinds() map[string]KindPolicy {
	specs := queue.DefaultKinds()
	kp := func(name string) KindPolicy {
		s := specs[name]
		return KindPolicy{Class: s.Class, TTL: s.TTL, MaxRetry: s.MaxRetry, Required: slices.Clone(s.Required), Breaker: defaultBreaker()}
	}
	reset := kp(queue.KindPasswordReset)
	reset.DedupWindow = 2 * time.Minute
	reset.PerRecipient = []Rate{{3, time.Hour}, {10, 24 * time.Hour}}
	reset.PerSource = []Rate{{20, time.Hour}}
	verify := kp(queue.KindVerifyEmail)
	verify.DedupWindow = 2 * time.Minute
	verify.PerRecipient = []Rate{{3, time.Hour}, {10, 24 * time.Hour}}
	verify.PerSource = []Rate{{20, time.Hour}}
	note := kp(queue.KindNotification)
	note.PerRecipient = []Rate{{50, 24 * time.Hour}}
	note.Breaker = notificationBreaker()
	return map[string]KindPolicy{queue.KindPasswordReset: reset, queue.KindVerifyEmail: verify, queue.KindNotification: note}
}

// newKindDefaults is the starting point of a kind a policy file adds.
func newKindDefaults() KindPolicy {
	return KindPolicy{Class: queue.ClassNotify, TTL: 24 * time.Hour, PerRecipient: []Rate{{50, 24 * time.Hour}}, Breaker: defaultBreaker()}
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
		out[name] = queue.KindSpec{Class: k.Class, TTL: k.TTL, MaxRetry: k.MaxRetry, Required: req}
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
// "kinds.password_reset.per_recipient[1]", the YAML line when known, and the
// reason.
type PolicyError struct {
	Path   string
	Line   int
	Reason string
}

// Error returns "path: reason".
func (e *PolicyError) Error() string { return e.Path + ": " + e.Reason }

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
// The error joins one [*PolicyError] per problem, each naming the field path
// and the reason, e.g.
//
//	kinds.password_reset.per_recipient[1]: rate "3/0s": duration must be positive
func ParsePolicy(doc []byte) (*Policy, error) {
	pol := DefaultPolicy()
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return nil, &PolicyError{Path: "policy", Reason: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	d := &decoder{lines: map[string]int{}}
	if len(root.Content) > 0 {
		d.policy(resolve(root.Content[0]), pol)
	}
	// A field that failed to decode keeps a placeholder; do not report it
	// twice.
	failed := make(map[string]bool, len(d.errs))
	for _, e := range d.errs {
		failed[e.(*PolicyError).Path] = true
	}
	for _, e := range pol.validate(d.lines) {
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

func (p *Policy) validate(lines map[string]int) []error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, &PolicyError{Path: path, Line: lines[path], Reason: fmt.Sprintf(format, args...)})
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
		if b.Baseline < b.Window || b.Baseline > MaxWindow {
			bad(bp+".baseline", "must be between the window (%s) and %s", formatDuration(b.Window), formatDuration(MaxWindow))
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
// field with its path, and the line of every field for later validation.
type decoder struct {
	errs  []error
	lines map[string]int
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &PolicyError{Path: path, Line: n.Line, Reason: fmt.Sprintf(format, args...)})
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
		d.lines[child] = k.Line
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
			d.errorf(k, child, "unknown field (want one of %s)", strings.Join(slices.Sorted(maps.Keys(set)), ", "))
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
		d.rate(resolve(c), fmt.Sprintf("%s[%d]", path, i), &rs[i])
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
		if s, ok := d.scalar(resolve(c), fmt.Sprintf("%s[%d]", path, i), "a string"); ok {
			ss = append(ss, s)
		}
	}
	*out = ss
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
			d.each(v, path, func(name string, _, v *yaml.Node, child string) {
				k, ok := p.KindPolicies[name]
				if !ok {
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
		"required":      func(v *yaml.Node, p string) { d.strs(v, p, &k.Required) },
		"dedup_window":  func(v *yaml.Node, p string) { d.duration(v, p, &k.DedupWindow) },
		"per_recipient": func(v *yaml.Node, p string) { d.rates(v, p, &k.PerRecipient) },
		"per_source":    func(v *yaml.Node, p string) { d.rates(v, p, &k.PerSource) },
		"breaker": func(v *yaml.Node, path string) {
			b := &k.Breaker
			if v.Kind == yaml.ScalarNode && !isNull(v) {
				// "breaker: off" (YAML 1.1 may read it as false).
				if v.Value != "off" && v.Value != "false" {
					d.errorf(v, path, "must be a mapping or off")
					return
				}
				b.SurgeFactor, b.RefusalRatio, b.RelayFailures = 0, 0, 0
				return
			}
			d.fields(v, path, map[string]func(*yaml.Node, string){
				"surge_factor":   func(v *yaml.Node, p string) { d.float(v, p, &b.SurgeFactor) },
				"floor":          func(v *yaml.Node, p string) { d.rate(v, p, &b.Floor) },
				"window":         func(v *yaml.Node, p string) { d.duration(v, p, &b.Window) },
				"baseline":       func(v *yaml.Node, p string) { d.duration(v, p, &b.Baseline) },
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
				"hold_max": func(v *yaml.Node, p string) { d.integer(v, p, &b.HoldMax) },
			})
		},
	})
}
