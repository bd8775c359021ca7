package guard

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/queue"
)

func payload(to string, ttl time.Duration) *queue.Payload {
	now := time.Now().UTC()
	return &queue.Payload{V: 1, ID: newID(), Kind: queue.KindPasswordReset, To: to, EnqueuedAt: now, ExpiresAt: now.Add(ttl)}
}

func dispatch(t testing.TB, g *Guard, p *queue.Payload, attempt string) queue.Verdict {
	t.Helper()
	v, err := g.Dispatch(context.Background(), p, attempt)
	if err != nil {
		t.Fatalf("Dispatch(%s, %s): %v", p.ID, attempt, err)
	}
	if v.Outcome == queue.Deferred && v.RetryAfter <= 0 {
		t.Errorf("Dispatch deferred with RetryAfter %v, want > 0", v.RetryAfter)
	}
	return v
}

func settle(t testing.TB, g *Guard, p *queue.Payload, attempt string, o queue.Outcome, reason string) {
	t.Helper()
	if err := g.Settle(context.Background(), p, attempt, o, reason); err != nil {
		t.Fatalf("Settle(%s, %s, %s): %v", p.ID, attempt, o, err)
	}
}

func wantDispatch(t testing.TB, what string, v queue.Verdict, allow bool, outcome queue.Outcome, reason string) {
	t.Helper()
	if v.Allow != allow || v.Outcome != outcome || v.Reason != reason {
		t.Errorf("%s = %+v, want allow %v outcome %q reason %q", what, v, allow, outcome, reason)
	}
}

func TestDispatchGlobalRate(t *testing.T) {
	g, rc, _ := newTestGuard(t, `global: { rate: 4/1h, burst: 4 }`, Config{})
	for i := range 4 {
		p := payload(fmt.Sprintf("u%d@d%d.example", i, i), time.Hour)
		wantDispatch(t, fmt.Sprint("send ", i), dispatch(t, g, p, "a"), true, "", "")
	}
	p := payload("late@example.com", time.Hour)
	v := dispatch(t, g, p, "a")
	wantDispatch(t, "fifth", v, false, queue.Deferred, "global")
	// One send per 15 minutes from now on: the retry-after says so.
	if v.RetryAfter < 14*time.Minute || v.RetryAfter > 15*time.Minute {
		t.Errorf("RetryAfter = %v, want about 15m", v.RetryAfter)
	}
	if n, _ := rc.Exists(context.Background(), rkeys.Claim(p.ID)).Result(); n != 0 {
		t.Error("a deferred attempt took the claim")
	}
	if ks := stats(t, g, queue.KindPasswordReset); ks.Deferred["global"] != 1 {
		t.Errorf("stats deferred %v", ks.Deferred)
	}
}

func TestDispatchDomainRate(t *testing.T) {
	g, _, _ := newTestGuard(t, `
global: { rate: 3/1h, burst: 3 }
domains: { slow.example: { rate: 1/1h, burst: 1 } }
`, Config{})
	wantDispatch(t, "slow 1", dispatch(t, g, payload("a@slow.example", time.Hour), "a"), true, "", "")
	v := dispatch(t, g, payload("b@SLOW.example", time.Hour), "a")
	wantDispatch(t, "slow 2", v, false, queue.Deferred, "domain")
	if v.RetryAfter < 59*time.Minute || v.RetryAfter > time.Hour {
		t.Errorf("RetryAfter = %v, want about 1h", v.RetryAfter)
	}
	// The domain's refusal consumed no global rate: two more sends to other
	// domains fit in the global burst of 3, the third does not.
	wantDispatch(t, "other 1", dispatch(t, g, payload("c@fast.example", time.Hour), "a"), true, "", "")
	wantDispatch(t, "other 2", dispatch(t, g, payload("d@fast.example", time.Hour), "a"), true, "", "")
	wantDispatch(t, "other 3", dispatch(t, g, payload("e@fast.example", time.Hour), "a"), false, queue.Deferred, "global")
}

func TestDispatchDefaultDomainRateIsPerDomain(t *testing.T) {
	g, _, _ := newTestGuard(t, `domains: { default: { rate: 1/1h, burst: 1 }, gmail.com: 1/1h }`, Config{})
	wantDispatch(t, "x 1", dispatch(t, g, payload("a@x.example", time.Hour), "a"), true, "", "")
	wantDispatch(t, "y 1", dispatch(t, g, payload("a@y.example", time.Hour), "a"), true, "", "")
	wantDispatch(t, "x 2", dispatch(t, g, payload("b@x.example", time.Hour), "a"), false, queue.Deferred, "domain")
	// googlemail.com is gmail.com's bucket.
	wantDispatch(t, "gmail", dispatch(t, g, payload("a@gmail.com", time.Hour), "a"), true, "", "")
	wantDispatch(t, "googlemail", dispatch(t, g, payload("b@googlemail.com", time.Hour), "a"), false, queue.Deferred, "domain")
}

func TestDispatchIdempotency(t *testing.T) {
	g, _, _ := newTestGuard(t, "", Config{})
	p := payload("once@example.com", time.Hour)
	wantDispatch(t, "first attempt", dispatch(t, g, p, "a1"), true, "", "")
	// A second delivery of the task while the first attempt sends.
	v := dispatch(t, g, p, "a2")
	wantDispatch(t, "concurrent attempt", v, false, queue.Deferred, "claimed")
	if lease := queue.DefaultKinds()[queue.KindPasswordReset].AttemptTimeout() + leaseMargin; v.RetryAfter > lease {
		t.Errorf("RetryAfter %v exceeds the lease %v", v.RetryAfter, lease)
	}
	settle(t, g, p, "a1", queue.Sent, "")
	settle(t, g, p, "a1", queue.Sent, "") // a re-sent Settle
	settle(t, g, p, "a2", queue.Deferred, "")
	wantDispatch(t, "redelivered after sent", dispatch(t, g, p, "a3"), false, queue.Duplicate, "sent")
	wantDispatch(t, "and again", dispatch(t, g, p, "a4"), false, queue.Duplicate, "sent")
	ks := stats(t, g, queue.KindPasswordReset)
	if ks.Outcomes[queue.Sent] != 1 || ks.Redelivered != 2 || ks.Deferred["claimed"] != 1 || ks.Retried != 0 {
		t.Errorf("stats %+v", ks)
	}
}

func TestDispatchSameAttemptTwice(t *testing.T) {
	g, _, _ := newTestGuard(t, `global: { rate: 1/1h, burst: 1 }`, Config{})
	p := payload("twice@example.com", time.Hour)
	wantDispatch(t, "run 1", dispatch(t, g, p, "a1"), true, "", "")
	// The same attempt re-sends the script (lost reply): allowed again, and
	// the global rate was consumed once, not twice: a different email is
	// deferred by exactly one emission interval.
	wantDispatch(t, "run 2", dispatch(t, g, p, "a1"), true, "", "")
	v := dispatch(t, g, payload("other@example.com", time.Hour), "b1")
	if v.Outcome != queue.Deferred || v.RetryAfter > time.Hour {
		t.Errorf("other email = %+v, want deferred within one interval", v)
	}
}

func TestDispatchLeaseExpiry(t *testing.T) {
	g, rc, _ := newTestGuard(t, "", Config{Lease: 200 * time.Millisecond})
	p := payload("crash@example.com", time.Hour)
	wantDispatch(t, "attempt of a worker that dies", dispatch(t, g, p, "dead"), true, "", "")
	v := dispatch(t, g, p, "next")
	wantDispatch(t, "while the lease lives", v, false, queue.Deferred, "claimed")
	if v.RetryAfter > 200*time.Millisecond {
		t.Errorf("RetryAfter %v exceeds the 200ms lease", v.RetryAfter)
	}
	waitGone(t, rc, rkeys.Claim(p.ID))
	wantDispatch(t, "after the lease", dispatch(t, g, p, "next"), true, "", "")
	settle(t, g, p, "next", queue.Sent, "")
	// The dead worker's late Settle changes nothing.
	settle(t, g, p, "dead", queue.Deferred, "")
	wantDispatch(t, "redelivered", dispatch(t, g, p, "third"), false, queue.Duplicate, "sent")
}

func TestDispatchRetryReleasesClaim(t *testing.T) {
	g, _, _ := newTestGuard(t, "", Config{})
	p := payload("retry@example.com", time.Hour)
	wantDispatch(t, "attempt 1", dispatch(t, g, p, "a1"), true, "", "")
	settle(t, g, p, "a1", queue.Deferred, "")
	settle(t, g, p, "a1", "", "") // re-sent: the claim is no longer ours
	wantDispatch(t, "attempt 2", dispatch(t, g, p, "a2"), true, "", "")
	settle(t, g, p, "a2", queue.Failed, "hard_bounce")
	wantDispatch(t, "after failed", dispatch(t, g, p, "a3"), false, queue.Failed, "settled")
	settle(t, g, p, "a3", queue.Sent, "") // a terminal claim never changes
	ks := stats(t, g, queue.KindPasswordReset)
	if ks.Retried != 1 || ks.Outcomes[queue.Failed] != 1 || ks.Reasons[queue.Failed]["hard_bounce"] != 1 || ks.Outcomes[queue.Sent] != 0 {
		t.Errorf("stats %+v", ks)
	}
}

func TestDispatchExpired(t *testing.T) {
	g, _, _ := newTestGuard(t, "", Config{})
	p := payload("late@example.com", -time.Second)
	wantDispatch(t, "expired", dispatch(t, g, p, "a1"), false, queue.Expired, "")
	wantDispatch(t, "expired again", dispatch(t, g, p, "a2"), false, queue.Expired, "settled")
	if ks := stats(t, g, queue.KindPasswordReset); ks.Outcomes[queue.Expired] != 1 {
		t.Errorf("stats %+v, want one expired", ks)
	}
}

func TestDispatchBreakerModes(t *testing.T) {
	g, rc, _ := newTestGuard(t, `
kinds:
  password_reset: { breaker: { learn: { warmup: 0 }, open: hold, hold_max: 1 } }
  notification: { breaker: { learn: { warmup: 0 }, open: shed } }
  verify_email: { breaker: { learn: { warmup: 0 }, open: clamp, probe: 1/1h } }
`, Config{})
	ctx := context.Background()
	for _, k := range []string{queue.KindPasswordReset, queue.KindNotification, queue.KindVerifyEmail} {
		if _, err := g.Trip(ctx, k, ""); err != nil {
			t.Fatal(err)
		}
	}
	p := payload("h@example.com", time.Hour)
	wantDispatch(t, "hold", dispatch(t, g, p, "a1"), false, queue.Held, "breaker")
	wantDispatch(t, "hold re-run", dispatch(t, g, p, "a1"), false, queue.Held, "settled")
	wantDispatch(t, "hold full", dispatch(t, g, payload("h2@example.com", time.Hour), "a1"), false, queue.Shed, "hold_full")
	n := payload("n@example.com", time.Hour)
	n.Kind = queue.KindNotification
	wantDispatch(t, "shed", dispatch(t, g, n, "a1"), false, queue.Shed, "breaker")
	// Clamp paces sends and defers the rest without a terminal outcome.
	v1, v2 := payload("v1@example.com", time.Hour), payload("v2@example.com", time.Hour)
	v1.Kind, v2.Kind = queue.KindVerifyEmail, queue.KindVerifyEmail
	wantDispatch(t, "clamp 1", dispatch(t, g, v1, "a1"), true, "", "")
	v := dispatch(t, g, v2, "a1")
	wantDispatch(t, "clamp 2", v, false, queue.Deferred, "breaker")
	if v.RetryAfter < 59*time.Minute {
		t.Errorf("clamp 2 RetryAfter = %v, want about the probe interval (1h)", v.RetryAfter)
	}
	held, err := rc.HGet(ctx, rkeys.Held(queue.KindPasswordReset), p.ID).Result()
	if err != nil {
		t.Fatal(err)
	}
	if back, err := queue.DecodePayload(heldPayload(held)); err != nil || held[0] != 'd' || back.ID != p.ID {
		t.Errorf("held payload %q: %v", held, err)
	}
}
