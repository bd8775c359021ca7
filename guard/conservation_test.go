package guard

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/queue"
)

// TestConservation drives mixed traffic through two guards sharing one
// Redis (two processes) and checks requested = sum of outcomes + in flight,
// per kind, against the test's own tally. The breaker is off: its refusal
// trip would hold emails between a worker's admission and its dispatch
// (TestBreakerConservation covers the breaker's outcomes).
func TestConservation(t *testing.T) {
	const doc = `
global: { rate: 100000/1s }
domains: { default: 100000/1s }
kinds:
  password_reset: { dedup_window: 1h, per_recipient: [2/1h], per_source: [25/1h], breaker: off }
  notification: { per_recipient: [3/1h], per_source: [] }
`
	g1, rc, _ := newTestGuard(t, doc, Config{DecisionSample: 1})
	g2 := guardOn(t, rc, doc, Config{})
	guards := []*Guard{g1, g2}
	ctx := context.Background()
	for i := range 5 {
		if err := g1.Suppress(ctx, fmt.Sprintf("user%d@example.com", i), "hard_bounce"); err != nil {
			t.Fatal(err)
		}
	}

	type tally struct {
		requested, inFlight int
		outcomes            map[queue.Outcome]int
	}
	var mu sync.Mutex
	tallies := map[string]*tally{}
	count := func(kind string, f func(*tally)) {
		mu.Lock()
		defer mu.Unlock()
		tl := tallies[kind]
		if tl == nil {
			tl = &tally{outcomes: map[queue.Outcome]int{}}
			tallies[kind] = tl
		}
		f(tl)
	}

	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			g := guards[w%2]
			for i := range 60 {
				kind := queue.KindPasswordReset
				if rnd.IntN(3) == 0 {
					kind = queue.KindNotification
				}
				to := fmt.Sprintf("user%d@example.com", rnd.IntN(40))
				src := fmt.Sprintf("10.0.0.%d", rnd.IntN(4))
				a := &queue.Admission{ID: newID(), Kind: kind, To: to, Source: src}
				v, err := g.Admit(ctx, a)
				if err != nil {
					t.Error(err)
					return
				}
				count(kind, func(tl *tally) { tl.requested++ })
				if !v.Allow {
					count(kind, func(tl *tally) { tl.outcomes[v.Outcome]++ })
					continue
				}
				ttl := time.Hour
				if i%17 == 0 {
					ttl = -time.Second
				}
				p := &queue.Payload{V: 1, ID: a.ID, Kind: kind, To: to, ExpiresAt: time.Now().Add(ttl)}
				outcome := settleTraffic(t, g, p, rnd)
				count(kind, func(tl *tally) {
					if outcome == queue.Queued {
						tl.inFlight++
					} else {
						tl.outcomes[outcome]++
					}
				})
			}
		})
	}
	wg.Wait()

	st, err := g2.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for kind, tl := range tallies {
		ks := st.Kinds[kind]
		var sum int64
		for _, n := range ks.Outcomes {
			sum += n
		}
		if ks.Requested != sum+ks.InFlight {
			t.Errorf("%s: requested %d != outcomes %d + in flight %d", kind, ks.Requested, sum, ks.InFlight)
		}
		if ks.Requested != int64(tl.requested) || ks.InFlight != int64(tl.inFlight) {
			t.Errorf("%s: stats requested %d in flight %d, test saw %d and %d", kind, ks.Requested, ks.InFlight, tl.requested, tl.inFlight)
		}
		for o, n := range tl.outcomes {
			if ks.Outcomes[o] != int64(n) {
				t.Errorf("%s: stats %s = %d, test saw %d", kind, o, ks.Outcomes[o], n)
			}
		}
		if len(ks.Outcomes) != len(tl.outcomes) {
			t.Errorf("%s: stats outcomes %v, test saw %v", kind, ks.Outcomes, tl.outcomes)
		}
		t.Logf("%s: requested %d, in flight %d, outcomes %v, redelivered %d, retried %d", kind, ks.Requested, ks.InFlight, ks.Outcomes, ks.Redelivered, ks.Retried)
	}
	if len(tallies[queue.KindPasswordReset].outcomes) < 5 {
		t.Errorf("traffic too uniform: %v", tallies[queue.KindPasswordReset].outcomes)
	}
	ds, err := g1.Decisions(ctx, 50)
	if err != nil || len(ds) == 0 || ds[0].Kind == "" || ds[0].RcptHash == "" || ds[0].TaskID == "" {
		t.Errorf("Decisions = %+v, %v", ds, err)
	}
}

// settleTraffic plays a worker's life for one admitted email and returns
// its terminal outcome, or Queued when it is left in flight.
func settleTraffic(t *testing.T, g *Guard, p *queue.Payload, rnd *rand.Rand) queue.Outcome {
	ctx := context.Background()
	must := func(err error) {
		if err != nil {
			t.Error(err)
		}
	}
	if p.Expired(time.Now()) {
		v, err := g.Dispatch(ctx, p, "x1")
		must(err)
		return v.Outcome
	}
	switch rnd.IntN(6) {
	case 0: // still queued
		return queue.Queued
	case 1: // being sent by a worker that has not settled yet
		_, err := g.Dispatch(ctx, p, "x1")
		must(err)
		return queue.Queued
	case 2: // a temporary failure, then sent, then redelivered
		_, err := g.Dispatch(ctx, p, "x1")
		must(err)
		must(g.Settle(ctx, p, "x1", queue.Deferred, ""))
		_, err = g.Dispatch(ctx, p, "x2")
		must(err)
		must(g.Settle(ctx, p, "x2", queue.Sent, ""))
		v, err := g.Dispatch(ctx, p, "x3")
		must(err)
		if v.Outcome != queue.Duplicate {
			t.Errorf("redelivery after sent = %+v", v)
		}
		return queue.Sent
	case 3: // a permanent failure
		_, err := g.Dispatch(ctx, p, "x1")
		must(err)
		must(g.Settle(ctx, p, "x1", queue.Failed, "hard_bounce"))
		return queue.Failed
	default: // sent, Settle re-sent
		_, err := g.Dispatch(ctx, p, "x1")
		must(err)
		must(g.Settle(ctx, p, "x1", queue.Sent, ""))
		must(g.Settle(ctx, p, "x1", queue.Sent, ""))
		return queue.Sent
	}
}
