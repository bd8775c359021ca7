package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/floodgate-dev/floodgate/internal/devstack"
	"github.com/floodgate-dev/floodgate/internal/testutil"
)

func enqueueOne(t *testing.T, url string, extra ...string) (string, error) {
	t.Helper()
	args := append([]string{"-redis", url, "-kind", "password_reset", "-to", "alice@example.test",
		"-data", "reset_url=https://app.example/r/abc"}, extra...)
	cfg, err := parseConfig(args, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = run(context.Background(), cfg, strings.NewReader(""), &out, io.Discard)
	return out.String(), err
}

// A Redis that may evict keys is refused before anything is stored, with
// an error naming the setting.
func TestEnqueueRefusesEvictingRedis(t *testing.T) {
	r := testutil.StartRedis(t, "--maxmemory", "20mb", "--maxmemory-policy", "allkeys-lru")
	out, err := enqueueOne(t, r.URL())
	if err == nil || !strings.Contains(err.Error(), "maxmemory-policy is allkeys-lru") || !strings.Contains(err.Error(), "noeviction") {
		t.Fatalf("enqueue: %v (output %q), want a refusal naming maxmemory-policy", err, out)
	}
	if n, err := r.Client(t).DBSize(context.Background()).Result(); err != nil || n != 0 {
		t.Errorf("%d keys stored (%v), want none", n, err)
	}
}

// A policy that cannot be read is refused unless the operator vouches
// for it.
func TestEnqueueUnreadablePolicy(t *testing.T) {
	r := testutil.StartRedis(t, "--rename-command", "CONFIG", "", "--rename-command", "INFO", "")
	if _, err := enqueueOne(t, r.URL()); err == nil || !strings.Contains(err.Error(), "-redis-assume-noeviction") {
		t.Fatalf("enqueue: %v, want a refusal naming -redis-assume-noeviction", err)
	}
	if out, err := enqueueOne(t, r.URL(), "-redis-assume-noeviction"); err != nil || !strings.Contains(out, `"outcome":"queued"`) {
		t.Fatalf("with -redis-assume-noeviction: %q, %v", out, err)
	}
}

// The embedded Redis of `worker -dev` passes the check.
func TestEnqueueDevRedis(t *testing.T) {
	s, err := devstack.Start(devstack.Config{RedisAddr: "127.0.0.1:0", SMTPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	if out, err := enqueueOne(t, s.RedisURL()); err != nil || !strings.Contains(out, `"outcome":"queued"`) {
		t.Fatalf("enqueue into the -dev Redis: %q, %v", out, err)
	}
}
