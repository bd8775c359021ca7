package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/internal/telemetry"
	"github.com/floodgate-dev/floodgate/queue"
)

// Defaults of [Config].
const (
	DefaultDecisionSample = 0.01
	DefaultDecisionLogLen = 10000
	// DefaultTraceNewPerMinute bounds the traces each kind begins a minute
	// for refusals about recipients with no history (see Config).
	DefaultTraceNewPerMinute = 1000
	DefaultClaimGrace        = 10 * time.Minute
	// leaseMargin is added to a kind's attempt timeout to form the claim
	// lease, so a slow but live attempt keeps its claim, and a Redis outage
	// of up to a minute right after the relay's 250 ends before the claim
	// does: the worker's retried Settle then lands first.
	leaseMargin = 90 * time.Second
)

// Config configures a [Guard].
type Config struct {
	// Redis holds every guard key; a *redis.Client, a *redis.ClusterClient
	// or a failover client. Required. Create it with ContextTimeoutEnabled
	// so deadlines are honoured.
	Redis redis.UniversalClient
	// Policy is the guard's policy; nil means [DefaultPolicy].
	Policy *Policy
	// Logger receives one debug line per decision (kind, outcome, reason,
	// task_id, rcpt_hash); nil discards.
	Logger *slog.Logger
	// Registerer receives the floodgate_decisions_total counter; nil
	// registers nothing.
	Registerer prometheus.Registerer
	// DecisionSample is the fraction of allowed decisions written to the
	// decision log; refusals, deferrals by a claim and settled failures are
	// always written. Zero means 0.01; negative means none.
	DecisionSample float64
	// DecisionLogLen bounds the decision log (approximately, MAXLEN ~).
	// Zero means 10000.
	DecisionLogLen int
	// TraceNewPerMinute bounds how many recipient traces ([Guard.Trace])
	// each kind begins a minute for refusals about recipients with no
	// history. An enumeration refuses one new victim after another: without
	// the bound each would leave a trace, and memory would grow with the
	// attack's list. Such traces also expire with the source windows and
	// held emails they explain rather than the recipient windows. Refusals
	// beyond it are counted (Stats TracesSkipped), not traced. Zero means
	// 1000; negative means none are begun.
	TraceNewPerMinute int
	// Lease is how long a dispatch claim is held before another attempt
	// may take it over. Zero means the kind's attempt timeout plus 90s. A
	// Redis outage that starts when the relay answers 250 and outlasts the
	// rest of the lease may lead to a second send by another worker.
	Lease time.Duration
	// ClaimGrace is how long a settled claim outlives the email's expiry,
	// covering clock skew between producers and Redis. Zero means 10m.
	ClaimGrace time.Duration
	// HashKey is the secret of the recipient and source digests in keys,
	// logs, the decision log and listings (HMAC-SHA256): every process that
	// shares the Redis must have the same one. Empty means unkeyed SHA-256,
	// which hides addresses from casual reading but lets anyone who can read
	// Redis or the logs test a guessed address; set it in production.
	// Changing it starts every window afresh and orphans the suppression
	// list (re-add its entries).
	HashKey []byte
	// Keyring opens and seals the payloads of held emails on release;
	// give it the producers' and workers' keys (nil: plaintext payloads).
	Keyring *queue.Keyring
	// MessageIDDomain is the right-hand side of the Message-IDs the
	// workers give emails ("<id@domain>"), so that a [Guard.Trace] names
	// each send's; empty: traces give the id only.
	MessageIDDomain string
	// TracerProvider, when set, receives a span per decision (guard.admit,
	// guard.dispatch, guard.settle) under the caller's; nil creates none.
	TracerProvider oteltrace.TracerProvider
	// Now returns the current time for suppression timestamps; nil means
	// time.Now. Decisions use Redis TIME.
	Now func() time.Time

	// Webhook, when set, is an http or https URL that receives every
	// breaker transition as a JSON [BreakerTransition] (POST, header
	// X-Floodgate-Event: breaker.transition), retried with exponential
	// backoff. Deliveries never block decisions: they are queued for a
	// background goroutine, and when the queue is full the oldest is
	// dropped and counted. Stop it with [Guard.Shutdown] or [Guard.Close].
	Webhook string
	// WebhookSecret, when set, signs each delivery: header
	// X-Floodgate-Signature: sha256=<hex HMAC-SHA256 of the body>.
	WebhookSecret string
	// WebhookClient sends the deliveries; nil means a client with a 10s
	// timeout.
	WebhookClient *http.Client
	// WebhookBackoff is the wait before the first retry of a failed
	// delivery; it doubles up to 30s, for at most 6 attempts. Zero means
	// 1s.
	WebhookBackoff time.Duration
	// WebhookQueue bounds the deliveries waiting to be sent. Zero means
	// 256.
	WebhookQueue int
	// OnTransition, when set, is called with every breaker transition this
	// process's decisions made, on the deciding goroutine: it must return
	// quickly.
	OnTransition func(BreakerTransition)
}

// Guard decides, atomically and shared across every process using the same
// Redis, whether emails may be queued and sent. It implements
// [queue.Admitter]. It is safe for concurrent use.
type Guard struct {
	rdb          redis.UniversalClient
	policy       *Policy
	plans        map[string]*plan
	global       [2]string
	domains      map[string][2]string
	log          *slog.Logger
	metrics      *metrics
	sample       float64
	logLen       string
	grace        string
	now          func() time.Time
	queue        *asynq.Client
	dg           *rkeys.Digests
	keyring      *queue.Keyring
	notify       *notifier
	onTransition func(BreakerTransition)
	msgDomain    string
	// tracer starts the guard.* spans; nil when tracing is off (otel.go).
	tracer *telemetry.Tracer
	// bounces and bounceScript count bounces and complaints (bounces.go).
	bounces      *bounceMetrics
	bounceScript *redis.Script
}

var _ queue.Admitter = (*Guard)(nil)

// plan holds what the scripts need of one kind, formatted once.
type plan struct {
	name      string
	spec      queue.KindSpec
	policy    KindPolicy
	mode      BreakerMode
	admit     *redis.Script
	admitArgs []any // "evalsha", SHA, number of keys, keys; per-email keys nil
	dispatch  *redis.Script
	settle    *redis.Script
	feedback  *redis.Script
	bounce    *redis.Script // the bounce trip (bounces.go)
	control   *redis.Script
	release   *redis.Script
	sweep     *redis.Script
	lease     string
	// groups are the kind's source-group prefixes, in the order of their
	// keys in the admission script.
	groups      []GroupPrefix
	breakerKey  string
	heldKey     string
	releasing   string
	admittedKey string
	trustTTL    string
	reportSup   string
	// state is the floodgate_breaker_state gauge of the kind, set from
	// every decision's reply.
	state prometheus.Gauge
}

// New returns a guard for cfg. It fails if the policy is not valid.
func New(cfg Config) (*Guard, error) {
	if cfg.Redis == nil {
		return nil, errors.New("guard: Config.Redis is required")
	}
	if cfg.Policy == nil {
		cfg.Policy = DefaultPolicy()
	}
	if err := cfg.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("guard: policy: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.DecisionSample == 0:
		cfg.DecisionSample = DefaultDecisionSample
	case cfg.DecisionSample < 0:
		cfg.DecisionSample = 0
	case cfg.DecisionSample > 1:
		cfg.DecisionSample = 1
	}
	if cfg.DecisionLogLen <= 0 {
		cfg.DecisionLogLen = DefaultDecisionLogLen
	}
	switch {
	case cfg.TraceNewPerMinute == 0:
		cfg.TraceNewPerMinute = DefaultTraceNewPerMinute
	case cfg.TraceNewPerMinute < 0:
		cfg.TraceNewPerMinute = 0
	}
	if cfg.ClaimGrace <= 0 {
		cfg.ClaimGrace = DefaultClaimGrace
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	bm, err := newBounceMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	var n *notifier
	if cfg.Webhook != "" {
		if n, err = newNotifier(cfg, m); err != nil {
			return nil, err
		}
	}
	g := &Guard{
		rdb:     cfg.Redis,
		policy:  cfg.Policy,
		plans:   make(map[string]*plan, len(cfg.Policy.KindPolicies)),
		domains: make(map[string][2]string, len(cfg.Policy.Domains)),
		log:     cfg.Logger,
		metrics: m,
		sample:  cfg.DecisionSample,
		logLen:  strconv.Itoa(cfg.DecisionLogLen),
		grace:   ms(cfg.ClaimGrace),
		now:     cfg.Now,
		// asynq's client keeps no goroutines and does not own the
		// connection: releases enqueue through it.
		queue:        asynq.NewClientFromRedisClient(cfg.Redis),
		notify:       n,
		dg:           rkeys.NewDigests(cfg.HashKey),
		keyring:      cfg.Keyring,
		onTransition: cfg.OnTransition,
		msgDomain:    cfg.MessageIDDomain,
		tracer:       telemetry.NewTracer(cfg.TracerProvider),
	}
	g.bounces, g.bounceScript = bm, rkeys.BounceScript()
	g.global = gcraArgs(cfg.Policy.Global)
	for d, l := range cfg.Policy.Domains {
		g.domains[d] = gcraArgs(l)
	}
	specs := cfg.Policy.Kinds()
	for name, kp := range cfg.Policy.KindPolicies {
		lease := cfg.Lease
		if lease <= 0 {
			lease = specs[name].AttemptTimeout() + leaseMargin
		}
		ac := admitConfig(name, kp, cfg.DecisionLogLen, cfg.TraceNewPerMinute)
		pl := &plan{
			name:        name,
			spec:        specs[name],
			policy:      kp,
			mode:        kp.Breaker.Open,
			admit:       rkeys.AdmitScript(ac),
			dispatch:    rkeys.DispatchScript(name, ac.Breaker),
			settle:      rkeys.SettleScript(name, ac.Breaker),
			feedback:    rkeys.FeedbackScript(name, cfg.DecisionLogLen, ac.Breaker),
			bounce:      rkeys.BounceTripScript(name, ac.Breaker),
			control:     rkeys.ControlScript(name, ac.Breaker),
			release:     rkeys.ReleaseScript(ac),
			sweep:       rkeys.SweepScript(name, ac.Breaker),
			lease:       ms(lease),
			breakerKey:  rkeys.Breaker(name),
			heldKey:     rkeys.Held(name),
			releasing:   rkeys.Releasing(name),
			admittedKey: rkeys.Admitted(name),
			trustTTL:    ms(kp.TrustTTL),
			reportSup:   strconv.FormatInt(kp.ReportSuppress.Milliseconds(), 10),
			state:       m.breakerState.WithLabelValues(name),
		}
		for _, gl := range kp.PerGroup {
			pl.groups = append(pl.groups, gl.Prefix)
		}
		// The admission script's command, its keys filled in per email
		// (see Admit): the kind's fixed keys are constants of the script.
		pl.admitArgs = make([]any, 3+4+len(pl.groups))
		pl.admitArgs[0], pl.admitArgs[1], pl.admitArgs[2] = "evalsha", pl.admit.Hash(), strconv.Itoa(4+len(pl.groups))
		g.plans[name] = pl
	}
	if n != nil {
		n.start()
	}
	return g, nil
}

// evalsha runs args (EVALSHA of s and its keys and arguments), loading s
// first when Redis does not have it, as redis.Script.Run does.
func (g *Guard) evalsha(ctx context.Context, s *redis.Script, args []any) *redis.Cmd {
	cmd := g.rdb.Do(ctx, args...)
	if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err := s.Load(ctx, g.rdb).Err(); err != nil {
			return cmd
		}
		cmd = g.rdb.Do(ctx, args...)
	}
	return cmd
}

// Policy returns the guard's policy. It must not be modified.
func (g *Guard) Policy() *Policy { return g.policy }

// ms formats d in whole milliseconds, at least 1.
func ms(d time.Duration) string { return strconv.FormatInt(max(d.Milliseconds(), 1), 10) }

// gcraArgs returns a limit's emission interval and burst offset in µs,
// rounding the interval up so the rate never exceeds the policy.
func gcraArgs(l Limit) [2]string {
	per := l.Rate.Per.Microseconds()
	n := int64(l.Rate.N)
	interval := max((per+n-1)/n, 1)
	return [2]string{strconv.FormatInt(interval, 10), strconv.FormatInt(interval*int64(l.EffectiveBurst()), 10)}
}

// admitConfig returns a kind's settings for its scripts (see
// rkeys.AdmitScript). Recipient windows are whole seconds, rounded up; the
// log is kept one second longer than the longest of them, so that once
// Redis has expired it every window is surely over.
func admitConfig(name string, kp KindPolicy, logLen, traceNew int) rkeys.AdmitConfig {
	longest := secs(kp.DedupWindow)
	c := rkeys.AdmitConfig{Kind: name, LogLen: logLen, Breaker: breakerConfig(kp), Dedup: secs(kp.DedupWindow), RecipientLen: 1}
	for _, r := range kp.PerRecipient {
		longest = max(longest, secs(r.Per))
		c.RecipientLen = max(c.RecipientLen, r.N)
		c.Recipient = append(c.Recipient, [2]int64{int64(r.N), secs(r.Per)})
	}
	c.RecipientTTL = (longest + 1) * 1000
	if longest == 0 {
		// No window: keep the log a minute anyway, so that a re-sent
		// script still recognises its own admission.
		c.RecipientTTL = 60000
	}
	c.Breaker.TraceTTLMS = max(c.RecipientTTL, kp.TTL.Milliseconds())
	c.Breaker.TraceNewMax = traceNew
	for _, r := range kp.PerSource {
		c.SourceTTL = max(c.SourceTTL, r.Per.Milliseconds())
		c.SourceLen = max(c.SourceLen, r.N)
		c.Source = append(c.Source, [2]int64{int64(r.N), r.Per.Milliseconds()})
	}
	for _, gl := range kp.PerGroup {
		var gc rkeys.GroupConfig
		for _, r := range gl.Rates {
			gc.TTL = max(gc.TTL, r.Per.Milliseconds())
			gc.Len = max(gc.Len, r.N)
			gc.Windows = append(gc.Windows, [2]int64{int64(r.N), r.Per.Milliseconds()})
		}
		c.Groups = append(c.Groups, gc)
		c.Breaker.TraceNewTTLMS = max(c.Breaker.TraceNewTTLMS, gc.TTL)
	}
	// A trace begun by a refusal about a recipient with no history explains
	// a source or group window, or a held email: it lives as long as they.
	c.Breaker.TraceNewTTLMS = min(max(c.Breaker.TraceNewTTLMS, c.SourceTTL, kp.TTL.Milliseconds(), 60000), c.Breaker.TraceTTLMS)
	// The source log keeps the largest per-source count of entries: a
	// shrunk cap cannot exceed it, and without per-source windows there is
	// none to shrink.
	c.UntrustedAfter = min(kp.UntrustedAfter, c.SourceLen)
	// A re-request's source may have made at most RerequestSources
	// requests in its longest window; the log must hold one more entry to
	// tell, else the per-source cap is the stronger bound already.
	if k := kp.Breaker.Lanes.RerequestSources; k > 0 && k < c.SourceLen {
		c.Breaker.RerequestSrcLen, c.Breaker.RerequestSrcFrom, c.Breaker.RerequestSrcMS = int64(k+1)*6, int64(k)*6+1, c.SourceTTL
	}
	return c
}

// secs returns d in whole seconds, rounded up.
func secs(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

func (g *Guard) plan(op, kind string) (*plan, error) {
	p, ok := g.plans[kind]
	if !ok {
		return nil, fmt.Errorf("guard: %s %q: %w", op, kind, ErrUnknownKind)
	}
	return p, nil
}

// sampleFlag returns the script argument saying whether to log an allowed
// decision; constants in an interface need no allocation.
func (g *Guard) sampleFlag() any {
	if g.sample > 0 && rand.Float64() < g.sample {
		return "1"
	}
	return "0"
}

// Admit decides whether the email a describes may be queued. It implements
// [queue.Admitter] with one Lua script, one round trip: suppression, the
// dedup window and every per-recipient window (for the canonical recipient
// and kind), every per-source window, and the kind's breaker, in that order
// of precedence. Quota is consumed only when the email is admitted. The
// decision is counted in the stats hash.
//
// A refusal is a Verdict, not an error. Errors are [ErrUnknownKind] and
// [*OpError] (Redis did not answer); the verdict then never allows.
func (g *Guard) Admit(ctx context.Context, a *queue.Admission) (queue.Verdict, error) {
	start := time.Now()
	if !g.tracer.On() {
		v, err := g.admit(ctx, a)
		g.metrics.roundTrip[opAdmit].Observe(time.Since(start).Seconds())
		return v, err
	}
	return g.tracedAdmit(ctx, a, start)
}

// admit is the decision of [Guard.Admit], neither timed nor traced.
func (g *Guard) admit(ctx context.Context, a *queue.Admission) (queue.Verdict, error) {
	pl, err := g.plan("admit", a.Kind)
	if err != nil {
		return queue.Verdict{}, err
	}
	canon := Canonical(a.To, g.policy.RecipientRules)
	// The recipient's name in logs is the start of its suppression field:
	// one digest gives both.
	sup := g.dg.SuppressionField(canon)
	rh := rkeys.RcptHashOfField(sup)
	rkey := g.recipientKey(a.Kind, canon, a.Account)
	sk := pl.sourceKeysOf(g.dg, a.Source)
	// The EVALSHA arguments: the kind's fixed keys are boxed once, in the
	// plan, which saves an allocation per key per admission.
	args := make([]any, len(pl.admitArgs), len(pl.admitArgs)+8)
	copy(args, pl.admitArgs)
	args[3], args[4], args[5] = rkey, sk.log, rkeys.SuppressionOfField(sup)
	for i, gk := range sk.groups {
		args[6+i] = gk
	}
	args[6+len(sk.groups)] = g.traceKey(a.Kind, canon, a.Account, rkey)
	args = append(args, rkeys.EmailTag(a.ID), a.ID, a.Payload, g.sampleFlag(), rh, string(a.Trust), sk.who, sk.narrowArg)
	res, sfx, err := g.reply(ctx, "admit", a.Kind, a.ID, rh, g.evalsha(ctx, pl.admit, args))
	if err != nil {
		return queue.Verdict{}, err
	}
	g.breakerReply(ctx, pl, sfx)
	outcome, reason, _ := strings.Cut(res, ":")
	var v queue.Verdict
	switch queue.Outcome(outcome) {
	case queue.Queued:
		v = queue.Verdict{Allow: true, Outcome: queue.Queued, Reason: reason}
		switch reason {
		case LaneTrusted, LaneRerequest, LaneRedeemed:
			v.Lane = reason
		}
	case queue.Held:
		v = queue.Verdict{Outcome: queue.Held, Reason: "breaker"}
	case queue.Duplicate, queue.Capped, queue.Suppressed, queue.Shed:
		v = queue.Verdict{Outcome: queue.Outcome(outcome), Reason: reason}
	default:
		return queue.Verdict{}, &OpError{Op: "admit", Err: fmt.Errorf("unexpected script reply %q", res)}
	}
	g.record(ctx, "admit", a.Kind, a.ID, rh, string(v.Outcome), reason)
	return v, nil
}

// Dispatch decides whether one send attempt of p may proceed now; the
// worker calls it before every attempt, with attempt a random nonce of the
// handler invocation. It runs one Lua script, one round trip: the
// idempotency claim keyed by p.ID, the email's expiry, the kind's breaker,
// and the global and per-domain rates (GCRA on Redis TIME, both checked
// before either is consumed); then it takes the claim with a lease.
//
// Verdicts: Allow; Deferred with RetryAfter > 0 (a rate is exhausted,
// Reason "global" or "domain"; another attempt holds a live claim, Reason
// "claimed"; the relay breaker is open, Reason "relay", until it probes
// again; an open clamp or half-open breaker paces the kind, Reason
// "breaker"): re-queue without using a retry; Duplicate (already sent: do
// not send); Expired; Held or Shed (the breaker); Failed (settled failed
// before). Calling it again with the same attempt is allowed again
// without consuming the rates twice. An allowed verdict's Ambiguous counts
// the earlier attempts whose result was ambiguous (settled with reason
// "ambiguous"). Only an allowed attempt is followed by [Guard.Settle].
func (g *Guard) Dispatch(ctx context.Context, p *queue.Payload, attempt string) (queue.Verdict, error) {
	start := time.Now()
	if !g.tracer.On() {
		v, err := g.dispatch(ctx, p, attempt)
		g.metrics.roundTrip[opDispatch].Observe(time.Since(start).Seconds())
		return v, err
	}
	return g.tracedDispatch(ctx, p, attempt, start)
}

// dispatch is the decision of [Guard.Dispatch], neither timed nor traced.
func (g *Guard) dispatch(ctx context.Context, p *queue.Payload, attempt string) (queue.Verdict, error) {
	if attempt == "" || strings.ContainsRune(attempt, '~') {
		return queue.Verdict{}, errors.New("guard: dispatch: attempt is empty or holds '~'")
	}
	pl, err := g.plan("dispatch", p.Kind)
	if err != nil {
		return queue.Verdict{}, err
	}
	canon := Canonical(p.To, g.policy.RecipientRules)
	domain := canon[strings.LastIndexByte(canon, '@')+1:]
	dl, ok := g.domains[domain]
	if !ok {
		dl = g.domains["default"]
	}
	body, err := p.Bytes()
	if err != nil {
		return queue.Verdict{}, fmt.Errorf("guard: dispatch: %w", err)
	}
	rh := g.dg.RcptHash(canon)
	keys := []string{rkeys.Claim(p.ID), rkeys.Global, rkeys.Domain(domain), g.dg.Trace(p.Kind, canon)}
	laned := "0"
	if p.Lane != "" {
		laned = "1"
	}
	args := []any{rkeys.AttemptValue(attempt), pl.lease, strconv.FormatInt(p.ExpiresAt.UnixMilli(), 10), g.grace,
		g.global[0], g.global[1], dl[0], dl[1], p.ID, body, g.sampleFlag(), rh, g.logLen, laned,
		rkeys.HeldMarker(g.recipientKey(p.Kind, canon, p.Account))}
	res, sfx, err := g.reply(ctx, "dispatch", p.Kind, p.ID, rh, pl.dispatch.Run(ctx, g.rdb, keys, args...))
	if err != nil {
		return queue.Verdict{}, err
	}
	g.breakerReply(ctx, pl, sfx)
	outcome, reason, _ := strings.Cut(res, ":")
	var v queue.Verdict
	metric := outcome
	switch outcome {
	case "allow":
		v, metric = queue.Verdict{Allow: true}, "dispatched"
		var n string
		if reason, n, _ = strings.Cut(reason, ";"); n != "" {
			v.Ambiguous, _ = strconv.Atoi(n)
		}
	case "deferred":
		which, left, _ := strings.Cut(reason, ":")
		n, perr := strconv.ParseInt(left, 10, 64)
		if perr != nil || n < 1 {
			n = 1
		}
		after := time.Duration(n) * time.Millisecond
		if which == "relay" || which == "breaker" {
			// Every deferred email of the kind would otherwise come back
			// at the same instant, when the breaker probes.
			after += rand.N(after/10 + time.Millisecond)
		}
		v = queue.Verdict{Outcome: queue.Deferred, Reason: which, RetryAfter: after}
		reason = which
	case "duplicate", "expired", "held", "shed", "failed":
		if reason == "replay" {
			reason = "settled"
		}
		v = queue.Verdict{Outcome: queue.Outcome(outcome), Reason: reason}
	default:
		return queue.Verdict{}, &OpError{Op: "dispatch", Err: fmt.Errorf("unexpected script reply %q", res)}
	}
	g.record(ctx, "dispatch", p.Kind, p.ID, rh, metric, reason)
	return v, nil
}

// Settle records the result of an attempt that [Guard.Dispatch] allowed.
// Sent makes the claim "sent" until the email's expiry plus
// Config.ClaimGrace, so a redelivered task is a duplicate; Failed and
// Expired are terminal likewise; Deferred or "" (a temporary failure)
// releases the claim if this attempt still holds it, so a retry may send;
// with reason "ambiguous" (the relay may have accepted the message) the
// released claim keeps the count, which the next Dispatch reports in
// Verdict.Ambiguous.
// reason is a short token ("hard_bounce", "retries_exhausted"); anything
// else is counted as "other". Terminal states never change, so calling it
// again counts nothing twice.
//
// The result also tells the kind's relay breaker about the relay (see
// [IsRelayFailure]): a temporary failure whose reason is a relay failure
// counts towards tripping it; a send, or a reply from the relay (an SMTP
// code other than 421), is a relay success that closes a half-open relay
// breaker.
func (g *Guard) Settle(ctx context.Context, p *queue.Payload, attempt string, outcome queue.Outcome, reason string) error {
	start := time.Now()
	if !g.tracer.On() {
		err := g.settle(ctx, p, attempt, outcome, reason)
		g.metrics.roundTrip[opSettle].Observe(time.Since(start).Seconds())
		return err
	}
	return g.tracedSettle(ctx, p, attempt, outcome, reason, start)
}

// settle is the record of [Guard.Settle], neither timed nor traced.
func (g *Guard) settle(ctx context.Context, p *queue.Payload, attempt string, outcome queue.Outcome, reason string) error {
	var o string
	switch outcome {
	case queue.Sent:
		o = "sent"
	case queue.Failed:
		o = "failed"
	case queue.Expired:
		o = "expired"
	case queue.Deferred, "":
		o = "retry"
	default:
		return fmt.Errorf("guard: settle: outcome %q is not sent, failed, expired or deferred", outcome)
	}
	pl, err := g.plan("settle", p.Kind)
	if err != nil {
		return err
	}
	reason = token(reason)
	canon := Canonical(p.To, g.policy.RecipientRules)
	rh := g.dg.RcptHash(canon)
	keys := []string{rkeys.Claim(p.ID), g.dg.Trace(p.Kind, canon)}
	relay := relayResult(o, reason)
	meta := ""
	if o == "sent" {
		// What feedback on this email will need: its source and group
		// (trust) and its recipient log (a report suppresses it).
		meta = pl.sourceKeysOf(g.dg, p.Source).digest() + rkeys.Digest(g.recipientKey(p.Kind, canon, p.Account)) + p.Kind
	}
	args := []any{rkeys.AttemptValue(attempt), o, reason, strconv.FormatInt(p.ExpiresAt.UnixMilli(), 10), g.grace,
		g.sampleFlag(), rh, p.ID, g.logLen, relay, meta}
	res, sfx, err := g.reply(ctx, "settle", p.Kind, p.ID, rh, pl.settle.Run(ctx, g.rdb, keys, args...))
	if err != nil {
		return err
	}
	if relay != "" && res == "recorded" {
		// Only then did the script read the breaker.
		g.breakerReply(ctx, pl, sfx)
	}
	if res == "recorded" {
		g.record(ctx, "settle", p.Kind, p.ID, rh, o, reason)
	}
	return nil
}

// reply reads a decision script's reply and splits it into the decision
// and the breaker's part. A Redis error is wrapped (fail closed), logged
// with the email's id and recipient hash, and returned.
func (g *Guard) reply(ctx context.Context, op, kind, id, rh string, cmd *redis.Cmd) (res, breaker string, err error) {
	s, err := cmd.Text()
	if err != nil {
		err = opError(ctx, op, err)
		g.log.LogAttrs(ctx, slog.LevelWarn, "guard "+op+" failed", slog.String("kind", kind),
			slog.String("task_id", id), slog.String("rcpt_hash", rh), slog.Any("err", err))
		return "", "", err
	}
	res, breaker, _ = strings.Cut(s, "|")
	return res, breaker, nil
}

// record counts a decision in the process's metrics and logs it.
func (g *Guard) record(ctx context.Context, stage, kind, id, rh, outcome, reason string) {
	g.metrics.decisions.WithLabelValues(kind, outcome, reason).Inc()
	g.log.LogAttrs(ctx, slog.LevelDebug, "guard decision", slog.String("stage", stage), slog.String("kind", kind),
		slog.String("outcome", outcome), slog.String("reason", reason), slog.String("task_id", id), slog.String("rcpt_hash", rh))
}

// HashRecipient returns the name of a recipient in logs, the decision log
// and listings: 16 hex digits of the keyed digest of its canonical form
// (see Config.HashKey), the same for every variant of the address and in
// every process that shares the key. [queue.Client] and the worker log
// recipients by it.
func (g *Guard) HashRecipient(addr string) string {
	return g.dg.RcptHash(Canonical(addr, g.policy.RecipientRules))
}

// recipientKey returns the key of the recipient log of kind that caps and
// dedup use: the account's when the email names one, else the canonical
// recipient's.
func (g *Guard) recipientKey(kind, canon, account string) string {
	if account != "" {
		return g.dg.Account(kind, account)
	}
	return g.dg.Recipient(kind, canon)
}

// traceKey returns the key of the recipient's trace of kind: derived
// from its recipient log key, unless caps key on an account.
func (g *Guard) traceKey(kind, canon, account, rkey string) string {
	if account != "" {
		return g.dg.Trace(kind, canon)
	}
	return rkeys.Trace(rkey)
}

// domainOf returns the canonical domain of a recipient, the key of its
// per-domain rate: provider families count as one domain (googlemail.com
// as gmail.com, pm.me as proton.me), and Fastmail's subdomain addresses as
// fastmail.com, so that an attacker cannot spread one provider over many
// rate keys.
func (g *Guard) domainOf(to string) string {
	c := Canonical(to, g.policy.RecipientRules)
	return c[strings.LastIndexByte(c, '@')+1:]
}

// token returns s when it is a short lower-case token, "other" otherwise,
// so reasons cannot grow the stats hash or metric labels without bound.
func token(s string) string {
	if s == "" {
		return ""
	}
	if len(s) > 32 || strings.ContainsFunc(s, func(r rune) bool { return !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }) {
		return "other"
	}
	return s
}

// kindNames returns the names of the kinds the guard knows, sorted.
func (g *Guard) kindNames() []string {
	names := make([]string, 0, len(g.plans))
	for k := range g.plans {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}
