package guard

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
)

// Breaker states: the values of [BreakerState].State and of a
// [BreakerTransition]'s From and To.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half_open"
)

// Why a breaker opened: the values of [BreakerState].Reason and of a
// [BreakerTransition]'s Reason.
const (
	// ReasonSurge: the request rate exceeded the surge threshold.
	ReasonSurge = "surge"
	// ReasonRefusals: the share of requests refused by caps spiked.
	ReasonRefusals = "refusals"
	// ReasonRelay: the relay failed; dispatch defers instead of sending.
	ReasonRelay = "relay"
	// ReasonManual: an operator tripped or reset it.
	ReasonManual = "manual"
	// ReasonCeiling: the eligible rate reached the kind's rate ceiling.
	ReasonCeiling = "ceiling"
	// ReasonBudget: the new recipients of the budget period reached the
	// kind's budget.
	ReasonBudget = "budget"
	// ReasonRedemption: the share of sent emails whose link is used
	// collapsed against its learned value.
	ReasonRedemption = "redemption"
	// ReasonReports: recipients reported emails they did not ask for.
	ReasonReports = "reports"
)

var reasonCodes = map[string]string{"s": ReasonSurge, "f": ReasonRefusals, "r": ReasonRelay, "m": ReasonManual,
	"c": ReasonCeiling, "b": ReasonBudget, "x": ReasonRedemption, "p": ReasonReports}

var stateCodes = map[string]string{"c": BreakerClosed, "o": BreakerOpen, "h": BreakerHalfOpen}

// BreakerState is one kind's surge breaker as the admin API shows it.
type BreakerState struct {
	// Kind is the kind the breaker guards.
	Kind string
	// State is [BreakerClosed], [BreakerOpen] or [BreakerHalfOpen].
	State string
	// Mode is what the breaker does with new emails while open.
	Mode BreakerMode
	// Reason is why it is open or half-open ([ReasonSurge], ...); empty
	// when closed.
	Reason string
	// Since is when it entered State (Redis time); zero if it never moved.
	Since time.Time
	// Rate is the kind's request rate over the breaker's window, and
	// Baseline its learned baseline, in requests per second.
	Rate, Baseline float64
	// Threshold is the eligible rate above which the surge trip fires
	// (max(surge_factor × baseline, floor)); zero when the surge trip is
	// off, as while the kind is warming up.
	Threshold float64
	// Ceiling is the eligible rate at which the ceiling trip fires, in
	// requests per second; zero when off.
	Ceiling float64
	// Budget is the budget of new recipients per BudgetPeriod, and
	// BudgetUsed how many of it the sliding period used; zero when off.
	Budget, BudgetUsed int64
	BudgetPeriod       time.Duration
	// Redemption is the learned share of sent emails whose link is used;
	// -1 until it is established (the application does not confirm, or
	// not for long enough).
	Redemption float64
	// Warming reports whether the kind is still warming up (learning;
	// the surge trip does not fire), and Born when it started.
	Warming bool
	Born    time.Time
	// LaneRate is the rate each lane of the open breaker lets through, in
	// emails per second (zero when closed).
	LaneRate float64
	// Held is the number of emails parked in the held area.
	Held int64
	// Releasing is the number of released emails not yet handed to the
	// queue (a release was interrupted; the next one finishes it).
	Releasing int64
	// OpenedAt is when it last opened; zero if it never did.
	OpenedAt time.Time
	// Until is when an open breaker turns half-open or a half-open one
	// closes; zero when that does not happen by time (closed, tripped by
	// hand, or a half-open relay breaker waiting for a probe's result).
	Until time.Time
	// Level is how many times the cooldown was doubled.
	Level int
}

type breakerJSON struct {
	Kind         string      `json:"kind"`
	State        string      `json:"state"`
	Mode         BreakerMode `json:"mode"`
	Reason       string      `json:"reason"`
	Since        string      `json:"since"`
	Rate         float64     `json:"rate"`
	Baseline     float64     `json:"baseline"`
	Threshold    float64     `json:"threshold"`
	Ceiling      float64     `json:"ceiling"`
	Budget       int64       `json:"budget"`
	BudgetUsed   int64       `json:"budget_used"`
	BudgetPeriod string      `json:"budget_period"`
	Redemption   float64     `json:"redemption"`
	Warming      bool        `json:"warming"`
	Born         string      `json:"born"`
	LaneRate     float64     `json:"lane_rate"`
	Held         int64       `json:"held"`
	Releasing    int64       `json:"releasing"`
	OpenedAt     string      `json:"opened_at"`
	Until        string      `json:"until"`
	Level        int         `json:"level"`
}

// MarshalJSON writes the admin API form: times in RFC 3339 with
// nanoseconds, or "" when zero; the budget period as a duration ("24h").
func (b BreakerState) MarshalJSON() ([]byte, error) {
	period := ""
	if b.BudgetPeriod > 0 {
		period = formatDuration(b.BudgetPeriod)
	}
	return json.Marshal(breakerJSON{b.Kind, b.State, b.Mode, b.Reason, formatTime(b.Since), b.Rate, b.Baseline,
		b.Threshold, b.Ceiling, b.Budget, b.BudgetUsed, period, b.Redemption, b.Warming, formatTime(b.Born), b.LaneRate,
		b.Held, b.Releasing, formatTime(b.OpenedAt), formatTime(b.Until), b.Level})
}

// UnmarshalJSON reads the admin API form.
func (b *BreakerState) UnmarshalJSON(data []byte) error {
	var j breakerJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	*b = BreakerState{Kind: j.Kind, State: j.State, Mode: j.Mode, Reason: j.Reason, Rate: j.Rate, Baseline: j.Baseline,
		Threshold: j.Threshold, Ceiling: j.Ceiling, Budget: j.Budget, BudgetUsed: j.BudgetUsed, Redemption: j.Redemption,
		Warming: j.Warming, LaneRate: j.LaneRate, Held: j.Held, Releasing: j.Releasing, Level: j.Level}
	var err error
	if j.BudgetPeriod != "" {
		if b.BudgetPeriod, err = parseDuration(j.BudgetPeriod); err != nil {
			return fmt.Errorf("guard: breaker: %w", err)
		}
	}
	for _, f := range []struct {
		s   string
		out *time.Time
	}{{j.Since, &b.Since}, {j.OpenedAt, &b.OpenedAt}, {j.Until, &b.Until}, {j.Born, &b.Born}} {
		if f.s == "" {
			continue
		}
		if *f.out, err = time.Parse(time.RFC3339Nano, f.s); err != nil {
			return fmt.Errorf("guard: breaker: %w", err)
		}
	}
	return nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// BreakerTransition is one move of a kind's breaker. Transitions happen
// inside the decision scripts; the process whose decision (or admin call)
// made one reports it: a log line, floodgate_breaker_transitions_total,
// Config.OnTransition and the webhook.
type BreakerTransition struct {
	// Kind is the breaker's kind.
	Kind string `json:"kind"`
	// From and To are [BreakerClosed], [BreakerOpen] or [BreakerHalfOpen]
	// (open to open when the reason changes).
	From string `json:"from"`
	To   string `json:"to"`
	// Reason is why the breaker opened ([ReasonSurge], ...); a reset is
	// [ReasonManual].
	Reason string `json:"reason"`
	// Mode is what the breaker does with new emails while open.
	Mode BreakerMode `json:"mode"`
	// Rate and Baseline are the request rate and the learned baseline at
	// the transition, in requests per second.
	Rate     float64 `json:"rate"`
	Baseline float64 `json:"baseline"`
	// At is when it happened (Redis time).
	At time.Time `json:"at"`
	// Until is when the new state ends by time: the end of the cooldown
	// for open, of probing for half-open; zero when it does not.
	Until time.Time `json:"until,omitzero"`
	// Level is how many times the cooldown was doubled.
	Level int `json:"level"`
	// Note is an operator's note given with a manual trip.
	Note string `json:"note,omitempty"`
}

// breakerConfig compiles a kind's breaker policy for its scripts.
func breakerConfig(kp KindPolicy) rkeys.BreakerConfig {
	b := kp.Breaker
	w := b.Window
	perWindow := func(r Rate) float64 {
		if r.Per <= 0 {
			return 0
		}
		return float64(r.N) * float64(w) / float64(r.Per)
	}
	interval := func(r Rate) int64 {
		if r.N <= 0 {
			return 0
		}
		return max(r.Per.Microseconds()/int64(r.N), 1)
	}
	probe := max(interval(b.Probe), 1)
	c := rkeys.BreakerConfig{
		WindowMS:       max(w.Milliseconds(), 1),
		FloorCount:     perWindow(b.Floor),
		SurgeFactor:    b.SurgeFactor,
		Alpha:          math.Min(float64(w)/float64(max(b.Learn.Horizon, w)), 1),
		WarmupMS:       b.Learn.Warmup.Milliseconds(),
		DayMS:          max(b.Learn.Day.Milliseconds(), 1),
		RisePerWindow:  b.Learn.MaxRise,
		RisePerDay:     b.Learn.MaxDailyRise,
		RefusalRatio:   b.RefusalRatio,
		RefusalCount:   perWindow(b.RefusalMin),
		RefusalSources: b.RefusalSources,
		RelayFailures:  b.RelayFailures,
		RelayRatio:     b.RelayRatio,
		CooldownMS:     max(b.Cooldown.Milliseconds(), 1),
		MaxCooldownMS:  max(b.EffectiveMaxCooldown().Milliseconds(), b.Cooldown.Milliseconds(), 1),
		ProbeUS:        probe,
		Mode:           string(b.Open),
		HoldMax:        b.HoldMax,
		HoldTTLMS:      max(kp.TTL.Milliseconds(), 1),
		LaneUS:         interval(b.Lanes.Rate),
		LaneMaxUS:      max(interval(b.Lanes.Min), 1),
		LaneFactor:     b.Lanes.Factor,
		LaneTrusted:    b.Lanes.Trusted,
		LaneRerequest:  b.Lanes.Rerequest,
		LaneRedeemed:   b.Lanes.Redeemed,
		RerequestS:     int64(b.Lanes.RerequestAfter / time.Second),
		LaneBurst:      b.Lanes.Burst,
		CloseFactor:    b.CloseFactor,
	}
	ce := b.Ceilings
	switch {
	case ce.RateOff:
	case ce.Rate.N > 0:
		c.CeilingCount = math.Max(perWindow(ce.Rate), 1)
	default:
		minRate := ce.RateMin
		if minRate == (Rate{}) {
			minRate = Rate{b.Floor.N * 10, b.Floor.Per}
		}
		c.CeilingFactor, c.CeilingMinCount = ce.RateFactor, math.Max(perWindow(minRate), 1)
		if c.CeilingFactor == 0 {
			c.CeilingCount = c.CeilingMinCount
		}
	}
	c.BudgetMS = max(ce.NewRecipientsMin.Per.Milliseconds(), c.WindowMS)
	switch {
	case ce.NewRecipientsOff:
	case ce.NewRecipients.N > 0:
		c.BudgetMS, c.BudgetCount = max(ce.NewRecipients.Per.Milliseconds(), c.WindowMS), float64(ce.NewRecipients.N)
	default:
		c.BudgetFactor, c.BudgetMin = ce.NewRecipientsFactor, float64(ce.NewRecipientsMin.N)
		if c.BudgetFactor == 0 {
			c.BudgetCount = c.BudgetMin
		}
	}
	if r := b.Redemption; !r.Off {
		c.RedeemBucketMS, c.RedeemLagMS = max(r.Bucket.Milliseconds(), 1), r.Lag.Milliseconds()
		c.RedeemMin, c.RedeemSources, c.RedeemBuckets = r.MinSends, r.MinSources, r.Buckets
		c.RedeemCollapse, c.RedeemNeed = r.Collapse, r.MinShare
		c.RedeemAlpha = math.Min(float64(r.Bucket)/float64(max(b.Learn.Horizon, r.Bucket)), 1)
		// The learned share keeps at least MaxDailyFall a day: per bucket,
		// its bucket-th root.
		c.RedeemFall = math.Pow(r.MaxDailyFall, float64(r.Bucket)/float64(max(b.Learn.Day, r.Bucket)))
		c.ReportMin, c.ReportSources, c.ReportRatio = b.Reports.Min, b.Reports.Sources, b.Reports.Ratio
	}
	if bo := b.Bounces; bo.MinSends > 0 {
		c.BounceMinSends, c.BounceRatio, c.ComplaintRatio = bo.MinSends, bo.Ratio, bo.ComplaintRatio
	}
	return c
}

// IsRelayFailure reports whether a temporary send failure with reason (the
// worker's classification: "dial", "tls", "auth", "timeout", "smtp_421",
// "smtp_451", ...) means that the relay itself failed rather than one
// message: the connection could not be made or set up, it timed out, the
// relay answered 421 (service not available), or it refused the session
// with a 5xx before any message.
func IsRelayFailure(reason string) bool {
	switch reason {
	case "dial", "tls", "auth", "timeout", "smtp_421":
		return true
	}
	return strings.HasPrefix(reason, "smtp_5")
}

// relayResult classifies a settled attempt for the relay breaker: "f" a
// relay failure, "s" the relay answered (a send, a per-message 4xx, a 5xx
// to the message), "" it says nothing about the relay (expiry, retries
// exhausted, an ambiguous loss, local errors).
func relayResult(outcome, reason string) string {
	switch outcome {
	case "sent":
		return "s"
	case "retry":
		if IsRelayFailure(reason) {
			return "f"
		}
		if strings.HasPrefix(reason, "smtp_4") {
			return "s"
		}
	case "failed":
		// A permanent failure is a 5xx to MAIL, RCPT or DATA: the relay
		// answered.
		if strings.HasPrefix(reason, "smtp_5") {
			return "s"
		}
	}
	return ""
}

// breakerReply reads the breaker suffix of a script's reply (see
// rkeys.BreakerConfig): it sets the kind's state gauge and reports the
// transitions the script made.
func (g *Guard) breakerReply(ctx context.Context, pl *plan, sfx string) {
	if sfx == "" {
		pl.state.Set(stateClosed)
		return
	}
	code, rest, _ := strings.Cut(sfx, "|")
	pl.state.Set(stateValue(code))
	for rest != "" {
		var rec string
		rec, rest, _ = strings.Cut(rest, "|")
		if t, ok := g.parseTransition(pl, rec); ok {
			g.transition(ctx, t)
		}
	}
}

func stateValue(code string) float64 {
	switch {
	case strings.HasPrefix(code, "o"):
		return stateOpen
	case strings.HasPrefix(code, "h"):
		return stateHalfOpen
	}
	return stateClosed
}

// parseTransition parses "from,to,reason,rate,baseline,at_ms,until_ms,level".
func (g *Guard) parseTransition(pl *plan, rec string) (BreakerTransition, bool) {
	f := strings.Split(rec, ",")
	if len(f) != 8 {
		g.log.Warn("guard: malformed breaker transition", "kind", pl.name, "record", rec)
		return BreakerTransition{}, false
	}
	t := BreakerTransition{Kind: pl.name, From: f[0], To: f[1], Reason: f[2], Mode: pl.mode}
	t.Rate, _ = strconv.ParseFloat(f[3], 64)
	t.Baseline, _ = strconv.ParseFloat(f[4], 64)
	at, _ := strconv.ParseInt(f[5], 10, 64)
	t.At = time.UnixMilli(at).UTC()
	if until, _ := strconv.ParseInt(f[6], 10, 64); until > 0 {
		t.Until = time.UnixMilli(until).UTC()
	}
	t.Level, _ = strconv.Atoi(f[7])
	return t, true
}

// transition reports one transition: log line, metric, callback, webhook.
func (g *Guard) transition(ctx context.Context, t BreakerTransition) {
	g.metrics.transitions.WithLabelValues(t.Kind, t.From, t.To, t.Reason).Inc()
	level := slog.LevelInfo
	if t.To == BreakerOpen {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{slog.String("kind", t.Kind), slog.String("from", t.From), slog.String("to", t.To),
		slog.String("reason", t.Reason), slog.String("mode", string(t.Mode)), slog.Float64("rate", t.Rate),
		slog.Float64("baseline", t.Baseline), slog.Int("level", t.Level)}
	if !t.Until.IsZero() {
		attrs = append(attrs, slog.Time("until", t.Until))
	}
	if t.Note != "" {
		attrs = append(attrs, slog.String("note", t.Note))
	}
	g.log.LogAttrs(ctx, level, "breaker transition", attrs...)
	if g.onTransition != nil {
		g.onTransition(t)
	}
	if g.notify != nil {
		g.notify.send(t)
	}
}

// controlFields is the number of fields of the control script's reply
// before its transitions; offCount is what the scripts write for a ceiling
// that is off.
const (
	controlFields = 18
	offCount      = 1e15
)

// Lanes of an open breaker: the values of an admitted [queue.Verdict]'s
// Lane and of the release's counts.
const (
	// LaneTrusted: the request carried a trust signal the application
	// verified ([queue.Email].Trust).
	LaneTrusted = "trusted"
	// LaneRerequest: the recipient had a held email and asked again.
	LaneRerequest = "rerequest"
	// LaneRedeemed: the source, or its group, had an email redeemed
	// before the breaker opened.
	LaneRedeemed = "redeemed"
	// laneRelease marks an email released from hold, so that dispatch does
	// not hold it again.
	laneRelease = "release"
)

// control runs a kind's control script ("state", "trip" or "reset") and
// reports the transitions it made, with note attached.
func (g *Guard) control(ctx context.Context, op, kind, code, note string) (BreakerState, error) {
	pl, err := g.plan(op, kind)
	if err != nil {
		return BreakerState{}, err
	}
	keys := []string{pl.breakerKey}
	res, err := pl.control.Run(ctx, g.rdb, keys, op, code).Slice()
	if err != nil {
		return BreakerState{}, opError(ctx, "breaker "+op, err)
	}
	if len(res) < controlFields {
		return BreakerState{}, &OpError{Op: "breaker " + op, Err: fmt.Errorf("unexpected script reply %v", res)}
	}
	str := func(i int) string { return fmt.Sprint(res[i]) }
	num := func(i int) int64 { n, _ := strconv.ParseInt(str(i), 10, 64); return n }
	flt := func(i int) float64 { f, _ := strconv.ParseFloat(str(i), 64); return f }
	ms := func(i int) time.Time {
		if n := num(i); n > 0 {
			return time.UnixMilli(n).UTC()
		}
		return time.Time{}
	}
	kp := g.policy.KindPolicies[kind]
	w := kp.Breaker.Window.Seconds()
	b := BreakerState{Kind: kind, State: stateCodes[str(0)], Mode: pl.mode, Reason: reasonCodes[str(1)], Since: ms(2),
		OpenedAt: ms(3), Rate: flt(4), Baseline: flt(5), Held: num(6), Until: ms(7), Level: int(num(9)), Releasing: num(10),
		Redemption: flt(14), Warming: str(15) == "1", Born: ms(17)}
	if t := num(8); t > 0 {
		b.Threshold = float64(t) / w
	}
	if c := num(11); c > 0 && c < offCount {
		b.Ceiling = float64(c) / w
	}
	if n := num(12); n > 0 && n < offCount {
		b.Budget, b.BudgetUsed = n, num(13)
		b.BudgetPeriod = max(kp.Breaker.Ceilings.NewRecipientsMin.Per, kp.Breaker.Window)
		if kp.Breaker.Ceilings.NewRecipients.N > 0 {
			b.BudgetPeriod = kp.Breaker.Ceilings.NewRecipients.Per
		}
	}
	if li := num(16); b.State != BreakerClosed && li > 0 {
		b.LaneRate = 1e6 / float64(li)
	}
	code0 := str(0) + str(1)
	pl.state.Set(stateValue(code0))
	for _, r := range res[controlFields:] {
		if t, ok := g.parseTransition(pl, fmt.Sprint(r)); ok {
			t.Note = note
			g.transition(ctx, t)
		}
	}
	return b, nil
}

// Breakers returns the breaker of every kind, sorted by kind. Reading a
// breaker applies the transitions due by time (a cooldown that ended), so a
// quiet kind shows its true state; it is one script per kind.
func (g *Guard) Breakers(ctx context.Context) ([]BreakerState, error) {
	names := g.kindNames()
	out := make([]BreakerState, 0, len(names))
	for _, k := range names {
		b, err := g.control(ctx, "state", k, "", "")
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// Breaker returns the breaker of one kind; see [Guard.Breakers].
func (g *Guard) Breaker(ctx context.Context, kind string) (BreakerState, error) {
	return g.control(ctx, "state", kind, "", "")
}

// Trip opens a kind's breaker by hand. It stays open, in the kind's mode,
// until [Guard.Reset]: a manual trip does not turn half-open by time.
// reason is [ReasonManual] (or ""), or [ReasonSurge], [ReasonRefusals] or
// [ReasonRelay] to open it as if for that reason (relay: dispatch defers
// the kind's emails); anything else is kept as a note on the transition
// and the reason is manual. Tripping an open breaker again changes only
// its reason and makes it manual.
func (g *Guard) Trip(ctx context.Context, kind, reason string) (BreakerState, error) {
	code, note := "m", ""
	switch reason {
	case "", ReasonManual:
	case ReasonSurge:
		code = "s"
	case ReasonRefusals:
		code = "f"
	case ReasonRelay:
		code = "r"
	default:
		note = cleanNote(reason)
	}
	return g.control(ctx, "trip", kind, code, note)
}

// cleanNote keeps an operator's note printable and short.
func cleanNote(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "")
	}
	return s
}

// Reset closes a kind's breaker, whatever opened it, and clears its window
// counts, relay counters and cooldown doublings, so that it trips again
// only on fresh evidence. Held emails stay held until [Guard.Release] or
// [Guard.Purge].
func (g *Guard) Reset(ctx context.Context, kind string) (BreakerState, error) {
	return g.control(ctx, "reset", kind, "", "")
}
