package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
)

func TestBreakerJSON(t *testing.T) {
	for _, tc := range []struct {
		in       string
		opened   bool
		wantHeld int64
	}{
		{`{"kind":"password_reset","state":"open","mode":"hold","reason":"surge","since":"2025-01-02T03:04:05.123456789Z","rate":12.5,"baseline":0.8,"held":1234,"opened_at":"2025-01-02T03:04:05.123456789Z"}`, true, 1234},
		{`{"kind":"password_reset","state":"closed","mode":"hold","reason":"","since":"","rate":0,"baseline":0,"held":0,"opened_at":""}`, false, 0},
		{`{"kind":"password_reset","state":"closed"}`, false, 0},
	} {
		var b Breaker
		if err := json.Unmarshal([]byte(tc.in), &b); err != nil {
			t.Fatalf("Unmarshal(%s): %v", tc.in, err)
		}
		if b.Kind != "password_reset" || b.Held != tc.wantHeld || !b.OpenedAt.IsZero() != tc.opened || (b.State == StateOpen) != tc.opened {
			t.Errorf("Unmarshal(%s) = %+v", tc.in, b)
		}
		out, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		var again Breaker
		if err := json.Unmarshal(out, &again); err != nil || !again.OpenedAt.Equal(b.OpenedAt) || again.State != b.State {
			t.Errorf("round trip of %s: %s → %+v, %v", tc.in, out, again, err)
		}
	}
	var b Breaker
	if err := json.Unmarshal([]byte(`{"since":"yesterday"}`), &b); err == nil {
		t.Error("Unmarshal accepted since \"yesterday\"")
	}
}

func TestErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/breakers":
			if r.Header.Get("Authorization") != "Bearer t0ken" {
				http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
				return
			}
			io.WriteString(w, `{"breakers":[{"kind":"password_reset","state":"half_open"}]}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	ctx := context.Background()

	anon, err := New(Config{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Breakers(ctx); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Breakers without token: %v, want ErrUnauthorized", err)
	}
	c, _ := New(Config{BaseURL: srv.URL + "/", Token: "t0ken"})
	b, err := c.Breaker(ctx, "password_reset")
	if err != nil || b.State != StateHalfOpen {
		t.Errorf("Breaker = %+v, %v", b, err)
	}
	if _, err := c.Breaker(ctx, "verify_email"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Breaker of a missing kind: %v, want ErrNotFound", err)
	}
	_, err = c.Purge(ctx, "password_reset")
	var ae *APIError
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &ae) || ae.Path != "/v1/breakers/password_reset/purge" {
		t.Errorf("Purge on a server without it: %v, want a 404 APIError", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	down, _ := New(Config{BaseURL: "http://" + addr, Token: "t0ken"})
	if _, err := down.Stats(ctx); !errors.Is(err, ErrUnreachable) {
		t.Errorf("Stats on a closed port: %v, want ErrUnreachable", err)
	}
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://"} {
		if _, err := New(Config{BaseURL: u}); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

// TestAgainstGuard checks the typed calls against the guard's own handler on
// a real Redis.
func TestAgainstGuard(t *testing.T) {
	rdb := testutil.StartRedis(t).Client(t)
	g, err := guard.New(guard.Config{Redis: rdb, DecisionSample: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	c, err := New(Config{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qc, err := queue.NewClient(queue.Config{Redis: rdb, Admitter: g, Kinds: g.Policy().Kinds()})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.Close()

	if err := c.Suppress(ctx, "carol@example.com", ""); err != nil {
		t.Fatal(err)
	}
	r, err := qc.Enqueue(ctx, queue.Email{Kind: queue.KindNotification, To: "carol@example.com",
		Data: map[string]string{"subject": "s", "body": "b"}})
	if err != nil || r.Outcome != queue.Suppressed {
		t.Fatalf("Enqueue to a suppressed address = %+v, %v", r, err)
	}
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ks := st.Kinds[queue.KindNotification]; ks == nil || ks.Requested != 1 || ks.Outcomes[queue.Suppressed] != 1 {
		t.Errorf("Stats notification = %+v, want 1 requested, 1 suppressed", ks)
	}
	ds, err := c.Decisions(ctx, 1)
	if err != nil || len(ds) != 1 || ds[0].Outcome != "suppressed" || ds[0].TaskID != r.ID {
		t.Errorf("Decisions(1) = %+v, %v", ds, err)
	}
	if removed, err := c.Unsuppress(ctx, "carol@example.com"); err != nil || !removed {
		t.Errorf("Unsuppress = %v, %v; want true", removed, err)
	}
	if err := c.Suppress(ctx, "carol@example.com", "Not A Token"); err == nil {
		t.Error("Suppress with a bad reason succeeded")
	}

	b, err := c.Trip(ctx, queue.KindVerifyEmail, "")
	if err != nil || b.State != StateOpen || b.Reason != "manual" {
		t.Fatalf("Trip = %+v, %v", b, err)
	}
	r, err = qc.Enqueue(ctx, queue.Email{Kind: queue.KindVerifyEmail, To: "dan@example.com",
		Data: map[string]string{"verify_url": "https://app.example/v/1"}})
	if err != nil || r.Outcome != queue.Held {
		t.Fatalf("Enqueue while tripped = %+v, %v", r, err)
	}
	if b, err := c.Breaker(ctx, queue.KindVerifyEmail); err != nil || b.Held != 1 || b.OpenedAt.IsZero() {
		t.Errorf("Breaker = %+v, %v; want 1 held and opened_at", b, err)
	}
	if b, err := c.Reset(ctx, queue.KindVerifyEmail); err != nil || b.State != StateClosed {
		t.Errorf("Reset = %+v, %v", b, err)
	}
	if r, err := c.Release(ctx, queue.KindVerifyEmail, guard.ReleaseOptions{DryRun: true}); err != nil || !r.DryRun || r.Lanes["none"] != 1 {
		t.Errorf("Release(dry run) = %+v, %v; want 1 without a lane", r, err)
	}
	if r, err := c.Release(ctx, queue.KindVerifyEmail, guard.ReleaseOptions{All: true, Limit: 5}); err != nil || r.Released != 1 {
		t.Errorf("Release(all) = %+v, %v; want 1", r, err)
	}
	if n, err := c.Purge(ctx, queue.KindVerifyEmail); err != nil || n != 0 {
		t.Errorf("Purge of nothing = %d, %v", n, err)
	}
	bs, err := c.Breakers(ctx)
	if err != nil || len(bs) != len(g.Policy().KindPolicies) {
		t.Errorf("Breakers = %d, %v; want one per kind", len(bs), err)
	}
}
