package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/redisx"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// TestDevModeEndToEnd runs `worker -dev` in-process: embedded Redis, sink
// and keys; an email enqueued against the printed Redis URL arrives signed.
func TestDevModeEndToEnd(t *testing.T) {
	cfg, err := parseConfig([]string{"-dev", "-http", "127.0.0.1:0", "-dev-smtp", "127.0.0.1:0", "-dev-sink-http", "127.0.0.1:0"}, testEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan started, 1)
	done := make(chan error, 1)
	var out bytes.Buffer
	go func() { done <- runWith(ctx, cfg, &out, io.Discard, up) }()
	var s started
	select {
	case s = <-up:
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	}

	rdb, err := redisx.Open(s.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	// Enqueue as cmd/enqueue does, through the guard: its scripts must run
	// on the embedded Redis too.
	sec := s.Stack.Secrets
	g, err := guard.New(guard.Config{Redis: rdb, HashKey: sec.HashKey, Keyring: sec.Keyring})
	if err != nil {
		t.Fatal(err)
	}
	client, err := queue.NewClient(queue.Config{Redis: rdb, Admitter: g, Kinds: g.Policy().Kinds(), Keyring: sec.Keyring})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r, err := client.Enqueue(ctx, queue.Email{Kind: queue.KindPasswordReset, To: "alice@example.test",
		Data: map[string]string{"reset_url": "https://app.example/r/abc"}})
	if err != nil || r.Outcome != queue.Queued {
		t.Fatalf("enqueue: %+v, %v", r, err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	msgs, err := s.Stack.Sink.Wait(wctx, 1, smtpsink.Query{To: "alice@example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs[0].DKIM) != 2 || msgs[0].DKIM[0].Result != "pass" || msgs[0].DKIM[1].Result != "pass" {
		t.Errorf("DKIM results %+v, want two passes", msgs[0].DKIM)
	}

	// The sink stores the message before its 250; the worker counts the
	// email once the reply arrives, so the counter is polled for.
	for path, want := range map[string]string{
		"/healthz":  "ok",
		"/readyz":   "ready",
		"/metrics":  `floodgate_worker_emails_total{kind="password_reset",outcome="sent",reason=""} 1`,
		"/v1/stats": `"sent":1`,
	} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get("http://" + s.HTTPAddr + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(body), want) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("GET %s = %d, body lacks %q", path, resp.StatusCode, want)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	resp, err := http.Get("http://" + s.Stack.Sink.HTTPAddr() + "/api/messages")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	banner := out.String()
	for _, want := range []string{s.RedisURL, "go run ./cmd/enqueue -redis " + s.RedisURL, s.Stack.Sink.HTTPAddr(),
		"-to bounce+x@example.test", s.BounceAddr, s.Stack.Sink.HTTPAddr() + "/api/reports"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	weakPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(weak)})
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	weakFile := write("weak.pem", weakPEM)
	junkFile := write("junk.pem", []byte("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"))
	base := []string{"-redis", "redis://127.0.0.1:1", "-smtp", "127.0.0.1:2525", "-smtp-tls", "none", "-http", "", "-dkim-domain", "example.test"}
	tests := []struct {
		args []string
		want string
	}{
		{append(base, "-dkim-key", "s1="+weakFile), "2048"},
		{append(base, "-dkim-key", "s1="+junkFile), "junk.pem"},
		{append(base, "-dkim-key", "s1="+filepath.Join(dir, "missing.pem")), "missing.pem"},
		{append(base, "-dkim-key", "nofile"), "SELECTOR=PEMFILE"},
		{[]string{"-redis", "redis://127.0.0.1:1", "-smtp", "relay.example.com:25", "-smtp-tls", "none", "-from", "a@example.test", "-http", ""}, "loopback"},
	}
	for _, tt := range tests {
		cfg, err := parseConfig(tt.args, testEnv, io.Discard)
		if err == nil {
			err = run(context.Background(), cfg, io.Discard, io.Discard)
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("worker %v: error %v, want one mentioning %q", tt.args, err, tt.want)
		}
	}
	if _, err := parseConfig(nil, testEnv, io.Discard); err == nil || !strings.Contains(err.Error(), "-dev") {
		t.Errorf("no flags: error %v, want a hint about -dev", err)
	}
}

// The example policy in the repository must load as it is.
func TestExamplePolicyLoads(t *testing.T) {
	p, err := guard.LoadPolicy("../../policy.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Kinds()[queue.KindPasswordReset].TTL; got != 30*time.Minute {
		t.Errorf("password_reset ttl = %v, want 30m", got)
	}
}

func TestAdminHandlerAuth(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "admin") })
	loop := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	public := &net.TCPAddr{IP: net.IPv4(0, 0, 0, 0), Port: 8080}
	if _, err := adminHandler(ok, public, ""); err == nil || !strings.Contains(err.Error(), "FLOODGATE_ADMIN_TOKEN") {
		t.Errorf("non-loopback without token: %v, want an error naming FLOODGATE_ADMIN_TOKEN", err)
	}
	h, err := adminHandler(ok, loop, "")
	if err != nil {
		t.Fatal(err)
	}
	if code := serve(h, ""); code != 200 {
		t.Errorf("loopback, no token configured: %d, want 200", code)
	}
	h, err = adminHandler(ok, public, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	for auth, want := range map[string]int{"": 401, "Bearer wrong": 401, "Bearer s3cret": 200, "s3cret": 401} {
		if code := serve(h, auth); code != want {
			t.Errorf("Authorization %q: %d, want %d", auth, code, want)
		}
	}
}

func serve(h http.Handler, auth string) int {
	req := httptest.NewRequest("GET", "/v1/stats", nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code
}
