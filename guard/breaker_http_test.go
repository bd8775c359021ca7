package guard

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
)

func TestBreakerHandler(t *testing.T) {
	g, _, _ := newTestGuard(t, `
kinds:
  password_reset: { dedup_window: 0, per_recipient: [], per_source: [] }
`, Config{})
	ts := httptest.NewServer(g.Handler())
	defer ts.Close()
	do := apiCaller(t, ts.URL)

	code, m := do("GET", "/v1/breakers", "")
	list, _ := m["breakers"].([]any)
	if code != 200 || len(list) != 3 {
		t.Fatalf("GET /v1/breakers = %d %v", code, m)
	}
	first := list[0].(map[string]any)
	var keys []string
	for k := range first {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range []string{"baseline", "held", "kind", "mode", "opened_at", "rate", "reason", "since", "state"} {
		if !slices.Contains(keys, k) {
			t.Errorf("breaker JSON lacks %q: %v", k, first)
		}
	}
	if first["kind"] != queue.KindNotification || first["state"] != "closed" || first["mode"] != "clamp" || first["opened_at"] != "" || first["reason"] != "" {
		t.Errorf("first breaker %v", first)
	}

	code, m = do("POST", "/v1/breakers/password_reset/trip", `{"reason":"drill"}`)
	if code != 200 || m["state"] != "open" || m["reason"] != "manual" || m["kind"] != queue.KindPasswordReset {
		t.Fatalf("trip = %d %v", code, m)
	}
	for _, f := range []string{"opened_at", "since"} {
		if _, err := time.Parse(time.RFC3339Nano, m[f].(string)); err != nil {
			t.Errorf("%s %q: %v", f, m[f], err)
		}
	}
	if code, m = do("POST", "/v1/breakers/verify_email/trip?reason=relay", ""); code != 200 || m["reason"] != "relay" {
		t.Errorf("trip with a query reason = %d %v", code, m)
	}
	if code, _ = do("POST", "/v1/breakers/invoice/trip", ""); code != 404 {
		t.Errorf("trip of an unknown kind = %d, want 404", code)
	}
	if code, _ = do("POST", "/v1/breakers/password_reset/trip", `{"why":1}`); code != 400 {
		t.Errorf("trip with a bad body = %d, want 400", code)
	}
	for i := range 3 {
		admit(t, g, realAdm(t, queue.KindPasswordReset, fmt.Sprintf("h%d@example.com", i), ""))
	}
	code, m = do("GET", "/v1/breakers", "")
	if pr := m["breakers"].([]any)[1].(map[string]any); code != 200 || pr["held"] != 3.0 || pr["state"] != "open" {
		t.Errorf("password_reset after holds = %v", pr)
	}
	if code, m = do("POST", "/v1/breakers/password_reset/reset", ""); code != 200 || m["state"] != "closed" || m["held"] != 3.0 {
		t.Errorf("reset = %d %v", code, m)
	}
	// By default only emails that pass a lane are released: none here.
	if code, m = do("POST", "/v1/breakers/password_reset/release?dry_run=1", ""); code != 200 || m["released"] != 0.0 ||
		m["lanes"].(map[string]any)["none"] != 3.0 {
		t.Errorf("release?dry_run=1 = %d %v", code, m)
	}
	if code, m = do("POST", "/v1/breakers/password_reset/release?limit=1&all=1", ""); code != 200 || m["released"] != 1.0 {
		t.Errorf("release?limit=1&all=1 = %d %v", code, m)
	}
	if code, _ = do("POST", "/v1/breakers/password_reset/release?limit=x", ""); code != 400 {
		t.Errorf("release?limit=x = %d, want 400", code)
	}
	if code, m = do("POST", "/v1/breakers/password_reset/purge", ""); code != 200 || m["purged"] != 2.0 {
		t.Errorf("purge = %d %v", code, m)
	}
	if code, m = do("POST", "/v1/breakers/password_reset/release", ""); code != 200 || m["released"] != 0.0 {
		t.Errorf("release of nothing = %d %v", code, m)
	}
	conserved(t, g)
}

// TestBreakerConservation runs mixed traffic through two guards while the
// breaker trips, holds at admission and dispatch, is reset, releases and
// purges, and checks the conservation law and the held count throughout.
func TestBreakerConservation(t *testing.T) {
	const doc = `
global: { rate: 100000/1s }
domains: { default: 100000/1s }
kinds:
  password_reset: { dedup_window: 0, per_recipient: [2/1h], per_source: [], breaker: { learn: { warmup: 0 }, floor: 40/1m, hold_max: 100, cooldown: 1h } }
`
	g1, rc, _ := newTestGuard(t, doc, Config{})
	g2 := guardOn(t, rc, doc, Config{})
	guards := []*Guard{g1, g2}
	ctx := context.Background()
	var wg sync.WaitGroup
	traffic := func(seed uint64) {
		for w := range 4 {
			wg.Go(func() {
				rnd := rand.New(rand.NewPCG(seed, uint64(w)))
				g := guards[w%2]
				for range 60 {
					a := realAdm(t, queue.KindPasswordReset, fmt.Sprintf("u%d@example.com", rnd.IntN(80)), "")
					v, err := g.Admit(ctx, a)
					if err != nil {
						t.Error(err)
						return
					}
					if !v.Allow || rnd.IntN(2) == 0 {
						continue
					}
					p, _ := queue.DecodePayload(a.Payload)
					if dv, err := g.Dispatch(ctx, p, "x"); err != nil {
						t.Error(err)
					} else if dv.Allow {
						if err := g.Settle(ctx, p, "x", queue.Sent, ""); err != nil {
							t.Error(err)
						}
					}
				}
			})
		}
		wg.Wait()
	}
	traffic(1)
	if b := breakerOf(t, g1, queue.KindPasswordReset); b.State != BreakerOpen {
		t.Fatalf("breaker %+v, want open after 240 requests over a 40/1m floor", b)
	}
	conserved(t, g1)
	heldOK := func() {
		t.Helper()
		b := breakerOf(t, g1, queue.KindPasswordReset)
		ks := stats(t, g1, queue.KindPasswordReset)
		if ks.Outcomes[queue.Held] != b.Held {
			t.Errorf("stats held %d, held area %d", ks.Outcomes[queue.Held], b.Held)
		}
	}
	heldOK()
	if _, err := g2.Reset(ctx, queue.KindPasswordReset); err != nil {
		t.Fatal(err)
	}
	if _, err := g1.Release(ctx, queue.KindPasswordReset, ReleaseOptions{All: true, Limit: 30}); err != nil {
		t.Fatal(err)
	}
	conserved(t, g1)
	heldOK()
	traffic(2)
	conserved(t, g2)
	heldOK()
	if _, err := g2.Purge(ctx, queue.KindPasswordReset); err != nil {
		t.Fatal(err)
	}
	conserved(t, g1)
	heldOK()
	ks := stats(t, g1, queue.KindPasswordReset)
	t.Logf("requested %d, in flight %d, outcomes %v, reasons %v", ks.Requested, ks.InFlight, ks.Outcomes, ks.Reasons)
	if ks.Outcomes[queue.Held] != 0 || ks.Reasons[queue.Shed]["purged"] == 0 || ks.Requested != 480 {
		t.Errorf("stats %+v", ks)
	}
}

// TestBreakerCluster trips, holds, releases and reads a breaker on a
// 3-master Redis Cluster: every breaker key is in the guard's slot.
func TestBreakerCluster(t *testing.T) {
	cl := testutil.StartCluster(t)
	cc := cl.Client(t)
	tr := newTransitions()
	g := guardOn(t, cc, `
global: { rate: 100000/1s }
domains: { default: 100000/1s }
kinds:
  password_reset: { dedup_window: 0, per_recipient: [], per_source: [], breaker: { learn: { warmup: 0 }, floor: 5/1m } }
`, Config{OnTransition: tr.add})
	ctx := context.Background()
	for i := range 10 {
		admit(t, g, realAdm(t, queue.KindPasswordReset, fmt.Sprintf("c%d@example.com", i), ""))
	}
	tr.wait(t, BreakerOpen)
	p := realPayload(queue.KindPasswordReset, "d@example.com")
	wantDispatch(t, "held at dispatch", dispatch(t, g, p, "a"), false, queue.Held, "breaker")
	settle(t, g, p, "a", queue.Deferred, "dial")
	bs, err := g.Breakers(ctx)
	if err != nil || len(bs) != 3 || bs[1].Held != 6 {
		t.Fatalf("Breakers = %+v, %v", bs, err)
	}
	if _, err := g.Reset(ctx, queue.KindPasswordReset); err != nil {
		t.Fatal(err)
	}
	if r, err := g.Release(ctx, queue.KindPasswordReset, ReleaseOptions{All: true}); err != nil || r.Released != 6 {
		t.Errorf("Release = %+v, %v", r, err)
	}
	conserved(t, g)
	slot, err := cc.ClusterKeySlot(ctx, rkeys.Stats).Result()
	if err != nil {
		t.Fatal(err)
	}
	k := queue.KindPasswordReset
	for _, key := range []string{rkeys.Breaker(k), rkeys.BreakerInfo(k), rkeys.BreakerCount(k), rkeys.BreakerRefused(k),
		rkeys.BreakerPace(k), rkeys.BreakerSendPace(k), rkeys.Held(k), rkeys.Releasing(k)} {
		if s, err := cc.ClusterKeySlot(ctx, key).Result(); err != nil || s != slot {
			t.Errorf("key %q in slot %d (%v), want %d", key, s, err, slot)
		}
	}
}
