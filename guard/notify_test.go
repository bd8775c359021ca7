package guard

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/floodgate-dev/floodgate/queue"
)

type delivery struct {
	header http.Header
	body   []byte
}

// hookServer records webhook deliveries; status decides each answer.
func hookServer(t *testing.T, status func(n int) int) (*httptest.Server, chan delivery) {
	t.Helper()
	got := make(chan delivery, 100)
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- delivery{r.Header.Clone(), b}
		w.WriteHeader(status(int(n.Add(1))))
	}))
	t.Cleanup(ts.Close)
	return ts, got
}

func next(t *testing.T, ch chan delivery) delivery {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook delivery")
		return delivery{}
	}
}

func TestWebhookSigned(t *testing.T) {
	ts, got := hookServer(t, func(int) int { return http.StatusNoContent })
	const secret = "s3cret"
	g, _, _ := newTestGuard(t, "", Config{Webhook: ts.URL + "/hook?token=x", WebhookSecret: secret})
	t.Cleanup(func() { g.Close() })
	ctx := context.Background()
	if _, err := g.Trip(ctx, queue.KindPasswordReset, ReasonSurge); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Reset(ctx, queue.KindPasswordReset); err != nil {
		t.Fatal(err)
	}
	for _, want := range [][3]string{{BreakerClosed, BreakerOpen, ReasonSurge}, {BreakerOpen, BreakerClosed, ReasonManual}} {
		d := next(t, got)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(d.body)
		if sig := d.header.Get("X-Floodgate-Signature"); sig != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			t.Errorf("signature %q does not match the body", sig)
		}
		if d.header.Get("Content-Type") != "application/json" || d.header.Get("X-Floodgate-Event") != "breaker.transition" {
			t.Errorf("headers %v", d.header)
		}
		var ev struct {
			Event, ID, Kind, From, To, Reason, Mode string
			At                                      time.Time
		}
		if err := json.Unmarshal(d.body, &ev); err != nil {
			t.Fatalf("body %s: %v", d.body, err)
		}
		if ev.Event != "breaker.transition" || ev.ID == "" || ev.Kind != queue.KindPasswordReset || ev.From != want[0] ||
			ev.To != want[1] || ev.Reason != want[2] || ev.Mode != "hold" || ev.At.IsZero() {
			t.Errorf("event %s, want %v", d.body, want)
		}
	}
	if err := g.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if err := g.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
}

func TestWebhookRetries(t *testing.T) {
	ts, got := hookServer(t, func(n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	g, _, _ := newTestGuard(t, "", Config{Webhook: ts.URL, WebhookBackoff: time.Millisecond})
	t.Cleanup(func() { g.Close() })
	if _, err := g.Trip(context.Background(), queue.KindVerifyEmail, ""); err != nil {
		t.Fatal(err)
	}
	first := next(t, got)
	for i := range 2 {
		if d := next(t, got); string(d.body) != string(first.body) {
			t.Errorf("retry %d sent %s, want the same body %s", i+1, d.body, first.body)
		}
	}
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		t.Errorf("delivered after success: %s", d.body)
	default:
	}
}

// TestWebhookNeverBlocks: a webhook that never answers does not slow
// decisions down; the queue drops its oldest entries and counts them, and
// Shutdown gives up at its deadline without leaking the goroutine.
func TestWebhookNeverBlocks(t *testing.T) {
	// The test's redis-server (and the goroutine waiting on its process)
	// outlives this check: it stops at cleanup.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/floodgate-dev/floodgate/internal/redisproc.Start.func1"))
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer ts.Close()
	defer close(release)
	reg := prometheus.NewRegistry()
	g, _, _ := newTestGuard(t, `
kinds:
  password_reset: { dedup_window: 0, per_recipient: [], per_source: [] }
`, Config{Webhook: ts.URL, WebhookQueue: 4, Registerer: reg})
	ctx := context.Background()
	for i := range 50 {
		if _, err := g.Trip(ctx, queue.KindPasswordReset, ""); err != nil {
			t.Fatal(err)
		}
		admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("b%d@example.com", i), ""))
		if _, err := g.Reset(ctx, queue.KindPasswordReset); err != nil {
			t.Fatal(err)
		}
	}
	// 100 transitions: one being delivered, four queued, the rest dropped.
	if d := counterValue(t, reg, "floodgate_breaker_webhook_dropped_total"); d < 95 {
		t.Errorf("dropped %v, want at least 95", d)
	}
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := g.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a hung webhook = %v, want the context's error", err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("Close after Shutdown = %v", err)
	}
	ts.CloseClientConnections()
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return v
}

func TestBreakerMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	g, rc, _ := newTestGuard(t, "", Config{Registerer: reg})
	g2 := guardOn(t, rc, "", Config{Registerer: prometheus.NewRegistry()})
	ctx := context.Background()
	if _, err := g.Trip(ctx, queue.KindPasswordReset, ""); err != nil {
		t.Fatal(err)
	}
	if v := counterValue(t, reg, "floodgate_breaker_transitions_total"); v != 1 {
		t.Errorf("transitions %v, want 1", v)
	}
	if v := counterValue(t, reg, "floodgate_breaker_state"); v != stateOpen {
		t.Errorf("state gauge %v, want %d (open)", v, stateOpen)
	}
	// Another process learns the state from its next decision's reply.
	admit(t, g2, adm(queue.KindPasswordReset, "x@example.com", ""))
	var m dto.Metric
	if err := g2.plans[queue.KindPasswordReset].state.Write(&m); err != nil {
		t.Fatal(err)
	}
	if st := m.GetGauge().GetValue(); st != stateOpen {
		t.Errorf("second process's gauge %v, want open", st)
	}
	if _, err := g.Reset(ctx, queue.KindPasswordReset); err != nil {
		t.Fatal(err)
	}
	if v := counterValue(t, reg, "floodgate_breaker_state"); v != stateClosed {
		t.Errorf("state gauge %v after reset, want 0", v)
	}
}
