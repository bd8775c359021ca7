package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
)

func env(string) string { return "" }

func TestEnqueueOne(t *testing.T) {
	r := testutil.StartRedis(t)
	cfg, err := parseConfig([]string{"-redis", r.URL(), "-kind", "password_reset", "-to", "alice@example.test",
		"-name", "Alice", "-source", "203.0.113.7", "-data", "reset_url=https://app.example/r/abc"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), cfg, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var rc queue.Receipt
	if err := json.Unmarshal(out.Bytes(), &rc); err != nil || strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("output %q is not one JSON line: %v", out.String(), err)
	}
	if rc.Outcome != queue.Queued || rc.Kind != "password_reset" || rc.ID == "" {
		t.Fatalf("receipt %+v", rc)
	}
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: r.Addr})
	defer insp.Close()
	if _, err := insp.GetTaskInfo(queue.ClassSecurity.QueueName(), rc.ID); err != nil {
		t.Errorf("task not stored: %v", err)
	}
}

func TestEnqueueBatch(t *testing.T) {
	r := testutil.StartRedis(t)
	lines := []string{
		`{"kind":"notification","to":"a@example.com","name":"A","source":"203.0.113.7","data":{"subject":"Hi","body":"Hello"},"idempotency_key":"k1"}`,
		`{"kind":"notification","to":"a@example.com","data":{"subject":"Hi","body":"Hello"},"idempotency_key":"k1"}`,
		`{"kind":"password_reset","to":"b@example.com","data":{"reset_url":"https://app.example/r/1"}}`,
		``,
		`{"kind":"password_reset","to":"not-an-address","data":{"reset_url":"https://app.example/r/1"}}`,
		`{not json`,
		`{"kind":"nope","to":"c@example.com"}`,
	}
	path := filepath.Join(t.TempDir(), "batch.jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig([]string{"-redis", r.URL(), "-file", path, "-parallel", "1"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), cfg, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var s summary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatalf("summary %q: %v", out.String(), err)
	}
	if s.Lines != 6 || s.Outcomes["queued"] != 2 || s.Outcomes["duplicate"] != 1 || s.Invalid != 3 || s.Errors != 0 {
		t.Errorf("summary %+v, want 6 lines: 2 queued, 1 duplicate, 3 invalid", s)
	}
	if strings.Contains(errOut.String(), "b@example.com") || strings.Contains(errOut.String(), "not-an-address") {
		t.Errorf("stderr names an address:\n%s", errOut.String())
	}
}

func TestEnqueueErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-redis", "redis://127.0.0.1:1", "-kind", "password_reset"},
		{"-redis", "redis://127.0.0.1:1", "-file", "x", "-to", "a@example.com"},
		{"-redis", "redis://127.0.0.1:1", "-kind", "k", "-to", "a@example.com", "-data", "novalue"},
	} {
		if _, err := parseConfig(args, env, io.Discard); err == nil {
			t.Errorf("parseConfig(%q) = nil error", args)
		}
	}
	// Redis down: a clear error, nothing printed as a receipt.
	cfg, err := parseConfig([]string{"-redis", "redis://127.0.0.1:1", "-kind", "password_reset", "-to", "a@example.com",
		"-data", "reset_url=https://app.example/r", "-timeout", "300ms"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), cfg, &out, io.Discard); err == nil || !strings.Contains(err.Error(), "redis unavailable") || out.Len() != 0 {
		t.Errorf("redis down: err %v, output %q", err, out.String())
	}
}
