package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// waitRelay blocks until the worker's background relay check reports up
// (or down), woken by each check's end.
func waitRelay(t *testing.T, s started, up bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		next := s.Relay.next()
		if checked, err := s.Relay.state(); !checked.IsZero() && (err == nil) == up {
			return
		}
		select {
		case <-next:
		case <-ctx.Done():
			_, err := s.Relay.state()
			t.Fatalf("relay check still says %v, want up=%v", err, up)
		}
	}
}

// getReady returns /readyz's status code and body.
func getReady(t *testing.T, addr string) (int, readiness) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("/readyz Content-Type %q", ct)
	}
	var rep readiness
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, rep
}

func getMetrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// /readyz reports each check; when the relay stops answering it turns 503
// naming the relay (and floodgate_smtp_relay_up 0), and ready again once a
// relay answers on that address.
func TestReadyzRelayDownAndBack(t *testing.T) {
	r := testutil.StartRedis(t)
	sink := testutil.StartSink(t, smtpsink.Config{})
	addr := sink.SMTPAddr()
	s, err := startWorker(t, r, io.Discard, "-smtp", addr, "-relay-check-interval", "20ms")
	if err != nil {
		t.Fatal(err)
	}
	waitRelay(t, s, true)
	code, rep := getReady(t, s.HTTPAddr)
	if code != 200 || rep.Status != "ready" {
		t.Fatalf("/readyz = %d %+v, want 200 ready", code, rep)
	}
	for _, name := range []string{"redis", "redis_policy", "relay"} {
		if c, ok := rep.Checks[name]; !ok || !c.OK {
			t.Errorf("check %s = %+v, want ok", name, c)
		}
	}
	if c := rep.Checks["relay"]; c.CheckedAt == nil {
		t.Errorf("relay check %+v has no time", c)
	}
	if m := getMetrics(t, s.HTTPAddr); !strings.Contains(m, "floodgate_smtp_relay_up 1\n") {
		t.Errorf("metrics lack floodgate_smtp_relay_up 1")
	}

	if err := sink.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitRelay(t, s, false)
	code, rep = getReady(t, s.HTTPAddr)
	if c := rep.Checks["relay"]; code != http.StatusServiceUnavailable || rep.Status != "not ready" || c.OK || c.Error == "" {
		t.Errorf("relay down: /readyz = %d %+v, want 503 with the relay's error", code, rep)
	}
	if c := rep.Checks["redis"]; !c.OK {
		t.Errorf("relay down: redis check %+v, want ok", c)
	}
	if m := getMetrics(t, s.HTTPAddr); !strings.Contains(m, "floodgate_smtp_relay_up 0\n") {
		t.Errorf("metrics lack floodgate_smtp_relay_up 0")
	}

	// A relay back on the same address.
	again, err := smtpsink.New(smtpsink.Config{SMTPAddr: addr, HTTPAddr: "-"})
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { again.Shutdown(context.Background()) })
	waitRelay(t, s, true)
	if code, rep := getReady(t, s.HTTPAddr); code != 200 || rep.Status != "ready" {
		t.Errorf("relay back: /readyz = %d %+v, want 200 ready", code, rep)
	}
}

// /readyz reads the last background check: probes do not dial the relay.
func TestReadyzDoesNotDialPerRequest(t *testing.T) {
	r := testutil.StartRedis(t)
	s, err := startWorker(t, r, io.Discard, "-relay-check-interval", "1h")
	if err != nil {
		t.Fatal(err)
	}
	waitRelay(t, s, true) // the check at start-up
	var first *time.Time
	for range 3 {
		code, rep := getReady(t, s.HTTPAddr)
		at := rep.Checks["relay"].CheckedAt
		if code != 200 || at == nil {
			t.Fatalf("/readyz = %d %+v", code, rep)
		}
		if first == nil {
			first = at
		} else if !at.Equal(*first) {
			t.Errorf("relay checked at %v, then %v: a probe checked it again", *first, *at)
		}
	}
}
