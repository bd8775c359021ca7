package guard

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/floodgate-dev/floodgate/queue"
)

func TestRecordBounce(t *testing.T) {
	reg := prometheus.NewRegistry()
	g, _, _ := newTestGuard(t, "", Config{Registerer: reg})
	ctx := context.Background()
	sent := g.NewSentCounter(0)
	for range 8 {
		sent.Add(queue.KindPasswordReset, "someone@example.com")
	}
	sent.Add(queue.KindPasswordReset, "someone@gmail.com")
	sent.Add(queue.KindNotification, "someone@gmail.com")
	if err := sent.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	id := newID()
	hard := Bounce{Type: BounceHard, Source: SourceDSN, Kind: queue.KindPasswordReset, EmailID: id,
		Recipient: "Dead+tag@Example.com", Status: "5.1.1"}
	tests := []struct {
		name string
		f    Bounce
		want BounceResult
	}{
		{"hard bounce", hard, BounceResult{Suppressed: true, Counted: true}},
		{"same bounce again", hard, BounceResult{Suppressed: true, Counted: false}},
		{"delay", Bounce{Type: BounceSoft, Source: SourceDSN, Kind: queue.KindPasswordReset, EmailID: newID(), Recipient: "slow@example.com"},
			BounceResult{Counted: true}},
		{"complaint", Bounce{Type: BounceComplaint, Source: SourceARF, Kind: queue.KindNotification, EmailID: newID(), Recipient: "angry@gmail.com"},
			BounceResult{Suppressed: true, Counted: true}},
		{"provider event", Bounce{Type: BounceHard, Source: SourceSendGrid, EventID: "ev1", Recipient: "gone@example.org"},
			BounceResult{Suppressed: true, Counted: true}},
		{"provider event again", Bounce{Type: BounceHard, Source: SourceSendGrid, EventID: "ev1", Recipient: "gone@example.org"},
			BounceResult{Suppressed: true, Counted: false}},
		{"no recipient", Bounce{Type: BounceComplaint, Source: SourceARF, Kind: "nosuchkind"},
			BounceResult{Counted: true}},
	}
	for _, tt := range tests {
		got, err := g.RecordBounce(ctx, tt.f)
		if err != nil || got != tt.want {
			t.Errorf("%s: RecordBounce = %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
	}
	for addr, want := range map[string]Suppression{
		"dead@example.com":  {Reason: "hard_bounce", Source: SourceDSN},
		"angry@gmail.com":   {Reason: "complaint", Source: SourceARF},
		"gone@example.org":  {Reason: "hard_bounce", Source: SourceSendGrid},
		"slow@example.com":  {},
		"other@example.com": {},
	} {
		s, ok, err := g.LookupSuppression(ctx, addr)
		if err != nil || ok != (want.Reason != "") || s.Reason != want.Reason || s.Source != want.Source {
			t.Errorf("LookupSuppression(%q) = %+v, %v, %v; want %+v", addr, s, ok, err, want)
		}
	}
	wantVerdict(t, "bounced recipient", admit(t, g, adm(queue.KindVerifyEmail, "dead@example.com", "s")), queue.Suppressed, "")

	for _, bad := range []Bounce{{Type: "bounce", Source: SourceDSN}, {Type: BounceHard, Source: "Bad Source"}} {
		if _, err := g.RecordBounce(ctx, bad); err == nil {
			t.Errorf("RecordBounce(%+v) accepted", bad)
		}
	}
	if err := g.RefuseBounce(ctx, SourceDSN, "forged"); err != nil {
		t.Fatal(err)
	}
	if err := g.RefuseBounce(ctx, SourceDSN, "Forged Token!"); err != nil {
		t.Fatal(err)
	}

	st, err := g.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fs := st.Bounces
	pr := fs.Kinds[queue.KindPasswordReset]
	if pr == nil || pr.Sent != 9 || pr.Hard != 1 || pr.Soft != 1 || pr.BounceRate != 1.0/9 {
		t.Errorf("bounces of password_reset = %+v, want 9 sent, 1 hard, 1 soft, rate 1/9", pr)
	}
	if n := fs.Kinds[queue.KindNotification]; n == nil || n.Sent != 1 || n.Complaints != 1 || n.ComplaintRate != 1 {
		t.Errorf("bounces of notification = %+v", n)
	}
	if u := fs.Kinds[UnknownKind]; u == nil || u.Hard != 1 || u.Complaints != 1 {
		t.Errorf("bounces of unknown kinds = %+v", u)
	}
	if gm := fs.Domains["gmail.com"]; gm == nil || gm.Sent != 2 || gm.Complaints != 1 || gm.ComplaintRate != 0.5 {
		t.Errorf("bounces of gmail.com = %+v", gm)
	}
	if o := fs.Domains[OtherDomain]; o == nil || o.Sent != 8 || o.Hard != 2 {
		t.Errorf("bounces of other domains = %+v", o)
	}
	if len(fs.Domains) != 2 {
		t.Errorf("domains %v: want gmail.com and other only", fs.Domains)
	}
	if fs.Refused[SourceDSN]["forged"] != 1 || fs.Refused[SourceDSN]["other"] != 1 {
		t.Errorf("refused = %v", fs.Refused)
	}

	reg.MustRegister(g.BounceCollector())
	got := gather(t, reg)
	for name, want := range map[string]float64{
		`floodgate_bounces_total{domain="other",kind="password_reset",source="dsn",type="hard"}`:        1,
		`floodgate_bounces_total{domain="gmail.com",kind="notification",source="arf",type="complaint"}`: 1,
		`floodgate_bounces_refused_total{reason="forged",source="dsn"}`:                                 1,
		`floodgate_bounces_sent_total{domain="other",kind="password_reset"}`:                            8,
		`floodgate_bounces_window{domain="gmail.com",kind="password_reset",type="sent"}`:                1,
		`floodgate_kind_bounce_rate{kind="password_reset"}`:                                             1.0 / 9,
		`floodgate_domain_complaint_rate{domain="gmail.com"}`:                                           0.5,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
}

func TestSentCounterShutdownFlushes(t *testing.T) {
	g, _, _ := newTestGuard(t, "", Config{})
	ctx := context.Background()
	c := g.NewSentCounter(0)
	c.Start()
	c.Add(queue.KindNotification, "a@example.com")
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	fs, err := g.BounceStats(ctx)
	if err != nil || fs.Kinds[queue.KindNotification].Sent != 1 {
		t.Fatalf("after Shutdown: %+v, %v; want 1 sent", fs.Kinds[queue.KindNotification], err)
	}
}

// gather returns every sample of reg by name{labels}.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+`="`+l.GetValue()+`"`)
			}
			out[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func TestNonce(t *testing.T) {
	g, _, _ := newTestGuard(t, "", Config{})
	ctx := context.Background()
	for i, want := range []bool{true, false} {
		if ok, err := g.ClaimNonce(ctx, "mailgun", "tok", time.Minute); err != nil || ok != want {
			t.Fatalf("claim %d = %v, %v; want %v", i+1, ok, err, want)
		}
	}
	if ok, _ := g.ClaimNonce(ctx, "sendgrid", "tok", time.Minute); !ok {
		t.Error("scopes share nonces")
	}
	if err := g.ReleaseNonce(ctx, "mailgun", "tok"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := g.ClaimNonce(ctx, "mailgun", "tok", time.Minute); !ok {
		t.Error("a released nonce is still claimed")
	}
}

func TestBounceTrip(t *testing.T) {
	var mu sync.Mutex
	var trans []BreakerTransition
	g, _, _ := newTestGuard(t, `
kinds:
  password_reset:
    breaker: {bounces: {min_sends: 10, ratio: 0.1, complaint_ratio: 0}}
`, Config{OnTransition: func(tr BreakerTransition) { mu.Lock(); trans = append(trans, tr); mu.Unlock() }})
	ctx := context.Background()
	sent := g.NewSentCounter(0)
	for i := range 20 {
		sent.Add(queue.KindPasswordReset, fmt.Sprintf("u%d@example.com", i))
		sent.Add(queue.KindNotification, fmt.Sprintf("u%d@example.com", i))
	}
	if err := sent.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	bounce := func(kind, to, typ string) BounceResult {
		t.Helper()
		res, err := g.RecordBounce(ctx, Bounce{Type: typ, Source: SourceDSN, Kind: kind, EmailID: newID(), Recipient: to})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// Soft bounces, and complaints (their trip is off here), do not trip.
	for i := range 5 {
		bounce(queue.KindPasswordReset, fmt.Sprintf("s%d@example.com", i), BounceSoft)
	}
	if res := bounce(queue.KindPasswordReset, "c@example.com", BounceComplaint); res.Tripped {
		t.Fatal("a complaint tripped with complaint_ratio 0")
	}
	if res := bounce(queue.KindPasswordReset, "u0@example.com", BounceHard); res.Tripped {
		t.Fatal("tripped at 1 hard bounce in 20 sent (5%), threshold 10%")
	}
	if res := bounce(queue.KindPasswordReset, "u1@example.com", BounceHard); !res.Tripped {
		t.Fatal("not tripped at 2 hard bounces in 20 sent (10%)")
	}
	b, err := g.Breaker(ctx, queue.KindPasswordReset)
	if err != nil || b.State != BreakerOpen || b.Reason != ReasonRelay || b.Until.IsZero() {
		t.Fatalf("breaker after the bounce trip: %+v, %v; want open for relay, until the cooldown ends", b, err)
	}
	mu.Lock()
	if len(trans) != 1 || trans[0].To != BreakerOpen || trans[0].Reason != ReasonRelay {
		t.Errorf("transitions %+v, want one to open (relay)", trans)
	}
	mu.Unlock()
	v, err := g.Dispatch(ctx, payload("next@example.com", time.Hour), newID())
	if err != nil || v.Outcome != queue.Deferred || v.Reason != "relay" {
		t.Errorf("dispatch with the bounce trip open: %+v, %v; want deferred, relay", v, err)
	}
	if res := bounce(queue.KindPasswordReset, "u2@example.com", BounceHard); res.Tripped {
		t.Error("an open breaker tripped again")
	}
	// Notifications (defaults: 5% bounces, 0.5% complaints, at least 200
	// sent) have too few emails for a trip.
	for i := range 10 {
		if res := bounce(queue.KindNotification, fmt.Sprintf("n%d@example.com", i), BounceHard); res.Tripped {
			t.Fatal("notification tripped below min_sends")
		}
	}
}

func TestBouncePolicy(t *testing.T) {
	for doc, want := range map[string]string{
		"kinds: {password_reset: {breaker: {bounces: {ratio: 2}}}}":            "kinds.password_reset.breaker.bounces.ratio",
		"kinds: {password_reset: {breaker: {bounces: {complaint_ratio: -1}}}}": "kinds.password_reset.breaker.bounces.complaint_ratio",
		"kinds: {password_reset: {breaker: {bounces: {min_sends: -1}}}}":       "kinds.password_reset.breaker.bounces.min_sends",
	} {
		if _, err := ParsePolicy([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePolicy(%s) = %v, want an error naming %s", doc, err, want)
		}
	}
	for _, doc := range []string{"kinds: {password_reset: {breaker: off}}", "kinds: {password_reset: {breaker: {bounces: off}}}"} {
		p, err := ParsePolicy([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if b := p.KindPolicies[queue.KindPasswordReset].Breaker.Bounces; b.MinSends != 0 {
			t.Errorf("%s leaves the bounce trip on: %+v", doc, b)
		}
	}
	if b := DefaultPolicy().KindPolicies[queue.KindPasswordReset].Breaker.Bounces; b != (BouncePolicy{MinSends: 200, Ratio: 0.05, ComplaintRatio: 0.005}) {
		t.Errorf("default bounce trip %+v", b)
	}
}
