package guard

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/queue"
)

// emailAdm returns an admission of a real payload that carries its source,
// account and trust signal, as queue.Client makes.
func emailAdm(t testing.TB, kind, to, source string, trust queue.Trust) (*queue.Admission, *queue.Payload) {
	t.Helper()
	p := realPayload(kind, to)
	p.Source, p.Trust = source, trust
	body, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &queue.Admission{ID: p.ID, Kind: kind, To: to, Source: source, Trust: trust, Payload: body,
		Spec: DefaultPolicy().Kinds()[kind]}, p
}

// deliver admits an email and, if it is queued, dispatches and settles it
// as sent; it returns the verdict and the payload.
func deliver(t testing.TB, g *Guard, kind, to, source string) (queue.Verdict, *queue.Payload) {
	t.Helper()
	a, p := emailAdm(t, kind, to, source, "")
	v := admit(t, g, a)
	if v.Allow {
		p.Lane = v.Lane
		if d := dispatch(t, g, p, "a1"); d.Allow {
			settle(t, g, p, "a1", queue.Sent, "")
		}
	}
	return v, p
}

// TestBreakerOneActor: one source hammering its own account, and one source
// enumerating recipients, at any rate, are refused by their own caps and
// never move the breaker: only eligible requests count towards its rate
// (each source's at most its cap, under the floor), and the refusal trip
// needs many sources.
func TestBreakerOneActor(t *testing.T) {
	g, _, tr := breakerGuard(t, `
kinds:
  password_reset:
    breaker: { learn: { warmup: 0 }, window: 1s, floor: 30/1s, refusal_min: 10/1s, cooldown: 1h }
`, Config{})
	counts := map[string]int{}
	for i := range 3000 {
		v := admit(t, g, adm(queue.KindPasswordReset, "own@example.com", "198.51.100.7"))
		counts[string(v.Outcome)+":"+v.Reason]++
		v = admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("v%d@example.com", i), "203.0.113.9"))
		counts[string(v.Outcome)+":"+v.Reason]++
	}
	if all := tr.list(); len(all) != 0 {
		t.Fatalf("one actor moved the breaker: %+v (outcomes %v)", all, counts)
	}
	// Its own account: one admission, then the dedup window; the
	// enumeration: 20 an hour from its source.
	if counts["queued:"] != 21 || counts["duplicate:"] != 2999 || counts["capped:source"] != 2980 {
		t.Errorf("outcomes %v, want 21 queued, 2999 duplicate, 2980 capped by source", counts)
	}
	if b := breakerOf(t, g, queue.KindPasswordReset); b.State != BreakerClosed {
		t.Errorf("breaker %+v", b)
	}
}

// TestBreakerWarmup: a fresh kind learns before it judges. Organic traffic
// well above the floor is not parked while warming up; the rate ceiling
// holds meanwhile; once warm, the surge trip judges against what was
// learned.
func TestBreakerWarmup(t *testing.T) {
	g, _, tr := breakerGuard(t, `
kinds:
  password_reset:
    dedup_window: 0
    per_recipient: []
    per_source: []
    per_group: {}
    breaker:
      window: 100ms
      floor: 5/100ms
      learn: { warmup: 1s, horizon: 10s, day: 1s }
      ceilings: { rate: 80/100ms }
      cooldown: 1h
`, Config{})
	// At most 4 × the floor, paced, for most of the warm-up. Each request
	// waits 5 ms after the one before: a stalled machine sends fewer, never
	// a catch-up burst that the ceiling would rightly trip on.
	start := time.Now()
	queued := 0
	for i := 0; time.Since(start) < 900*time.Millisecond; i++ {
		time.Sleep(5 * time.Millisecond)
		if v := admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("w%d@example.com", i), fmt.Sprint("10.0.0.", i%200))); v.Allow {
			queued++
		}
	}
	if all := tr.list(); len(all) != 0 {
		t.Fatalf("organic traffic at 4x the floor tripped a warming breaker: %+v", all)
	}
	time.Sleep(time.Until(start.Add(1100 * time.Millisecond)))
	b := breakerOf(t, g, queue.KindPasswordReset)
	if b.Warming || b.Baseline <= 0 || b.Threshold < 5*b.Baseline {
		t.Errorf("after warm-up: %+v", b)
	}
	t.Logf("queued %d while warming; then baseline %.1f/s, threshold %.1f/s, ceiling %.1f/s", queued, b.Baseline, b.Threshold, b.Ceiling)
	// A burst above the ceiling trips it, reason ceiling, even now.
	for i := range 2000 {
		admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("burst%d@example.com", i), fmt.Sprint("10.1.0.", i%200)))
	}
	open := tr.wait(t, BreakerOpen)
	if open.Reason != ReasonSurge && open.Reason != ReasonCeiling {
		t.Errorf("transition %+v, want surge or ceiling", open)
	}
}

// TestBreakerCeilingWhileWarming: during warm-up the surge trip does not
// fire, the ceiling does, with a reason of its own.
func TestBreakerCeilingWhileWarming(t *testing.T) {
	g, _, tr := breakerGuard(t, `
kinds:
  password_reset:
    dedup_window: 0
    per_recipient: []
    per_source: []
    per_group: {}
    breaker: { window: 1s, floor: 5/1s, ceilings: { rate: 50/1s }, cooldown: 1h }
`, Config{})
	for i := range 49 {
		wantVerdict(t, "under the ceiling", admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("c%d@example.com", i), "")), queue.Queued, "")
	}
	if b := breakerOf(t, g, queue.KindPasswordReset); !b.Warming || b.Threshold != 0 || b.Ceiling != 50 {
		t.Errorf("warming breaker %+v, want no surge threshold and a ceiling of 50/s", b)
	}
	for i := range 5 {
		admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("d%d@example.com", i), ""))
	}
	if open := tr.wait(t, BreakerOpen); open.Reason != ReasonCeiling {
		t.Errorf("transition %+v, want reason ceiling", open)
	}
}

// TestBreakerBudget: the budget of new recipients trips the breaker
// (reason budget); recipients seen before do not use it.
func TestBreakerBudget(t *testing.T) {
	g, _, tr := breakerGuard(t, `
kinds:
  password_reset:
    dedup_window: 0
    per_recipient: [5/1h]
    per_source: []
    per_group: {}
    breaker: { window: 100ms, surge_factor: 0, ceilings: { rate: off, new_recipients: 20/1h }, cooldown: 1h, lanes: off }
`, Config{})
	for i := range 20 {
		wantVerdict(t, "new", admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("b%d@example.com", i), "")), queue.Queued, "")
	}
	for range 3 {
		wantVerdict(t, "seen before", admit(t, g, adm(queue.KindPasswordReset, "b0@example.com", "")), queue.Queued, "")
	}
	if b := breakerOf(t, g, queue.KindPasswordReset); b.Budget != 20 || b.BudgetUsed != 20 || b.BudgetPeriod != time.Hour {
		t.Errorf("budget %d used %d per %v, want 20 used of 20 per 1h", b.Budget, b.BudgetUsed, b.BudgetPeriod)
	}
	wantVerdict(t, "over the budget", admit(t, g, adm(queue.KindPasswordReset, "b20@example.com", "")), queue.Held, "breaker")
	if open := tr.wait(t, BreakerOpen); open.Reason != ReasonBudget {
		t.Errorf("transition %+v, want reason budget", open)
	}
}

// TestBreakerLearningBounded drives the best ramp against the learning:
// every window the attacker sends 0.9 × the current threshold (it can read
// it), for three compressed days. Without bounds the baseline would rise
// about 6% a window (29× over 60 windows); it rises at most max_daily_rise
// a day, and the breaker never trips.
func TestBreakerLearningBounded(t *testing.T) {
	g, _, tr := breakerGuard(t, `
kinds:
  password_reset:
    dedup_window: 0
    per_recipient: []
    per_source: []
    per_group: {}
    breaker:
      window: 100ms
      floor: 10/100ms
      learn: { warmup: 0, horizon: 2s, day: 2s, max_rise: 0.1, max_daily_rise: 2 }
      ceilings: { rate: off, new_recipients: off }
      redemption: off
      cooldown: 1h
`, Config{})
	ctx := context.Background()
	began := time.Now()
	dayStart, dayBase := began, 0.0
	n := 0
	for w := range 60 {
		b, err := g.Breaker(ctx, queue.KindPasswordReset)
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(dayStart) >= 2*time.Second {
			dayStart, dayBase = time.Now(), b.Baseline
		}
		// The daily bound: the baseline at the day's start, or the floor
		// rate (100/s), doubled; a window's lag of slack for the day
		// boundary falling between two reads.
		if limit := max(dayBase, 100) * 2 * 2; b.Baseline > limit {
			t.Fatalf("window %d: baseline %.1f/s above the daily bound %.1f/s", w, b.Baseline, limit)
		}
		// 0.9 × the threshold over this window, spread over it.
		send := int(0.9 * b.Threshold * 0.1)
		end := time.Now().Add(100 * time.Millisecond)
		for i := range send {
			admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("f%d@example.com", n), fmt.Sprint("s", n)))
			n++
			if left := time.Until(end); left > 0 {
				time.Sleep(left / time.Duration(send-i))
			}
		}
		time.Sleep(time.Until(end))
	}
	b := breakerOf(t, g, queue.KindPasswordReset)
	if len(tr.list()) != 0 && tr.list()[0].Reason != ReasonSurge {
		t.Errorf("transitions %+v", tr.list())
	}
	// From the floor rate, at most doubled each compressed day begun (a
	// slow machine stretches the 60 windows over more days).
	days := int(time.Since(began)/(2*time.Second)) + 2
	if limit := 100 * mathPow(2, days); b.Baseline > limit {
		t.Errorf("baseline %.1f/s after %d compressed days of the best ramp, want at most %.0f/s", b.Baseline, days, limit)
	}
	t.Logf("after %d requests over 60 windows: baseline %.1f/s, threshold %.1f/s (unbounded learning: about %.0f/s)",
		n, b.Baseline, b.Threshold, 100*mathPow(1.058, 60))
}

func mathPow(x float64, n int) float64 {
	r := 1.0
	for range n {
		r *= x
	}
	return r
}

// TestFeedback: Confirm counts once and gives the source trust; Report
// suppresses the recipient for the kind and takes the trust away; neither
// knows an email that was not sent.
func TestFeedback(t *testing.T) {
	g, rc, _ := breakerGuard(t, `
global: { rate: 100000/1s }
domains: { default: 100000/1s }
`, Config{})
	ctx := context.Background()
	v, p := deliver(t, g, queue.KindPasswordReset, "alice@example.com", "192.0.2.10")
	wantVerdict(t, "first", v, queue.Queued, "")
	if err := g.Confirm(ctx, p.ID); err != nil {
		t.Fatalf("Confirm: %v", err)
	}
	if err := g.Confirm(ctx, p.ID); !errors.Is(err, queue.ErrUnknownEmail) {
		t.Errorf("second Confirm = %v, want ErrUnknownEmail", err)
	}
	trust := rkeys.SourceTrust(rkeys.Source(queue.KindPasswordReset, "192.0.2.10"))
	group := rkeys.GroupTrust(rkeys.Group(queue.KindPasswordReset, "192.0.2.0/24"))
	if n, _ := rc.Exists(ctx, trust, group).Result(); n != 2 {
		t.Errorf("trust keys after Confirm: %d of 2", n)
	}
	if err := g.Confirm(ctx, newID()); !errors.Is(err, queue.ErrUnknownEmail) {
		t.Errorf("Confirm(unknown) = %v, want ErrUnknownEmail", err)
	}
	// Held, never sent: no feedback.
	a, held := emailAdm(t, queue.KindVerifyEmail, "held@example.com", "", "")
	if _, err := g.Trip(ctx, queue.KindVerifyEmail, ""); err != nil {
		t.Fatal(err)
	}
	wantVerdict(t, "held", admit(t, g, a), queue.Held, "breaker")
	if err := g.Report(ctx, held.ID); !errors.Is(err, queue.ErrUnknownEmail) {
		t.Errorf("Report(held) = %v, want ErrUnknownEmail", err)
	}

	_, p2 := deliver(t, g, queue.KindPasswordReset, "bob@example.com", "192.0.2.11")
	if err := g.Report(ctx, p2.ID); err != nil {
		t.Fatalf("Report: %v", err)
	}
	if n, _ := rc.Exists(ctx, group).Result(); n != 0 {
		t.Error("the group kept its trust after a report")
	}
	// Suppressed for this kind, in any variant of the address; not for others.
	wantVerdict(t, "reported recipient", admit(t, g, adm(queue.KindPasswordReset, "Bob+x@Example.com", "192.0.2.99")), queue.Suppressed, "reported")
	wantVerdict(t, "another kind", admit(t, g, adm(queue.KindNotification, "bob@example.com", "")), queue.Queued, "")
	ks := stats(t, g, queue.KindPasswordReset)
	if ks.Confirmed != 1 || ks.Reported != 1 {
		t.Errorf("stats confirmed %d reported %d, want 1 and 1", ks.Confirmed, ks.Reported)
	}
	conserved(t, g)
}

// TestBreakerLanes: an open breaker still lets through, each lane paced on
// its own and through every cap, what an attack cannot produce in bulk:
// trusted requests, sources whose emails were redeemed before it opened,
// and a recipient who asks again after a minute. What a lane admits is not
// held again at dispatch.
func TestBreakerLanes(t *testing.T) {
	g, _, _ := breakerGuard(t, `
global: { rate: 100000/1s }
domains: { default: 100000/1s }
kinds:
  password_reset:
    breaker: { lanes: { rate: 1/1h, burst: 1, rerequest_after: 1s }, cooldown: 1h }
`, Config{})
	ctx := context.Background()
	// A source that redeemed an email before the trip.
	_, early := deliver(t, g, queue.KindPasswordReset, "carol@example.com", "198.51.100.20")
	if err := g.Confirm(ctx, early.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Trip(ctx, queue.KindPasswordReset, ReasonSurge); err != nil {
		t.Fatal(err)
	}

	a, p := emailAdm(t, queue.KindPasswordReset, "dave@example.com", "203.0.113.1", queue.TrustDevice)
	v := admit(t, g, a)
	wantVerdict(t, "trusted", v, queue.Queued, LaneTrusted)
	if v.Lane != LaneTrusted {
		t.Errorf("verdict lane %q", v.Lane)
	}
	p.Lane = v.Lane
	wantDispatch(t, "lane email while open", dispatch(t, g, p, "a"), true, "", "")
	// Each lane is paced on its own: one an hour here.
	a, _ = emailAdm(t, queue.KindPasswordReset, "erin@example.com", "203.0.113.2", queue.TrustChallenge)
	wantVerdict(t, "trusted lane used up", admit(t, g, a), queue.Held, "breaker")

	a, _ = emailAdm(t, queue.KindPasswordReset, "carol2@example.com", "198.51.100.20", "")
	wantVerdict(t, "redeemed source", admit(t, g, a), queue.Queued, LaneRedeemed)
	a, _ = emailAdm(t, queue.KindPasswordReset, "carol3@example.com", "198.51.100.77", "")
	wantVerdict(t, "redeemed lane used up", admit(t, g, a), queue.Held, "breaker")

	a, _ = emailAdm(t, queue.KindPasswordReset, "gina@example.com", "203.0.113.4", "")
	wantVerdict(t, "first request", admit(t, g, a), queue.Held, "breaker")
	a, _ = emailAdm(t, queue.KindPasswordReset, "gina@example.com", "203.0.113.4", "")
	wantVerdict(t, "asks again at once", admit(t, g, a), queue.Duplicate, "held")
	time.Sleep(1100 * time.Millisecond) // the re-request lane opens one rerequest_after after the hold
	a, _ = emailAdm(t, queue.KindPasswordReset, "gina@example.com", "203.0.113.4", "")
	wantVerdict(t, "asks again later", admit(t, g, a), queue.Queued, LaneRerequest)
	ks := stats(t, g, queue.KindPasswordReset)
	if ks.Lanes[LaneTrusted] != 1 || ks.Lanes[LaneRedeemed] != 1 || ks.Lanes[LaneRerequest] != 1 {
		t.Errorf("lane counts %v", ks.Lanes)
	}
	conserved(t, g)
}

// TestHoldCountsAgainstSource: while the breaker is open, one source parks
// no more than its cap, and one network no more than its group's.
func TestHoldCountsAgainstSource(t *testing.T) {
	g, _, _ := breakerGuard(t, `
kinds:
  password_reset:
    per_source: [20/1h]
    per_group: { v4/24: [50/1h], v6/64: [20/1h] }
    breaker: { cooldown: 1h }
`, Config{})
	ctx := context.Background()
	if _, err := g.Trip(ctx, queue.KindPasswordReset, ReasonSurge); err != nil {
		t.Fatal(err)
	}
	victim := 0
	count := func(n int, source func(i int) string) map[queue.Outcome]int {
		out := map[queue.Outcome]int{}
		for i := range n {
			victim++
			a, _ := emailAdm(t, queue.KindPasswordReset, fmt.Sprintf("victim%d@example.com", victim), source(i), "")
			out[admit(t, g, a).Outcome]++
		}
		return out
	}
	if got := count(1000, func(int) string { return "203.0.113.50" }); got[queue.Held] != 20 || got[queue.Capped] != 980 {
		t.Errorf("one source: %v, want 20 held", got)
	}
	got := count(1000, func(i int) string { return fmt.Sprintf("198.51.100.%d", i%250) })
	if got[queue.Held] != 50 {
		t.Errorf("one /24 from 250 addresses: %v, want 50 held", got)
	}
	// IPv6 privacy addresses of one /64, and the mapped form of an IPv4
	// source already at its cap.
	if got := count(200, func(i int) string { return fmt.Sprintf("2001:db8:1:2::%x", i+1) }); got[queue.Held] != 20 {
		t.Errorf("one /64: %v, want 20 held", got)
	}
	if got := count(5, func(int) string { return "::ffff:203.0.113.50" }); got[queue.Held] != 0 {
		t.Errorf("IPv4-mapped form of a capped source: %v, want none held", got)
	}
	if b := breakerOf(t, g, queue.KindPasswordReset); b.Held != 90 {
		t.Errorf("held %d, want 90", b.Held)
	}
}

// TestAccountSharesCap: with an account, addresses that are not variants
// of one another still share one cap.
func TestAccountSharesCap(t *testing.T) {
	g, _, _ := newTestGuard(t, `
kinds:
  password_reset: { dedup_window: 0, per_recipient: [2/1h], per_source: [] }
`, Config{})
	for i, to := range []string{"one@example.com", "two@example.net", "three@example.org"} {
		a := adm(queue.KindPasswordReset, to, "")
		a.Account = "user-42"
		want := queue.Queued
		if i == 2 {
			want = queue.Capped
		}
		if v := admit(t, g, a); v.Outcome != want {
			t.Errorf("%s for account user-42 = %+v, want %s", to, v, want)
		}
	}
}

// TestRelease: by default a release releases only the held emails that
// pass a lane now; a dry run counts them by lane; the rest stay held, and
// expire; -all releases them too; a recipient served meanwhile is not sent
// a second email.
func TestRelease(t *testing.T) {
	g, rc, _ := breakerGuard(t, `
global: { rate: 100000/1s }
domains: { default: 100000/1s }
kinds:
  password_reset:
    ttl: 3s
    breaker: { lanes: { rate: 1/1h, burst: 1, rerequest_after: 1s }, cooldown: 1h }
`, Config{})
	ctx := context.Background()
	_, early := deliver(t, g, queue.KindPasswordReset, "known@example.com", "198.51.100.20")
	if err := g.Confirm(ctx, early.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Trip(ctx, queue.KindPasswordReset, ReasonSurge); err != nil {
		t.Fatal(err)
	}
	// Use each lane up, so that the next of each is held.
	for _, tr := range []queue.Trust{queue.TrustDevice, ""} {
		src := "203.0.113.200"
		if tr == "" {
			src = "198.51.100.20"
		}
		a, _ := emailAdm(t, queue.KindPasswordReset, "first-"+string(tr)+"@example.com", src, tr)
		admit(t, g, a)
	}
	hold := func(to, source string, tr queue.Trust) {
		t.Helper()
		a, _ := emailAdm(t, queue.KindPasswordReset, to, source, tr)
		wantVerdict(t, "held "+to, admit(t, g, a), queue.Held, "breaker")
	}
	hold("trusted@example.com", "203.0.113.1", queue.TrustDevice)
	hold("redeemed@example.com", "198.51.100.30", "")
	hold("asker@example.com", "203.0.113.2", "")
	for i := range 5 {
		hold(fmt.Sprintf("victim%d@example.com", i), fmt.Sprint("10.9.9.", i), "")
	}
	// The asker asks again after the lane's delay; the lane is used up by
	// another re-request first, so it stays held, marked as asked again.
	hold("other@example.com", "203.0.113.3", "")
	time.Sleep(1100 * time.Millisecond)
	a, _ := emailAdm(t, queue.KindPasswordReset, "other@example.com", "203.0.113.3", "")
	wantVerdict(t, "re-request", admit(t, g, a), queue.Queued, LaneRerequest)
	a, _ = emailAdm(t, queue.KindPasswordReset, "asker@example.com", "203.0.113.2", "")
	wantVerdict(t, "re-request, lane used up", admit(t, g, a), queue.Duplicate, "held")

	dry, err := g.Release(ctx, queue.KindPasswordReset, ReleaseOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{LaneTrusted: 1, LaneRedeemed: 1, LaneRerequest: 1, "none": 5, "superseded": 1}
	if fmt.Sprint(dry.Lanes) != fmt.Sprint(want) || dry.Released != 0 {
		t.Errorf("dry run %+v, want lanes %v", dry, want)
	}
	if _, err := g.Reset(ctx, queue.KindPasswordReset); err != nil {
		t.Fatal(err)
	}
	res, err := g.Release(ctx, queue.KindPasswordReset, ReleaseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Released != 3 || res.Kept != 5 || res.Lanes["superseded"] != 1 {
		t.Errorf("release %+v, want 3 released, 5 kept, 1 superseded", res)
	}
	// The kept ones expire with the kind's TTL and are counted so.
	time.Sleep(time.Until(time.Now().Add(3 * time.Second)))
	n, err := g.Sweep(ctx)
	if err != nil || n != 5 {
		t.Errorf("Sweep = %d, %v; want 5", n, err)
	}
	ks := stats(t, g, queue.KindPasswordReset)
	if ks.Outcomes[queue.Held] != 0 || ks.Reasons[queue.Expired]["held"] != 5 || ks.Reasons[queue.Duplicate]["superseded"] != 1 {
		t.Errorf("stats %+v", ks)
	}
	if n, _ := rc.HLen(ctx, rkeys.Held(queue.KindPasswordReset)).Result(); n != 0 {
		t.Errorf("%d left held", n)
	}
	conserved(t, g)
}

// TestReleaseAll: -all releases every held email, still through
// suppression and the recipient's caps.
func TestReleaseAll(t *testing.T) {
	g, _, _ := breakerGuard(t, `
kinds:
  password_reset: { dedup_window: 0, per_recipient: [1/1h], per_source: [], breaker: { cooldown: 1h } }
`, Config{})
	ctx := context.Background()
	if _, err := g.Trip(ctx, queue.KindPasswordReset, ""); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{"gone@example.com", "a@example.com", "b@example.com"} {
		wantVerdict(t, "held "+to, admit(t, g, realAdm(t, queue.KindPasswordReset, to, "")), queue.Held, "breaker")
	}
	if err := g.Suppress(ctx, "gone@example.com", "hard_bounce"); err != nil {
		t.Fatal(err)
	}
	res, err := g.Release(ctx, queue.KindPasswordReset, ReleaseOptions{All: true})
	if err != nil || res.Released != 2 || res.Lanes["none"] != 2 || res.Refused["suppressed:"] != 1 {
		t.Errorf("release all = %+v, %v; want 2 released, 1 suppressed", res, err)
	}
	conserved(t, g)
}

// TestBreakerRedemptionCollapse: the application confirms about 70% of
// the links; the breaker learns that share. Then mail that nobody redeems
// (an attack under every rate threshold) makes a judged bucket's share
// collapse, and the breaker opens for redemption. A source whose emails
// are never redeemed meanwhile has its cap shrunk.
func TestBreakerRedemptionCollapse(t *testing.T) {
	g, _, tr := breakerGuard(t, `
global: { rate: 100000/1s }
domains: { default: 100000/1s }
kinds:
  password_reset:
    dedup_window: 0
    per_recipient: []
    per_source: [10/1h]
    per_group: {}
    untrusted_after: 5
    breaker:
      window: 50ms
      surge_factor: 0
      refusal_ratio: 0
      learn: { warmup: 0, horizon: 20s, day: 20s }
      ceilings: { rate: off, new_recipients: off }
      redemption: { bucket: 200ms, lag: 100ms, min_sends: 10, min_sources: 3, buckets: 3, collapse: 0.5 }
      cooldown: 1h
`, Config{})
	ctx := context.Background()
	n := 0
	send := func(confirm bool) {
		n++
		v, p := deliver(t, g, queue.KindPasswordReset, fmt.Sprintf("u%d@example.com", n), fmt.Sprintf("10.%d.0.1", n%50))
		if v.Allow && confirm {
			if err := g.Confirm(ctx, p.ID); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	deadline := time.Now().Add(20 * time.Second)
	for b := breakerOf(t, g, queue.KindPasswordReset); b.Redemption < 0; b = breakerOf(t, g, queue.KindPasswordReset) {
		if time.Now().After(deadline) {
			t.Fatalf("redemption share never established: %+v", b)
		}
		for range 20 {
			send(n%10 < 7)
		}
	}
	b := breakerOf(t, g, queue.KindPasswordReset)
	if b.Redemption < 0.5 || b.Redemption > 0.9 {
		t.Errorf("learned share %.2f after 70%% confirmed", b.Redemption)
	}
	if len(tr.list()) != 0 {
		t.Fatalf("organic traffic moved the breaker: %+v", tr.list())
	}
	// A source that never redeems loses its full cap once its emails are
	// older than the lag.
	for i := range 5 {
		wantVerdict(t, "unredeemed source", admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("x%d@example.com", i), "192.0.2.66")), queue.Queued, "")
	}
	time.Sleep(150 * time.Millisecond)
	wantVerdict(t, "sixth from it", admit(t, g, adm(queue.KindPasswordReset, "x5@example.com", "192.0.2.66")), queue.Capped, "unredeemed")
	// Now nobody redeems.
	for tr.list() == nil && time.Now().Before(deadline) {
		send(false)
	}
	open := tr.wait(t, BreakerOpen)
	if open.Reason != ReasonRedemption {
		t.Errorf("transition %+v, want reason redemption", open)
	}
	t.Logf("learned share %.2f; opened %+v", b.Redemption, open)
}

// TestRerequestLaneSources: the re-request lane lets a user who asks again
// through, but not a source that asked for many recipients: an attack's
// second asks cannot fill it.
func TestRerequestLaneSources(t *testing.T) {
	g, _, _ := breakerGuard(t, `
global: { rate: 100000/1s }
domains: { default: 100000/1s }
kinds:
  password_reset:
    breaker: { lanes: { rate: 1000/1s, rerequest_after: 1s, rerequest_sources: 2 }, cooldown: 1h }
`, Config{})
	ctx := context.Background()
	if _, err := g.Trip(ctx, queue.KindPasswordReset, ReasonSurge); err != nil {
		t.Fatal(err)
	}
	ask := func(to, source string) queue.Verdict {
		a, _ := emailAdm(t, queue.KindPasswordReset, to, source, "")
		return admit(t, g, a)
	}
	wantVerdict(t, "user asks", ask("user@example.com", "203.0.113.9"), queue.Held, "breaker")
	for i := range 3 {
		wantVerdict(t, "attack asks", ask(fmt.Sprintf("victim%d@example.com", i), "198.51.100.50"), queue.Held, "breaker")
	}
	time.Sleep(1100 * time.Millisecond) // held emails become a re-request's after rerequest_after
	wantVerdict(t, "user asks again", ask("user@example.com", "203.0.113.9"), queue.Queued, LaneRerequest)
	wantVerdict(t, "attack asks again", ask("victim0@example.com", "198.51.100.50"), queue.Duplicate, "held")
	// Nor does a release take the attack's second ask for a user's.
	res, err := g.Release(ctx, queue.KindPasswordReset, ReleaseOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Lanes[LaneRerequest] != 0 || res.Lanes["none"] != 3 {
		t.Errorf("dry run lanes %v, want the attack's 3 in none and no rerequest", res.Lanes)
	}
	conserved(t, g)
}

// TestRerequestAfterDispatchHold: a user admitted just before the trip
// and held at dispatch asks again; the admission in the dedup window does
// not refuse them: the re-request lane takes them like any held user.
func TestRerequestAfterDispatchHold(t *testing.T) {
	g, _, _ := breakerGuard(t, `
global: { rate: 100000/1s }
domains: { default: 100000/1s }
kinds:
  password_reset:
    breaker: { lanes: { rate: 1000/1s, rerequest_after: 1s }, cooldown: 1h }
`, Config{})
	ctx := context.Background()
	a, p := emailAdm(t, queue.KindPasswordReset, "early@example.com", "203.0.113.5", "")
	wantVerdict(t, "before the trip", admit(t, g, a), queue.Queued, "")
	if _, err := g.Trip(ctx, queue.KindPasswordReset, ReasonSurge); err != nil {
		t.Fatal(err)
	}
	if v := dispatch(t, g, p, "a"); v.Allow || v.Outcome != queue.Held {
		t.Fatalf("dispatch while open = %+v, want held", v)
	}
	ask := func() queue.Verdict {
		a, _ := emailAdm(t, queue.KindPasswordReset, "early@example.com", "203.0.113.5", "")
		return admit(t, g, a)
	}
	wantVerdict(t, "asks again at once", ask(), queue.Duplicate, "held")
	time.Sleep(1100 * time.Millisecond) // the held email becomes re-requestable after rerequest_after
	wantVerdict(t, "asks again later", ask(), queue.Queued, LaneRerequest)
	conserved(t, g)
}

// TestLaneBurst: a lane lets its burst through back to back, then its
// pace: users who ask at the same moment are not refused for it.
func TestLaneBurst(t *testing.T) {
	g, _, _ := breakerGuard(t, `
global: { rate: 100000/1s }
domains: { default: 100000/1s }
kinds:
  password_reset:
    breaker: { lanes: { rate: 1/1h, burst: 3 }, cooldown: 1h }
`, Config{})
	if _, err := g.Trip(context.Background(), queue.KindPasswordReset, ReasonSurge); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		a, _ := emailAdm(t, queue.KindPasswordReset, fmt.Sprintf("u%d@example.com", i), fmt.Sprintf("203.0.113.%d", i), queue.TrustDevice)
		if i < 3 {
			wantVerdict(t, "within the burst", admit(t, g, a), queue.Queued, LaneTrusted)
		} else {
			wantVerdict(t, "past the burst", admit(t, g, a), queue.Held, "breaker")
		}
	}
	conserved(t, g)
}
