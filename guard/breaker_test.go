package guard

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/queue"
)

// transitions collects the breaker transitions a guard reports.
type transitions struct {
	mu  sync.Mutex
	all []BreakerTransition
	ch  chan BreakerTransition
}

func newTransitions() *transitions { return &transitions{ch: make(chan BreakerTransition, 1000)} }

func (tr *transitions) add(t BreakerTransition) {
	tr.mu.Lock()
	tr.all = append(tr.all, t)
	tr.mu.Unlock()
	select {
	case tr.ch <- t:
	default:
	}
}

func (tr *transitions) list() []BreakerTransition {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]BreakerTransition(nil), tr.all...)
}

// wait returns the next transition to state to, failing the test after a
// generous bound (a hang, not a timing measurement).
func (tr *transitions) wait(t testing.TB, to string) BreakerTransition {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case x := <-tr.ch:
			if x.To == to {
				return x
			}
		case <-timeout:
			t.Fatalf("no transition to %s; saw %+v", to, tr.list())
		}
	}
}

// breakerGuard returns a guard with the policy doc whose transitions are
// collected.
func breakerGuard(t testing.TB, doc string, cfg Config) (*Guard, *redis.Client, *transitions) {
	t.Helper()
	tr := newTransitions()
	cfg.OnTransition = tr.add
	g, rc, _ := newTestGuard(t, doc, cfg)
	return g, rc, tr
}

func realPayload(kind, to string) *queue.Payload {
	now := time.Now().UTC()
	return &queue.Payload{V: 1, ID: newID(), Kind: kind, To: to, EnqueuedAt: now, ExpiresAt: now.Add(time.Hour),
		Data: map[string]string{"reset_url": "https://app.example/r", "verify_url": "https://app.example/v"}}
}

// realAdm returns an admission whose payload decodes, as queue.Client makes.
func realAdm(t testing.TB, kind, to, source string) *queue.Admission {
	t.Helper()
	p := realPayload(kind, to)
	body, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &queue.Admission{ID: p.ID, Kind: kind, To: to, Source: source, Payload: body}
}

func breakerOf(t testing.TB, g *Guard, kind string) BreakerState {
	t.Helper()
	b, err := g.Breaker(context.Background(), kind)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sleepUntil waits for a Redis-time deadline reported by the breaker (its
// cooldown's end): the event is the passing of that time.
func sleepUntil(t time.Time) { time.Sleep(time.Until(t) + 5*time.Millisecond) }

// TestBreakerSurgeTripsWhileRamping drives a linear ramp (request i at
// sqrt(i/1000) s: 2000 req/s after one second, 3000 requests in 1.7 s)
// and checks that the breaker opens on the first requests above the
// floor, long before the ramp's peak.
func TestBreakerSurgeTripsWhileRamping(t *testing.T) {
	g, _, tr := breakerGuard(t, `
kinds:
  password_reset:
    dedup_window: 0
    per_recipient: []
    per_source: []
    breaker: { learn: { warmup: 0 }, window: 1s, floor: 50/1s, surge_factor: 5, cooldown: 1h, open: hold }
`, Config{})
	const total = 3000
	var first time.Time
	trippedAt := -1
	counts := map[queue.Outcome]int{}
	start := time.Now()
	for i := range total {
		time.Sleep(time.Until(start.Add(time.Duration(float64(time.Second) * math.Sqrt(float64(i)/1000)))))
		v := admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("victim%d@example.com", i), fmt.Sprint("src", i%50)))
		if i == 0 {
			first = time.Now()
		}
		counts[v.Outcome]++
		if trippedAt < 0 && v.Outcome == queue.Held {
			trippedAt = i
		}
	}
	open := tr.wait(t, BreakerOpen)
	if open.Reason != ReasonSurge || open.From != BreakerClosed || open.Kind != queue.KindPasswordReset {
		t.Errorf("transition %+v, want closed -> open for surge", open)
	}
	// The threshold is 50 requests in the last second: the breaker opens on
	// the request that crosses it (at most two windows' worth when the
	// ramp straddles a window boundary), not at the peak.
	if trippedAt < 50 || trippedAt > 200 {
		t.Errorf("opened at request %d of %d, want just above the floor (50)", trippedAt, total)
	}
	if counts[queue.Queued] != trippedAt || counts[queue.Held] != total-trippedAt {
		t.Errorf("outcomes %v: every request after the trip must be held", counts)
	}
	t.Logf("opened at request %d, %v after the first surge request (rate %.0f/s at the trip, ramp peak %.0f/s)",
		trippedAt, open.At.Sub(first).Round(time.Millisecond), open.Rate, 2000*math.Sqrt(total/1000.0))
	b := breakerOf(t, g, queue.KindPasswordReset)
	if b.State != BreakerOpen || b.Reason != ReasonSurge || b.Held != int64(total-trippedAt) || b.OpenedAt.IsZero() || b.Until.Before(b.OpenedAt.Add(59*time.Minute)) {
		t.Errorf("breaker %+v", b)
	}
}

// TestBreakerBaseline checks that steady traffic is learned as a baseline
// and raises the surge threshold above the floor, without tripping.
func TestBreakerBaseline(t *testing.T) {
	g, _, tr := breakerGuard(t, `
kinds:
  notification:
    per_recipient: []
    breaker: { learn: { warmup: 0 }, window: 100ms, baseline: 1s, floor: 30/100ms, surge_factor: 20, cooldown: 1h }
`, Config{})
	// At most 100 requests a second for 1.5 s: a pause, never a burst to
	// catch up, so no window sees more than the floor.
	start := time.Now()
	for i := range 150 {
		time.Sleep(10 * time.Millisecond)
		admit(t, g, adm(queue.KindNotification, fmt.Sprintf("n%d@example.com", i), ""))
	}
	rate := 150 / time.Since(start).Seconds()
	b := breakerOf(t, g, queue.KindNotification)
	if len(tr.list()) != 0 || b.State != BreakerClosed {
		t.Fatalf("steady traffic moved the breaker: %+v, %+v", tr.list(), b)
	}
	if b.Baseline <= 0 || b.Baseline > rate*1.2 {
		t.Errorf("baseline %.1f/s after steady %.1f/s", b.Baseline, rate)
	}
	if want := 20 * b.Baseline; b.Threshold < want || b.Threshold <= 300 {
		t.Errorf("threshold %.1f/s, want 20 × baseline (%.1f/s), above the floor (300/s)", b.Threshold, want)
	}
	t.Logf("baseline %.1f/s after %.1f/s steady; threshold %.1f/s", b.Baseline, rate, b.Threshold)
}

// TestBreakerOtherKindsFlow trips password_reset by a surge and checks that
// verification emails and notifications are admitted and dispatched as
// before, while resets queued before the trip are held at dispatch.
func TestBreakerOtherKindsFlow(t *testing.T) {
	g, _, tr := breakerGuard(t, `
global: { rate: 100000/1s }
domains: { default: 100000/1s }
kinds:
  password_reset: { dedup_window: 0, per_recipient: [], per_source: [], breaker: { learn: { warmup: 0 }, floor: 20/1m, cooldown: 1h } }
`, Config{})
	early := realAdm(t, queue.KindPasswordReset, "early@example.com", "")
	wantVerdict(t, "before the surge", admit(t, g, early), queue.Queued, "")
	for i := range 40 {
		admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("r%d@example.com", i), ""))
	}
	tr.wait(t, BreakerOpen)
	// The email admitted before the trip is held when the worker gets it.
	ep, _ := queue.DecodePayload(early.Payload)
	wantDispatch(t, "reset queued before the trip", dispatch(t, g, ep, "a"), false, queue.Held, "breaker")
	for i, k := range []string{queue.KindVerifyEmail, queue.KindNotification} {
		a := realAdm(t, k, fmt.Sprintf("other%d@example.com", i), "")
		wantVerdict(t, k+" admitted", admit(t, g, a), queue.Queued, "")
		p, _ := queue.DecodePayload(a.Payload)
		wantDispatch(t, k+" dispatched", dispatch(t, g, p, "a"), true, "", "")
		if b := breakerOf(t, g, k); b.State != BreakerClosed {
			t.Errorf("%s breaker %+v", k, b)
		}
	}
}

// TestBreakerHoldBounded parks emails up to hold_max, sheds the rest and
// counts them, and checks that the held area's memory stays bounded.
func TestBreakerHoldBounded(t *testing.T) {
	g, rc, _ := breakerGuard(t, `
kinds:
  password_reset: { dedup_window: 0, per_recipient: [], per_source: [], breaker: { learn: { warmup: 0 }, hold_max: 50 } }
`, Config{})
	ctx := context.Background()
	if _, err := g.Trip(ctx, queue.KindPasswordReset, ""); err != nil {
		t.Fatal(err)
	}
	var held, shed int
	for i := range 2000 {
		v := admit(t, g, realAdm(t, queue.KindPasswordReset, fmt.Sprintf("u%d@example.com", i), ""))
		switch {
		case v.Outcome == queue.Held:
			held++
		case v.Outcome == queue.Shed && v.Reason == "hold_full":
			shed++
		default:
			t.Fatalf("admission %d = %+v", i, v)
		}
	}
	if held != 50 || shed != 1950 {
		t.Errorf("held %d shed %d, want 50 and 1950", held, shed)
	}
	ks := stats(t, g, queue.KindPasswordReset)
	if ks.Outcomes[queue.Held] != 50 || ks.Reasons[queue.Shed]["hold_full"] != 1950 || ks.Requested != 2000 || ks.InFlight != 0 {
		t.Errorf("stats %+v", ks)
	}
	n, _ := rc.HLen(ctx, rkeys.Held(queue.KindPasswordReset)).Result()
	mem, _ := rc.MemoryUsage(ctx, rkeys.Held(queue.KindPasswordReset)).Result()
	size := len(realAdm(t, queue.KindPasswordReset, "u1000@example.com", "").Payload)
	if n != 50 || mem > int64(50*(size+200)) {
		t.Errorf("held area: %d entries, %d bytes; want 50 entries of about %d bytes", n, mem, size)
	}
	if ttl := rc.PTTL(ctx, rkeys.Held(queue.KindPasswordReset)).Val(); ttl <= 0 || ttl > 30*time.Minute+rkeys.SweepMargin*time.Millisecond {
		t.Errorf("held area TTL %v, want the kind's TTL (30m) and the sweep's margin", ttl)
	}
	// Only the fixed breaker keys exist besides the held area, and one
	// held marker per held recipient.
	keys, _ := rc.Keys(ctx, rkeys.Tag+":b*").Result()
	if len(keys) > len(rkeys.BreakerKeys(queue.KindPasswordReset))+3 {
		t.Errorf("breaker keys %q", keys)
	}
	if markers, _ := rc.Keys(ctx, rkeys.Tag+"H*").Result(); len(markers) != 2000 {
		t.Errorf("%d held markers, want one per recipient held or shed (2000)", len(markers))
	}
	t.Logf("held area: %d entries, %d bytes (payload %d bytes)", n, mem, size)
}

// TestBreakerHalfOpen: after the cooldown one probe passes; a persisting
// surge re-opens the breaker with a doubled cooldown; a quiet half-open
// window closes it.
func TestBreakerHalfOpen(t *testing.T) {
	g, _, tr := breakerGuard(t, `
kinds:
  password_reset:
    dedup_window: 0
    per_recipient: []
    per_source: []
    breaker: { learn: { warmup: 0 }, window: 100ms, floor: 5/100ms, cooldown: 300ms, probe: 1/1h }
`, Config{})
	// surge admits until the breaker opens.
	surge := func() BreakerTransition {
		for i := range 100000 {
			admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("s%d@example.com", i), ""))
			select {
			case x := <-tr.ch:
				if x.To == BreakerOpen {
					return x
				}
			default:
			}
		}
		t.Fatalf("no surge trip: %+v", tr.list())
		return BreakerTransition{}
	}
	open := surge()
	if open.Level != 0 || open.Until.Sub(open.At) != 300*time.Millisecond {
		t.Errorf("first open %+v, want level 0 and a 300ms cooldown", open)
	}
	sleepUntil(open.Until)
	wantVerdict(t, "probe", admit(t, g, adm(queue.KindPasswordReset, "probe@example.com", "")), queue.Queued, "probe")
	half := tr.wait(t, BreakerHalfOpen)
	if !half.At.After(open.Until) && !half.At.Equal(open.Until) {
		t.Errorf("half-open at %v, before the cooldown's end %v", half.At, open.Until)
	}
	wantVerdict(t, "second probe", admit(t, g, adm(queue.KindPasswordReset, "probe2@example.com", "")), queue.Held, "breaker")

	reopen := surge()
	if reopen.From != BreakerHalfOpen || reopen.Level != 1 || reopen.Until.Sub(reopen.At) != 600*time.Millisecond {
		t.Errorf("re-open %+v, want from half_open, level 1, cooldown 600ms", reopen)
	}

	sleepUntil(reopen.Until)
	wantVerdict(t, "probe after re-open", admit(t, g, adm(queue.KindPasswordReset, "probe3@example.com", "")), queue.Queued, "probe")
	half = tr.wait(t, BreakerHalfOpen)
	sleepUntil(half.Until)
	b := breakerOf(t, g, queue.KindPasswordReset)
	closed := tr.wait(t, BreakerClosed)
	if b.State != BreakerClosed || closed.From != BreakerHalfOpen || closed.Reason != ReasonSurge {
		t.Errorf("after a quiet half-open window: %+v, transition %+v", b, closed)
	}
	wantVerdict(t, "closed", admit(t, g, adm(queue.KindPasswordReset, "after@example.com", "")), queue.Queued, "")
}

// TestBreakerSquareWave drives a square-wave load (on 60ms as fast as
// possible, off 60ms) for 3 s against a 50ms window and a 200ms cooldown,
// and checks from the transitions' Redis times that the breaker never
// cycles faster than its cooldown: every open lasts at least its cooldown,
// and consecutive openings are at least one cooldown apart.
func TestBreakerSquareWave(t *testing.T) {
	const cooldown = 200 * time.Millisecond
	g, _, tr := breakerGuard(t, `
kinds:
  password_reset:
    dedup_window: 0
    per_recipient: []
    per_source: []
    breaker: { learn: { warmup: 0 }, window: 50ms, floor: 3/50ms, cooldown: 200ms, max_cooldown: 800ms, probe: 1/1h }
`, Config{})
	start := time.Now()
	i := 0
	for time.Since(start) < 3*time.Second {
		if (time.Since(start)/(60*time.Millisecond))%2 == 1 {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("w%d@example.com", i), ""))
		i++
	}
	all := tr.list()
	var opens []BreakerTransition
	var lastOpen *BreakerTransition
	maxLevel := 0
	for k, x := range all {
		switch x.To {
		case BreakerOpen:
			if x.Until.Sub(x.At) < cooldown {
				t.Errorf("open %+v with a cooldown under %v", x, cooldown)
			}
			if len(opens) > 0 && x.At.Sub(opens[len(opens)-1].At) < cooldown {
				t.Errorf("opened again %v after the previous opening, under the cooldown", x.At.Sub(opens[len(opens)-1].At))
			}
			opens = append(opens, x)
			lastOpen = &all[k]
			maxLevel = max(maxLevel, x.Level)
		case BreakerHalfOpen:
			if lastOpen == nil || x.At.Before(lastOpen.Until) {
				t.Errorf("half-open at %v before the cooldown ended (%+v)", x.At, lastOpen)
			}
		}
	}
	if len(opens) == 0 || len(opens) > int(3*time.Second/cooldown)+1 {
		t.Errorf("%d openings in 3s with a %v cooldown", len(opens), cooldown)
	}
	if maxLevel == 0 {
		t.Errorf("the cooldown never doubled under a persisting square wave: %+v", all)
	}
	t.Logf("%d requests, %d transitions, %d openings, highest level %d", i, len(all), len(opens), maxLevel)
}

// TestBreakerRefusals trips the breaker on the share of requests refused
// by caps, but only when the refusals come from many sources and go to many
// recipients: one source enumerating recipients, or hammering one account,
// is its own caps' business.
func TestBreakerRefusals(t *testing.T) {
	g, _, tr := breakerGuard(t, `
kinds:
  password_reset:
    dedup_window: 0
    per_recipient: [1/1h]
    per_source: [5/1h]
    per_group: {}
    breaker: { learn: { warmup: 0 }, surge_factor: 0, refusal_ratio: 0.5, refusal_min: 20/1m, refusal_sources: 10, cooldown: 1h }
`, Config{})
	for i := range 200 {
		admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("e%d@example.com", i), "enumerator"))
		admit(t, g, adm(queue.KindPasswordReset, "own@example.com", "hammer"))
	}
	if all := tr.list(); len(all) != 0 {
		t.Fatalf("two sources moved the breaker: %+v", all)
	}
	// Many sources, each enumerating: the refusal trip fires.
	var firstHeld int
	for i := range 400 {
		v := admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("f%d@example.com", i), fmt.Sprint("bot", i%40)))
		if v.Outcome == queue.Held && firstHeld == 0 {
			firstHeld = i
		}
	}
	open := tr.wait(t, BreakerOpen)
	if open.Reason != ReasonRefusals {
		t.Errorf("transition %+v, want reason refusals", open)
	}
	// Capped requests stay capped; another source's request is held.
	wantVerdict(t, "capped source", admit(t, g, adm(queue.KindPasswordReset, "x@example.com", "enumerator")), queue.Capped, "source")
	wantVerdict(t, "other source", admit(t, g, adm(queue.KindPasswordReset, "y@example.com", "other")), queue.Held, "breaker")
}

// TestRelayBreaker reports relay failures through Settle: the breaker
// opens, dispatch defers with reason relay without a terminal outcome,
// admission is unaffected; after the cooldown one probe is sent; its
// failure re-opens the breaker, a later probe's success closes it.
func TestRelayBreaker(t *testing.T) {
	g, _, tr := breakerGuard(t, `
global: { rate: 100000/1s }
domains: { default: 100000/1s }
kinds:
  password_reset: { breaker: { learn: { warmup: 0 }, relay_failures: 3, relay_ratio: 0, cooldown: 300ms, probe: 1/1h } }
`, Config{})
	attempt := func(to string) (*queue.Payload, queue.Verdict) {
		p := realPayload(queue.KindPasswordReset, to)
		return p, dispatch(t, g, p, "a1")
	}
	// A per-message 4xx is the relay answering, not failing.
	for i := range 5 {
		p, v := attempt(fmt.Sprintf("greylisted%d@example.com", i))
		wantDispatch(t, "greylisted", v, true, "", "")
		settle(t, g, p, "a1", queue.Deferred, "smtp_451")
	}
	for i := range 3 {
		p, v := attempt(fmt.Sprintf("f%d@example.com", i))
		wantDispatch(t, "before the trip", v, true, "", "")
		settle(t, g, p, "a1", queue.Deferred, "dial")
	}
	open := tr.wait(t, BreakerOpen)
	if open.Reason != ReasonRelay || open.Until.Sub(open.At) != 300*time.Millisecond {
		t.Errorf("transition %+v", open)
	}
	_, v := attempt("deferred@example.com")
	wantDispatch(t, "relay open", v, false, queue.Deferred, "relay")
	if v.RetryAfter <= 0 || v.RetryAfter > 400*time.Millisecond {
		t.Errorf("RetryAfter %v, want about the rest of the cooldown", v.RetryAfter)
	}
	wantVerdict(t, "admission during a relay outage", admit(t, g, adm(queue.KindPasswordReset, "adm@example.com", "")), queue.Queued, "")
	if ks := stats(t, g, queue.KindPasswordReset); ks.Deferred["relay"] != 1 || ks.Outcomes[queue.Failed] != 0 {
		t.Errorf("stats %+v", ks)
	}

	sleepUntil(open.Until)
	probe, v := attempt("probe1@example.com")
	wantDispatch(t, "probe", v, true, "", "")
	tr.wait(t, BreakerHalfOpen)
	_, v = attempt("waiting@example.com")
	wantDispatch(t, "second while probing", v, false, queue.Deferred, "relay")
	settle(t, g, probe, "a1", queue.Deferred, "smtp_421")
	reopen := tr.wait(t, BreakerOpen)
	if reopen.From != BreakerHalfOpen || reopen.Level != 1 {
		t.Errorf("re-open %+v", reopen)
	}

	sleepUntil(reopen.Until)
	probe, v = attempt("probe2@example.com")
	wantDispatch(t, "second probe", v, true, "", "")
	settle(t, g, probe, "a1", queue.Sent, "")
	if closed := tr.wait(t, BreakerClosed); closed.From != BreakerHalfOpen || closed.Reason != ReasonRelay {
		t.Errorf("close %+v", closed)
	}
	_, v = attempt("after@example.com")
	wantDispatch(t, "after recovery", v, true, "", "")
}

// TestRelayBreakerRatio trips on the failure ratio when successes keep the
// consecutive count low.
func TestRelayBreakerRatio(t *testing.T) {
	g, _, tr := breakerGuard(t, `
global: { rate: 100000/1s }
domains: { default: 100000/1s }
kinds:
  password_reset: { breaker: { learn: { warmup: 0 }, relay_failures: 5, relay_ratio: 0.6, cooldown: 1h } }
`, Config{})
	for i := range 30 {
		p := realPayload(queue.KindPasswordReset, fmt.Sprintf("r%d@example.com", i))
		if v := dispatch(t, g, p, "a"); !v.Allow {
			break
		}
		if i%4 == 3 {
			settle(t, g, p, "a", queue.Sent, "")
		} else {
			settle(t, g, p, "a", queue.Deferred, "timeout")
		}
	}
	if open := tr.wait(t, BreakerOpen); open.Reason != ReasonRelay {
		t.Errorf("transition %+v", open)
	}
}

// TestBreakerAdmin drives trip, reset, release and purge through the Go
// API, checks that released emails are queued in asynq and pass the caps
// again, and that the conservation law holds throughout.
func TestBreakerAdmin(t *testing.T) {
	g, rc, tr := breakerGuard(t, `
global: { rate: 100000/1s }
domains: { default: 100000/1s }
kinds:
  password_reset: { dedup_window: 0, per_recipient: [1/1h], per_source: [] }
`, Config{})
	ctx := context.Background()
	b, err := g.Trip(ctx, queue.KindPasswordReset, "drill 42")
	if err != nil || b.State != BreakerOpen || b.Reason != ReasonManual || !b.Until.IsZero() {
		t.Fatalf("Trip = %+v, %v", b, err)
	}
	if x := tr.wait(t, BreakerOpen); x.Note != "drill 42" || x.Reason != ReasonManual {
		t.Errorf("transition %+v", x)
	}
	// One held for a recipient who asks twice at once (the second is a
	// duplicate of the held one), three for others; one queued before the
	// trip is held at dispatch.
	before := realAdm(t, queue.KindPasswordReset, "before@example.com", "")
	if _, err := g.Reset(ctx, queue.KindPasswordReset); err != nil {
		t.Fatal(err)
	}
	admit(t, g, before)
	if _, err := g.Trip(ctx, queue.KindPasswordReset, ""); err != nil {
		t.Fatal(err)
	}
	bp, _ := queue.DecodePayload(before.Payload)
	wantDispatch(t, "held at dispatch", dispatch(t, g, bp, "a"), false, queue.Held, "breaker")
	for i, to := range []string{"twice@example.com", "twice@example.com", "a@example.com", "b@example.com", "c@example.com"} {
		v := admit(t, g, realAdm(t, queue.KindPasswordReset, to, ""))
		if i == 1 {
			wantVerdict(t, "asked again at once "+to, v, queue.Duplicate, "held")
			continue
		}
		wantVerdict(t, "held "+to, v, queue.Held, "breaker")
	}
	if b := breakerOf(t, g, queue.KindPasswordReset); b.Held != 5 {
		t.Errorf("held %d, want 5", b.Held)
	}
	conserved(t, g)

	if _, err := g.Reset(ctx, queue.KindPasswordReset); err != nil {
		t.Fatal(err)
	}
	r1, err := g.Release(ctx, queue.KindPasswordReset, ReleaseOptions{All: true, Limit: 2})
	n := r1.Released
	if err != nil || n < 1 || n > 2 {
		t.Fatalf("Release(all, limit 2) = %+v, %v", r1, err)
	}
	r2, err := g.Release(ctx, queue.KindPasswordReset, ReleaseOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	rest := r2.Released
	if n+rest != 5 {
		t.Errorf("released %d + %d, want 5", n, rest)
	}
	ks := stats(t, g, queue.KindPasswordReset)
	if ks.Outcomes[queue.Held] != 0 || ks.Reasons[queue.Duplicate]["held"] != 1 || ks.InFlight != 5 {
		t.Errorf("stats after release %+v", ks)
	}
	conserved(t, g)
	// Released emails wait on the release queue, paced.
	ins := asynq.NewInspectorFromRedisClient(rc)
	tasks, err := ins.ListPendingTasks(queue.ReleaseQueue, asynq.PageSize(100))
	scheduled, err2 := ins.ListScheduledTasks(queue.ReleaseQueue, asynq.PageSize(100))
	tasks = append(tasks, scheduled...)
	if err != nil || err2 != nil || len(tasks) != 5 {
		t.Fatalf("released tasks %d, %v %v; want 5", len(tasks), err, err2)
	}
	for _, task := range tasks {
		p, err := queue.DecodePayload(task.Payload)
		if err != nil || task.ID != p.ID || task.MaxRetry != g.Policy().Kinds()[p.Kind].Retries()+1 {
			t.Errorf("task %s: %v (max retry %d)", task.ID, err, task.MaxRetry)
		}
		// The released email passes dispatch, including the one held there.
		wantDispatch(t, "released "+p.ID, dispatch(t, g, p, "r"), true, "", "")
	}
	if b := breakerOf(t, g, queue.KindPasswordReset); b.Held != 0 || b.Releasing != 0 {
		t.Errorf("after release %+v", b)
	}

	// Purge counts what is left as shed.
	if _, err := g.Trip(ctx, queue.KindPasswordReset, ""); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		admit(t, g, realAdm(t, queue.KindPasswordReset, fmt.Sprintf("p%d@example.com", i), ""))
	}
	if n, err := g.Purge(ctx, queue.KindPasswordReset); err != nil || n != 3 {
		t.Errorf("Purge = %d, %v; want 3", n, err)
	}
	ks = stats(t, g, queue.KindPasswordReset)
	if ks.Outcomes[queue.Held] != 0 || ks.Reasons[queue.Shed]["purged"] != 3 {
		t.Errorf("stats after purge %+v", ks)
	}
	conserved(t, g)
	if _, err := g.Trip(ctx, "invoice", ""); err == nil {
		t.Error("Trip(unknown kind) succeeded")
	}
}

// conserved checks requested = sum of outcomes + in flight for every kind,
// with no negative count.
func conserved(t testing.TB, g *Guard) {
	t.Helper()
	st, err := g.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for kind, ks := range st.Kinds {
		var sum int64
		for o, n := range ks.Outcomes {
			if n < 0 {
				t.Errorf("%s: %s = %d", kind, o, n)
			}
			sum += n
		}
		if ks.InFlight < 0 || ks.Requested != sum+ks.InFlight {
			t.Errorf("%s: requested %d, outcomes %d, in flight %d", kind, ks.Requested, sum, ks.InFlight)
		}
	}
}

// TestBreakerReleaseInterrupted: emails a release took out of the held area
// but did not queue are queued by the next release.
func TestBreakerReleaseInterrupted(t *testing.T) {
	g, rc, _ := breakerGuard(t, "", Config{})
	ctx := context.Background()
	p := realPayload(queue.KindPasswordReset, "lost@example.com")
	body, _ := p.Encode()
	if err := rc.HSet(ctx, rkeys.Releasing(queue.KindPasswordReset), p.ID, body).Err(); err != nil {
		t.Fatal(err)
	}
	if b := breakerOf(t, g, queue.KindPasswordReset); b.Releasing != 1 {
		t.Errorf("releasing %d, want 1", b.Releasing)
	}
	if r, err := g.Release(ctx, queue.KindPasswordReset, ReleaseOptions{}); err != nil || r.Released != 1 {
		t.Errorf("Release = %+v, %v", r, err)
	}
	if info, err := asynq.NewInspectorFromRedisClient(rc).GetTaskInfo(queue.ReleaseQueue, p.ID); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("task %+v, %v", info, err)
	}
	if n, _ := rc.HLen(ctx, rkeys.Releasing(queue.KindPasswordReset)).Result(); n != 0 {
		t.Errorf("%d left releasing", n)
	}
}

// TestBreakerReadAppliesCooldown: reading the breakers of a quiet kind
// applies the transition due by time, and only one reader reports it.
func TestBreakerReadAppliesCooldown(t *testing.T) {
	const doc = `
kinds:
  password_reset: { dedup_window: 0, per_recipient: [], per_source: [], breaker: { learn: { warmup: 0 }, floor: 5/1m, cooldown: 100ms } }
`
	g1, rc, tr1 := breakerGuard(t, doc, Config{})
	tr2 := newTransitions()
	g2 := guardOn(t, rc, doc, Config{OnTransition: tr2.add})
	for i := range 10 {
		admit(t, g1, adm(queue.KindPasswordReset, fmt.Sprintf("q%d@example.com", i), ""))
	}
	open := tr1.wait(t, BreakerOpen)
	sleepUntil(open.Until)
	var wg sync.WaitGroup
	for _, g := range []*Guard{g1, g2, g1, g2} {
		wg.Go(func() {
			if _, err := g.Breakers(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	halves := 0
	for _, x := range append(tr1.list(), tr2.list()...) {
		if x.To == BreakerHalfOpen {
			halves++
		}
	}
	if halves != 1 {
		t.Errorf("%d processes reported the half-open transition, want exactly 1", halves)
	}
	if b := breakerOf(t, g2, queue.KindPasswordReset); b.State != BreakerHalfOpen {
		t.Errorf("breaker %+v", b)
	}
}

func TestIsRelayFailure(t *testing.T) {
	for _, c := range []struct {
		outcome, reason, want string
	}{
		{"retry", "dial", "f"}, {"retry", "tls", "f"}, {"retry", "auth", "f"}, {"retry", "timeout", "f"},
		{"retry", "smtp_421", "f"}, {"retry", "smtp_554", "f"}, {"retry", "smtp_451", "s"}, {"retry", "ambiguous", ""},
		{"retry", "error", ""}, {"sent", "", "s"}, {"failed", "smtp_550", "s"}, {"failed", "retries_exhausted", ""},
		{"expired", "", ""},
	} {
		if got := relayResult(c.outcome, c.reason); got != c.want {
			t.Errorf("relayResult(%q, %q) = %q, want %q", c.outcome, c.reason, got, c.want)
		}
	}
}

func TestBreakerPolicy(t *testing.T) {
	p, err := ParsePolicy([]byte(`
kinds:
  password_reset: { breaker: off }
  verify_email:
    breaker: { window: 10s, baseline: 2h, refusal_ratio: 0.8, refusal_min: 10/1m, relay_failures: 3, relay_ratio: 0.5, max_cooldown: 1h, probe: 2/1s, open: clamp }
`))
	if err != nil {
		t.Fatal(err)
	}
	if b := p.KindPolicies[queue.KindPasswordReset].Breaker; b.SurgeFactor != 0 || b.RefusalRatio != 0 || b.RelayFailures != 0 || b.Open != BreakerHold {
		t.Errorf("breaker: off = %+v", b)
	}
	want := defaultBreaker()
	want.Window, want.Learn.Horizon, want.RefusalRatio, want.RefusalMin = 10*time.Second, 2*time.Hour, 0.8, Rate{10, time.Minute}
	want.RelayFailures, want.RelayRatio, want.MaxCooldown, want.Probe, want.Open = 3, 0.5, time.Hour, Rate{2, time.Second}, BreakerClamp
	if got := p.KindPolicies[queue.KindVerifyEmail].Breaker; got != want {
		t.Errorf("verify_email breaker = %+v, want %+v", got, want)
	}
	if b := DefaultPolicy().KindPolicies[queue.KindNotification].Breaker; b.SurgeFactor != 0 || b.RelayFailures == 0 || b.Open != BreakerClamp {
		t.Errorf("default notification breaker %+v", b)
	}
	for _, c := range []struct{ doc, want string }{
		{"kinds:\n  password_reset:\n    breaker: on\n", "kinds.password_reset.breaker: must be a mapping or off"},
		{"kinds:\n  password_reset:\n    breaker: { window: 1ms }\n", "kinds.password_reset.breaker.window: must be between 10ms and 1h"},
		{"kinds:\n  password_reset:\n    breaker: { window: 2h }\n", "kinds.password_reset.breaker.window: must be between 10ms and 1h"},
		{"kinds:\n  password_reset:\n    breaker: { baseline: 30s }\n", "kinds.password_reset.breaker.learn.horizon: must be between the window (1m) and 366d"},
		{"kinds:\n  password_reset:\n    breaker: { learn: { max_rise: 0 } }\n", "kinds.password_reset.breaker.learn.max_rise: must be in (0, 10]"},
		{"kinds:\n  password_reset:\n    breaker: { ceilings: { rate: sometimes } }\n", `kinds.password_reset.breaker.ceilings.rate: rate "sometimes": want N/duration`},
		{"kinds:\n  password_reset:\n    breaker: { ceilings: { new_recipients: 10/90s } }\n", "kinds.password_reset.breaker.ceilings.new_recipients: the period must be a multiple of the window (1m)"},
		{"kinds:\n  password_reset:\n    breaker: { redemption: { collapse: 2 } }\n", "kinds.password_reset.breaker.redemption.collapse: must be in (0, 1]"},
		{"kinds:\n  password_reset:\n    breaker: { lanes: { rerequest_after: 2h } }\n", "kinds.password_reset.breaker.lanes.rerequest_after: must be between 0 and the kind's ttl"},
		{"kinds:\n  password_reset:\n    breaker: { lanes: { burst: 0 } }\n", "kinds.password_reset.breaker.lanes.burst: must be between 1 and 1000"},
		{"kinds:\n  password_reset:\n    per_group: { v4/40: [1/1h] }\n", `kinds.password_reset.per_group.v4/40: group "v4/40": an IPv4 prefix is 8 to 32 bits`},
		{"kinds:\n  password_reset:\n    breaker: { refusal_ratio: 1.5 }\n", "kinds.password_reset.breaker.refusal_ratio: must be 0 (off) or in (0, 1]"},
		{"kinds:\n  password_reset:\n    breaker: { relay_failures: -1 }\n", "kinds.password_reset.breaker.relay_failures: must be between 0 (off) and 1000000"},
		{"kinds:\n  password_reset:\n    breaker: { cooldown: 1h, max_cooldown: 10m }\n", "kinds.password_reset.breaker.max_cooldown: must be 0 (8 × cooldown) or between the cooldown and 744h"},
		{"kinds:\n  password_reset:\n    breaker: { probe: 0/1s }\n", `kinds.password_reset.breaker.probe: rate "0/1s": count must be positive`},
		{"kinds:\n  password_reset:\n    breaker: { surge: 3 }\n", "kinds.password_reset.breaker.surge: unknown field"},
	} {
		_, err := ParsePolicy([]byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParsePolicy(%q) error = %v, want %q", c.doc, err, c.want)
		}
	}
}

// TestDuplicatesDoNotTripRefusals: users who ask again while their mail is
// slow are duplicates, from as many sources as there are users; they send
// nothing and must not trip the refusal trip, or slow mail would lock
// every user out.
func TestDuplicatesDoNotTripRefusals(t *testing.T) {
	g, _, tr := breakerGuard(t, `
kinds:
  password_reset:
    per_group: {}
    breaker: { learn: { warmup: 0 }, surge_factor: 0, refusal_ratio: 0.5, refusal_min: 20/1m, refusal_sources: 10, cooldown: 1h }
`, Config{})
	for i := range 100 {
		for n := range 3 {
			v := admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("user%d@example.com", i), fmt.Sprintf("198.51.%d.%d", i/200, i%200)))
			if n > 0 && v.Outcome != queue.Duplicate {
				t.Fatalf("ask %d of user %d = %+v, want duplicate", n, i, v)
			}
		}
	}
	if all := tr.list(); len(all) != 0 {
		t.Fatalf("users asking again moved the breaker: %+v", all)
	}
	if st, err := g.Breaker(context.Background(), queue.KindPasswordReset); err != nil || st.State != BreakerClosed {
		t.Fatalf("breaker %+v, %v; want closed", st, err)
	}
}
