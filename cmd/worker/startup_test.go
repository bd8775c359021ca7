package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// startStack starts a private Redis with one reset email queued, and a sink.
func startStack(t *testing.T) (r *testutil.Redis, sink *smtpsink.Server, taskID string) {
	t.Helper()
	r = testutil.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	c, err := queue.NewClient(queue.Config{Redis: rdb, Unguarded: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.Enqueue(context.Background(), queue.Email{Kind: queue.KindPasswordReset, To: "alice@example.test",
		Data: map[string]string{"reset_url": "https://app.example/r/abc"}})
	if err != nil {
		t.Fatal(err)
	}
	sink = testutil.StartSink(t, smtpsink.Config{})
	return r, sink, rc.ID
}

// assertUntouched checks that no worker took the queued email.
func assertUntouched(t *testing.T, r *testutil.Redis, sink *smtpsink.Server, id string) {
	t.Helper()
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: r.Addr})
	defer insp.Close()
	info, err := insp.GetTaskInfo(queue.ClassSecurity.QueueName(), id)
	if err != nil || info.State != asynq.TaskStatePending || info.Retried != 0 {
		t.Errorf("queued email: %+v, %v; want it pending and never tried", info, err)
	}
	if n := sink.Stats().Received; n != 0 {
		t.Errorf("sink received %d messages, want 0", n)
	}
}

// A refused -admin (non-loopback -http, no token) stops the worker before it
// takes any email.
func TestAdminRefusedBeforeWork(t *testing.T) {
	r, sink, id := startStack(t)
	cfg, err := parseConfig([]string{"-redis", r.URL(), "-smtp", sink.SMTPAddr(), "-smtp-tls", "none",
		"-from", "no-reply@example.test", "-http", "0.0.0.0:0", "-admin"}, testEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), cfg, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "FLOODGATE_ADMIN_TOKEN") {
		t.Fatalf("run = %v, want an error naming FLOODGATE_ADMIN_TOKEN", err)
	}
	assertUntouched(t, r, sink, id)
}

// A policy kind without templates stops the worker at start-up, naming the
// kind and the files it looked for.
func TestKindWithoutTemplatesStopsStartup(t *testing.T) {
	r, sink, id := startStack(t)
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte("kinds:\n  invoice:\n    class: notify\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tmplDir := filepath.Join(dir, "templates")
	if err := os.Mkdir(tmplDir, 0o755); err != nil {
		t.Fatal(err)
	}
	base := []string{"-redis", r.URL(), "-smtp", sink.SMTPAddr(), "-smtp-tls", "none",
		"-from", "no-reply@example.test", "-http", "127.0.0.1:0", "-policy", policy}
	for _, tt := range []struct {
		extra []string
		want  []string
	}{
		{nil, []string{`kind "invoice"`, "DIR/invoice/subject.txt", "-templates"}},
		{[]string{"-templates", tmplDir}, []string{`kind "invoice"`, filepath.Join(tmplDir, "invoice", "subject.txt"), filepath.Join(tmplDir, "invoice", "text.txt")}},
	} {
		cfg, err := parseConfig(append(base, tt.extra...), testEnv, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		err = run(context.Background(), cfg, io.Discard, io.Discard)
		for _, want := range tt.want {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("worker %v: error %v, want it to mention %q", tt.extra, err, want)
			}
		}
	}
	assertUntouched(t, r, sink, id)

	// A misspelt built-in kind is refused by the policy itself.
	if err := os.WriteFile(policy, []byte("kinds:\n  pasword_reset:\n    ttl: 10m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig(base, testEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), cfg, io.Discard, io.Discard); err == nil ||
		!strings.Contains(err.Error(), `2:3: kinds.pasword_reset: not a built-in kind; did you mean "password_reset"?`) {
		t.Errorf("misspelt kind: error %v, want its position and a did-you-mean", err)
	}
}
