package guard

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/floodgate-dev/floodgate/queue"
)

func TestRecordFeedback(t *testing.T) {
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
	hard := Feedback{Type: FeedbackHard, Source: SourceDSN, Kind: queue.KindPasswordReset, EmailID: id,
		Recipient: "Dead+tag@Example.com", Status: "5.1.1"}
	tests := []struct {
		name string
		f    Feedback
		want FeedbackResult
	}{
		{"hard bounce", hard, FeedbackResult{Suppressed: true, Counted: true}},
		{"same bounce again", hard, FeedbackResult{Suppressed: true, Counted: false}},
		{"delay", Feedback{Type: FeedbackSoft, Source: SourceDSN, Kind: queue.KindPasswordReset, EmailID: newID(), Recipient: "slow@example.com"},
			FeedbackResult{Counted: true}},
		{"complaint", Feedback{Type: FeedbackComplaint, Source: SourceARF, Kind: queue.KindNotification, EmailID: newID(), Recipient: "angry@gmail.com"},
			FeedbackResult{Suppressed: true, Counted: true}},
		{"provider event", Feedback{Type: FeedbackHard, Source: SourceSendGrid, EventID: "ev1", Recipient: "gone@example.org"},
			FeedbackResult{Suppressed: true, Counted: true}},
		{"provider event again", Feedback{Type: FeedbackHard, Source: SourceSendGrid, EventID: "ev1", Recipient: "gone@example.org"},
			FeedbackResult{Suppressed: true, Counted: false}},
		{"no recipient", Feedback{Type: FeedbackComplaint, Source: SourceARF, Kind: "nosuchkind"},
			FeedbackResult{Counted: true}},
	}
	for _, tt := range tests {
		got, err := g.RecordFeedback(ctx, tt.f)
		if err != nil || got != tt.want {
			t.Errorf("%s: RecordFeedback = %+v, %v; want %+v", tt.name, got, err, tt.want)
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

	for _, bad := range []Feedback{{Type: "bounce", Source: SourceDSN}, {Type: FeedbackHard, Source: "Bad Source"}} {
		if _, err := g.RecordFeedback(ctx, bad); err == nil {
			t.Errorf("RecordFeedback(%+v) accepted", bad)
		}
	}
	if err := g.RefuseFeedback(ctx, SourceDSN, "forged"); err != nil {
		t.Fatal(err)
	}
	if err := g.RefuseFeedback(ctx, SourceDSN, "Forged Token!"); err != nil {
		t.Fatal(err)
	}

	st, err := g.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fs := st.Feedback
	pr := fs.Kinds[queue.KindPasswordReset]
	if pr == nil || pr.Sent != 9 || pr.Hard != 1 || pr.Soft != 1 || pr.BounceRate != 1.0/9 {
		t.Errorf("feedback of password_reset = %+v, want 9 sent, 1 hard, 1 soft, rate 1/9", pr)
	}
	if n := fs.Kinds[queue.KindNotification]; n == nil || n.Sent != 1 || n.Complaints != 1 || n.ComplaintRate != 1 {
		t.Errorf("feedback of notification = %+v", n)
	}
	if u := fs.Kinds[UnknownKind]; u == nil || u.Hard != 1 || u.Complaints != 1 {
		t.Errorf("feedback of unknown kinds = %+v", u)
	}
	if gm := fs.Domains["gmail.com"]; gm == nil || gm.Sent != 2 || gm.Complaints != 1 || gm.ComplaintRate != 0.5 {
		t.Errorf("feedback of gmail.com = %+v", gm)
	}
	if o := fs.Domains[OtherDomain]; o == nil || o.Sent != 8 || o.Hard != 2 {
		t.Errorf("feedback of other domains = %+v", o)
	}
	if len(fs.Domains) != 2 {
		t.Errorf("domains %v: want gmail.com and other only", fs.Domains)
	}
	if fs.Refused[SourceDSN]["forged"] != 1 || fs.Refused[SourceDSN]["other"] != 1 {
		t.Errorf("refused = %v", fs.Refused)
	}

	reg.MustRegister(g.FeedbackCollector())
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
	fs, err := g.FeedbackStats(ctx)
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
