package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// lockedBuffer collects a log written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startWorker runs the worker on r, relaying to a sink of its own (which
// -smtp in extra replaces), with extra flags until the test ends. It
// returns run's error when it stops early, else the started worker.
func startWorker(t *testing.T, r *testutil.Redis, log io.Writer, extra ...string) (started, error) {
	t.Helper()
	sink := testutil.StartSink(t, smtpsink.Config{})
	args := append([]string{"-redis", r.URL(), "-smtp", sink.SMTPAddr(), "-smtp-tls", "none", "-http", "127.0.0.1:0",
		"-from", "no-reply@example.test"}, extra...)
	cfg, err := parseConfig(args, testEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	up, done := make(chan started, 1), make(chan error, 1)
	go func() { done <- runWith(ctx, cfg, io.Discard, log, up) }()
	select {
	case s := <-up:
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
		return s, nil
	case err := <-done:
		cancel()
		return started{}, err
	}
}

// A Redis that may evict keys is refused before the worker takes a single
// email, with an error naming the setting.
func TestWorkerRefusesEvictingRedis(t *testing.T) {
	r := testutil.StartRedis(t, "--maxmemory", "20mb", "--maxmemory-policy", "allkeys-lru")
	_, err := startWorker(t, r, io.Discard)
	if err == nil {
		t.Fatal("the worker started against maxmemory-policy allkeys-lru")
	}
	for _, want := range []string{"maxmemory-policy is allkeys-lru", "noeviction", r.Addr} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// A policy that cannot be read (CONFIG and INFO renamed away, as on some
// managed Redis) is refused unless the operator vouches for it.
func TestWorkerUnreadablePolicy(t *testing.T) {
	r := testutil.StartRedis(t, "--rename-command", "CONFIG", "", "--rename-command", "INFO", "")
	_, err := startWorker(t, r, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "cannot read maxmemory-policy") || !strings.Contains(err.Error(), "-redis-assume-noeviction") {
		t.Fatalf("start: %v, want a refusal naming -redis-assume-noeviction", err)
	}
	s, err := startWorker(t, r, io.Discard, "-redis-assume-noeviction")
	if err != nil {
		t.Fatalf("with -redis-assume-noeviction: %v", err)
	}
	waitHTTP(t, s.HTTPAddr, "/readyz", 200, "ready")
	waitHTTP(t, s.HTTPAddr, "/metrics", 200, `floodgate_redis_maxmemory_policy{policy="unknown"} 1`)
}

// A Redis without persistence is a warning, not a refusal; with an
// append-only file there is none.
func TestWorkerWarnsWithoutPersistence(t *testing.T) {
	for _, c := range []struct {
		args []string
		warn bool
	}{{nil, true}, {[]string{"--appendonly", "yes"}, false}} {
		r := testutil.StartRedis(t, c.args...)
		var log lockedBuffer
		if _, err := startWorker(t, r, &log); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(log.String(), "redis has no persistence"); got != c.warn {
			t.Errorf("redis %v: warned %v, want %v; log:\n%s", c.args, got, c.warn, log.String())
		}
	}
}

// A policy changed while the worker runs turns /readyz to 503 and shows in
// the metric until it is set back.
func TestWorkerRechecksPolicy(t *testing.T) {
	r := testutil.StartRedis(t)
	var log lockedBuffer
	s, err := startWorker(t, r, &log, "-redis-check-interval", "50ms")
	if err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, s.HTTPAddr, "/readyz", 200, "ready")
	waitHTTP(t, s.HTTPAddr, "/metrics", 200, `floodgate_redis_maxmemory_policy{policy="noeviction"} 1`)
	rc := r.Client(t)
	ctx := context.Background()
	if err := rc.ConfigSet(ctx, "maxmemory-policy", "volatile-lru").Err(); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, s.HTTPAddr, "/readyz", 503, "maxmemory-policy is volatile-lru")
	waitHTTP(t, s.HTTPAddr, "/metrics", 200, `floodgate_redis_maxmemory_policy{policy="volatile-lru"} 1`)
	if !strings.Contains(log.String(), "maxmemory-policy is volatile-lru") {
		t.Errorf("the change was not logged:\n%s", log.String())
	}
	if err := rc.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, s.HTTPAddr, "/readyz", 200, "ready")
}

// waitHTTP polls GET path until it answers code with a body containing
// want: the monitor's checks publish no event.
func waitHTTP(t *testing.T, addr, path string, code int, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == code && strings.Contains(string(body), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s = %d %q, want %d with %q", path, resp.StatusCode, body, code, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
