package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/pii"
	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/queue"
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
)

var reasonCodes = map[string]string{"s": ReasonSurge, "f": ReasonRefusals, "r": ReasonRelay, "m": ReasonManual}

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
	// Threshold is the request rate above which the surge trip fires
	// (max(surge_factor × baseline, floor)); zero when the surge trip is
	// off.
	Threshold float64
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
	Kind      string      `json:"kind"`
	State     string      `json:"state"`
	Mode      BreakerMode `json:"mode"`
	Reason    string      `json:"reason"`
	Since     string      `json:"since"`
	Rate      float64     `json:"rate"`
	Baseline  float64     `json:"baseline"`
	Threshold float64     `json:"threshold"`
	Held      int64       `json:"held"`
	Releasing int64       `json:"releasing"`
	OpenedAt  string      `json:"opened_at"`
	Until     string      `json:"until"`
	Level     int         `json:"level"`
}

// MarshalJSON writes the admin API form: times in RFC 3339 with
// nanoseconds, or "" when zero.
func (b BreakerState) MarshalJSON() ([]byte, error) {
	return json.Marshal(breakerJSON{b.Kind, b.State, b.Mode, b.Reason, formatTime(b.Since), b.Rate, b.Baseline,
		b.Threshold, b.Held, b.Releasing, formatTime(b.OpenedAt), formatTime(b.Until), b.Level})
}

// UnmarshalJSON reads the admin API form.
func (b *BreakerState) UnmarshalJSON(data []byte) error {
	var j breakerJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	*b = BreakerState{Kind: j.Kind, State: j.State, Mode: j.Mode, Reason: j.Reason, Rate: j.Rate, Baseline: j.Baseline,
		Threshold: j.Threshold, Held: j.Held, Releasing: j.Releasing, Level: j.Level}
	var err error
	for _, f := range []struct {
		s   string
		out *time.Time
	}{{j.Since, &b.Since}, {j.OpenedAt, &b.OpenedAt}, {j.Until, &b.Until}} {
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
	probe := int64(1)
	if b.Probe.N > 0 {
		probe = max(b.Probe.Per.Microseconds()/int64(b.Probe.N), 1)
	}
	return rkeys.BreakerConfig{
		WindowMS:      max(w.Milliseconds(), 1),
		FloorCount:    perWindow(b.Floor),
		SurgeFactor:   b.SurgeFactor,
		Alpha:         math.Min(float64(w)/float64(max(b.Baseline, w)), 1),
		RefusalRatio:  b.RefusalRatio,
		RefusalCount:  perWindow(b.RefusalMin),
		RelayFailures: b.RelayFailures,
		RelayRatio:    b.RelayRatio,
		CooldownMS:    max(b.Cooldown.Milliseconds(), 1),
		MaxCooldownMS: max(b.EffectiveMaxCooldown().Milliseconds(), b.Cooldown.Milliseconds(), 1),
		ProbeUS:       probe,
		Mode:          string(b.Open),
		HoldMax:       b.HoldMax,
		HoldTTLMS:     max(kp.TTL.Milliseconds(), 1),
	}
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

// control runs a kind's control script ("state", "trip" or "reset") and
// reports the transitions it made, with note attached.
func (g *Guard) control(ctx context.Context, op, kind, code, note string) (BreakerState, error) {
	pl, err := g.plan(op, kind)
	if err != nil {
		return BreakerState{}, err
	}
	keys := []string{pl.breakerKey, pl.infoKey, pl.countKey, pl.refusedKey, pl.heldKey, pl.releasing, pl.paceKey, pl.sendPaceKey}
	res, err := pl.control.Run(ctx, g.rdb, keys, op, code).Slice()
	if err != nil {
		return BreakerState{}, opError(ctx, "breaker "+op, err)
	}
	if len(res) < 11 {
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
	b := BreakerState{Kind: kind, State: stateCodes[str(0)], Mode: pl.mode, Reason: reasonCodes[str(1)], Since: ms(2),
		OpenedAt: ms(3), Rate: flt(4), Baseline: flt(5), Held: num(6), Until: ms(7), Level: int(num(9)), Releasing: num(10)}
	if kp := g.policy.KindPolicies[kind]; kp.Breaker.SurgeFactor > 0 {
		b.Threshold = float64(num(8)) / kp.Breaker.Window.Seconds()
	}
	code0 := str(0) + str(1)
	pl.state.Set(stateValue(code0))
	for _, r := range res[11:] {
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

// heldBatch is how many held emails a release or purge handles per round
// trip.
const heldBatch = 256

// Release puts up to limit held emails of kind (limit <= 0: all) back in
// the queue and returns how many it queued. Each goes through the guard
// again, so caps still apply:
//
//   - an email held at admission consumed no quota, so it is admitted
//     again (suppression, the dedup window and the per-recipient windows;
//     not the per-source windows, whose source is not kept, nor the
//     breaker): a refusal is counted as that outcome instead of held, an
//     admission consumes the recipient's quota and is counted admitted;
//   - an email held at dispatch was admitted before: it is queued again.
//
// Either way the queued email then passes the dispatch guard (breaker,
// global and per-domain rates, idempotency, expiry): release after
// [Guard.Reset], or an open breaker holds it again. A released email is not
// a new request: Stats moves it from held to in flight (or to its refusal),
// so requested = outcomes + in flight still holds. A release interrupted
// between taking emails out of the held area and queueing them is finished
// by the next Release; they count as in flight meanwhile.
func (g *Guard) Release(ctx context.Context, kind string, limit int) (int, error) {
	pl, err := g.plan("release", kind)
	if err != nil {
		return 0, err
	}
	released, err := g.finishRelease(ctx, pl)
	if err != nil {
		return released, err
	}
	refused := map[string]int{}
	n, err := g.eachHeld(ctx, pl, "release", limit, func(id string, body []byte, res string) error {
		if res != "queued:" {
			refused[res]++
			return nil
		}
		if err := g.enqueueReleased(ctx, pl, id, body); err != nil {
			return err
		}
		released++
		return nil
	})
	g.log.LogAttrs(ctx, slog.LevelInfo, "breaker release", slog.String("kind", kind), slog.Int("released", released),
		slog.Int("taken", n), slog.Any("refused", refused))
	return released, err
}

// Purge drops every held email of kind and returns how many; they are
// counted shed (reason purged) instead of held.
func (g *Guard) Purge(ctx context.Context, kind string) (int, error) {
	pl, err := g.plan("purge", kind)
	if err != nil {
		return 0, err
	}
	n, err := g.eachHeld(ctx, pl, "purge", 0, nil)
	g.log.LogAttrs(ctx, slog.LevelInfo, "breaker purge", slog.String("kind", kind), slog.Int("purged", n))
	return n, err
}

// eachHeld runs the release script with op on up to limit held emails of
// pl (limit <= 0: all), a batch per round trip, and calls f with each one
// the script took and its reply. It returns how many were taken.
func (g *Guard) eachHeld(ctx context.Context, pl *plan, op string, limit int, f func(id string, body []byte, res string) error) (int, error) {
	if err := pl.release.Load(ctx, g.rdb).Err(); err != nil {
		return 0, opError(ctx, op, err)
	}
	taken := 0
	var cursor uint64
	for {
		kvs, next, err := g.rdb.HScan(ctx, pl.heldKey, cursor, "", heldBatch).Result()
		if err != nil {
			return taken, opError(ctx, op, err)
		}
		type item struct {
			id   string
			body []byte
			cmd  *redis.Cmd
		}
		items := make([]item, 0, len(kvs)/2)
		p := g.rdb.Pipeline()
		for i := 0; i+1 < len(kvs) && (limit <= 0 || taken+len(items) < limit); i += 2 {
			id, v := kvs[i], kvs[i+1]
			body := []byte(v)
			if v != "" && (v[0] == 'a' || v[0] == 'd') {
				body = body[1:]
			}
			itemOp, rkey, ukey, rh := op, pl.heldKey, pl.heldKey, ""
			if pp, err := queue.DecodePayload(body); err == nil {
				canon := Canonical(pp.To, g.policy.RecipientRules)
				rkey, ukey, rh = rkeys.Recipient(pl.name, canon), rkeys.Suppression(canon), pii.Hash(pp.To)
			} else if op == "release" {
				itemOp = "invalid"
			}
			keys := []string{rkey, ukey, pl.heldKey, pl.releasing, rkeys.Stats, rkeys.Decisions, pl.admittedKey, rkeys.Kinds, rkeys.Claim(id)}
			items = append(items, item{id, body, pl.release.EvalSha(ctx, p, keys, rkeys.EmailTag(id), id, itemOp, rh)})
		}
		if len(items) > 0 {
			if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return taken, opError(ctx, op, err)
			}
		}
		for _, it := range items {
			res, err := it.cmd.Text()
			if err != nil {
				return taken, opError(ctx, op, err)
			}
			if res == "gone:" {
				continue
			}
			taken++
			if f != nil {
				if err := f(it.id, it.body, res); err != nil {
					return taken, err
				}
			}
		}
		cursor = next
		if cursor == 0 || (limit > 0 && taken >= limit) {
			return taken, nil
		}
	}
}

// enqueueReleased queues a released email as an asynq task, as
// queue.Client would, and takes it out of the releasing hash. A task id
// conflict means an earlier, interrupted release already queued it.
func (g *Guard) enqueueReleased(ctx context.Context, pl *plan, id string, body []byte) error {
	p, err := queue.DecodePayload(body)
	if err != nil {
		// The script refuses undecodable payloads; one here was changed
		// under us. Drop it from the releasing hash; it stays in flight.
		g.log.Warn("guard: release: undecodable payload", "kind", pl.name, "task_id", id, "err", err)
		return g.rdb.HDel(ctx, pl.releasing, id).Err()
	}
	_, err = g.queue.EnqueueContext(ctx, asynq.NewTask(queue.TypeEmail, body), queue.TaskOptions(p, pl.spec)...)
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("guard: release %s: enqueue: %w: %w", pl.name, ErrUnavailable, errors.New(err.Error()))
	}
	if err := g.rdb.HDel(ctx, pl.releasing, id).Err(); err != nil {
		return opError(ctx, "release", err)
	}
	return nil
}

// finishRelease queues the emails an interrupted release took out of the
// held area, and returns how many.
func (g *Guard) finishRelease(ctx context.Context, pl *plan) (int, error) {
	n := 0
	var cursor uint64
	for {
		kvs, next, err := g.rdb.HScan(ctx, pl.releasing, cursor, "", heldBatch).Result()
		if err != nil {
			return n, opError(ctx, "release", err)
		}
		for i := 0; i+1 < len(kvs); i += 2 {
			if err := g.enqueueReleased(ctx, pl, kvs[i], []byte(kvs[i+1])); err != nil {
				return n, err
			}
			n++
		}
		if cursor = next; cursor == 0 {
			return n, nil
		}
	}
}
