package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
)

// env gives the commands the two keys every floodgate process shares.
func env(name string) string {
	switch name {
	case "FLOODGATE_HASH_KEY":
		return testHashKey
	case "FLOODGATE_PAYLOAD_KEYS":
		return testPayloadKeys
	}
	return ""
}

const (
	testHashKey     = "dGVzdCBoYXNoIGtleSBmb3IgZmxvb2RnYXRlIHRlc3Rz"
	testPayloadKeys = "t1:Zmxvb2RnYXRlIHRlc3QgcGF5bG9hZCBrZXkgMzIgYiE="
)

func TestEnqueueOne(t *testing.T) {
	r := testutil.StartRedis(t)
	cfg, err := parseConfig([]string{"-redis", r.URL(), "-kind", "password_reset", "-to", "alice@example.test",
		"-name", "Alice", "-source", "203.0.113.7", "-data", "reset_url=https://app.example/r/abc"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), cfg, nil, &out, io.Discard); err != nil {
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

	// An invalid email: exit code 3, nothing printed as a receipt.
	cfg.To = "not-an-address"
	out.Reset()
	if err := run(context.Background(), cfg, nil, &out, io.Discard); exitCode(err) != exitInvalid || out.Len() != 0 {
		t.Errorf("invalid email: err %v (exit %d), output %q; want exit %d and no output", err, exitCode(err), out.String(), exitInvalid)
	}
}

// batchResult is what one batch run printed and returned.
type batchResult struct {
	verdicts map[int]verdict // by line number
	summary  summary
	stderr   string
	err      error
}

// runBatchFile runs enqueue -file over content (through a file, or through
// standard input when stdin is set) and parses what it printed.
func runBatchFile(t *testing.T, redisURL, content string, stdin bool, extra ...string) batchResult {
	t.Helper()
	file, in := "-", io.Reader(strings.NewReader(content))
	if !stdin {
		file, in = filepath.Join(t.TempDir(), "batch.jsonl"), nil
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := parseConfig(append([]string{"-redis", redisURL, "-file", file}, extra...), env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	res := batchResult{verdicts: map[int]verdict{}}
	res.err = run(context.Background(), cfg, in, &out, &errOut)
	res.stderr = errOut.String()
	outLines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	for i, l := range outLines {
		if i == len(outLines)-1 {
			var s struct {
				Summary *summary `json:"summary"`
			}
			if err := json.Unmarshal([]byte(l), &s); err != nil || s.Summary == nil {
				t.Fatalf("last output line %q is not a summary: %v", l, err)
			}
			res.summary = *s.Summary
			break
		}
		var v verdict
		if err := json.Unmarshal([]byte(l), &v); err != nil || v.Line == 0 {
			t.Fatalf("output line %q is not a verdict: %v", l, err)
		}
		if _, dup := res.verdicts[v.Line]; dup {
			t.Fatalf("two verdicts for line %d", v.Line)
		}
		res.verdicts[v.Line] = v
	}
	return res
}

func TestEnqueueBatch(t *testing.T) {
	r := testutil.StartRedis(t)
	huge := `{"kind":"notification","to":"h@example.com","data":{"subject":"Hi","body":"` + strings.Repeat("x", maxLine) + `"}}`
	big := `{"kind":"notification","to":"g@example.com","data":{"subject":"Hi","body":"` + strings.Repeat("y", 100<<10) + `"}}`
	lines := []string{
		1:  `{"kind":"notification","to":"a@example.com","name":"A","source":"203.0.113.7","data":{"subject":"Hi","body":"Hello"},"idempotency_key":"k1"}`,
		2:  `{"kind":"notification","to":"a@example.com","data":{"subject":"Hi","body":"Hello"},"idempotency_key":"k1"}`,
		3:  ``,
		4:  `{"kind":"password_reset","to":"b@example.com","data":{"reset_url":"https://app.example/r/1"}}`,
		5:  huge,
		6:  `{"kind":"password_reset","to":"c@example.com","data":{"reset_url":"https://app.example/r/2"}}`,
		7:  `{"kind":"password_reset","to":"d@example.com","data":{"reset_url":"https://app.example/r/3"},"idempotencykey":"k2"}`,
		8:  `{"kind":"password_reset","to":"not-an-address","data":{"reset_url":"https://app.example/r/1"}}`,
		9:  `{not json`,
		10: `{"kind":"nope","to":"e@example.com"}`,
		11: `{"kind":"password_reset","to":"f@example.com","data":{"reset_url":"https://app.example/r/4"}} {}`,
		12: big,
		13: "   \t",
		14: `{"kind":"verify_email","to":"i@example.com","data":{"verify_url":"https://app.example/v/1"}}`,
	}
	// The last line has no line ending.
	content := strings.Join(lines[1:], "\n")
	res := runBatchFile(t, r.URL(), content, false, "-parallel", "3")

	// Lines 1 and 2 share an idempotency key and are enqueued in parallel:
	// one is queued, the other a duplicate.
	if a, b := res.verdicts[1].Outcome, res.verdicts[2].Outcome; a == b || a+b != "queuedduplicate" && a+b != "duplicatequeued" {
		t.Errorf("lines 1 and 2: outcomes %q and %q, want one queued and one duplicate", a, b)
	}
	delete(res.verdicts, 1)
	delete(res.verdicts, 2)
	want := map[int]string{4: "queued", 5: "invalid", 6: "queued", 7: "invalid",
		8: "invalid", 9: "invalid", 10: "invalid", 11: "invalid", 12: "invalid", 14: "queued"}
	for n, outcome := range want {
		v, ok := res.verdicts[n]
		if !ok {
			t.Errorf("line %d: no verdict", n)
			continue
		}
		if v.Outcome != outcome {
			t.Errorf("line %d: outcome %q (%s), want %q", n, v.Outcome, v.Error, outcome)
		}
	}
	for n := range res.verdicts {
		if _, ok := want[n]; !ok {
			t.Errorf("verdict for line %d, which is blank", n)
		}
	}
	for n, frag := range map[int]string{5: "longer than", 7: `unknown field "idempotencykey"`, 8: "to ", 10: "unknown kind",
		11: "more than one value", 12: "data is larger"} {
		if !strings.Contains(res.verdicts[n].Error, frag) {
			t.Errorf("line %d: error %q, want it to mention %q", n, res.verdicts[n].Error, frag)
		}
		if !strings.Contains(res.stderr, fmt.Sprintf("line %d: ", n)) {
			t.Errorf("stderr does not report line %d:\n%s", n, res.stderr)
		}
	}
	s := res.summary
	if s.Lines != 12 || s.Outcomes["queued"] != 4 || s.Outcomes["duplicate"] != 1 || s.Invalid != 7 || s.Errors != 0 {
		t.Errorf("summary %+v, want 12 lines: 4 queued, 1 duplicate, 7 invalid", s)
	}
	if code := exitCode(res.err); code != exitInvalid {
		t.Errorf("exit code %d (%v), want %d", code, res.err, exitInvalid)
	}
	for _, addr := range []string{"b@example.com", "not-an-address", "d@example.com", "f@example.com"} {
		if strings.Contains(res.stderr, addr) {
			t.Errorf("stderr names the address %s", addr)
		}
	}

	// The queued lines are in Redis, under the ids their verdicts give.
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: r.Addr})
	defer insp.Close()
	for n, q := range map[int]queue.Class{4: queue.ClassSecurity, 6: queue.ClassSecurity, 14: queue.ClassSecurity} {
		if _, err := insp.GetTaskInfo(q.QueueName(), res.verdicts[n].ID); err != nil {
			t.Errorf("line %d: task %s not stored: %v", n, res.verdicts[n].ID, err)
		}
	}
}

// Refusals by policy are decisions, not failures: exit 0. Standard input
// is read with -file -.
func TestEnqueueBatchStdinPolicyRefusals(t *testing.T) {
	r := testutil.StartRedis(t)
	var b strings.Builder
	for i := range 5 {
		fmt.Fprintf(&b, `{"kind":"password_reset","to":"victim@example.com","source":"203.0.113.%d","data":{"reset_url":"https://app.example/r/%d"}}`+"\n", i, i)
	}
	res := runBatchFile(t, r.URL(), b.String(), true, "-parallel", "1")
	if res.err != nil {
		t.Fatalf("err %v (exit %d), want nil (exit 0)", res.err, exitCode(res.err))
	}
	// The first is queued; the dedup window refuses the others.
	if res.verdicts[1].Outcome != "queued" || res.summary.Outcomes["queued"] != 1 || res.summary.Lines != 5 {
		t.Errorf("verdicts %+v, summary %+v", res.verdicts, res.summary)
	}
	for n := 2; n <= 5; n++ {
		if o := res.verdicts[n].Outcome; o != "duplicate" && o != "capped" {
			t.Errorf("line %d: outcome %q, want a refusal by policy", n, o)
		}
	}
}

// With Redis unreachable every email line fails: exit 4, even with invalid
// lines among them.
func TestEnqueueBatchRedisDown(t *testing.T) {
	content := `{"kind":"password_reset","to":"a@example.com","data":{"reset_url":"https://app.example/r/1"}}
{"kind":"password_reset","to":"not-an-address","data":{"reset_url":"https://app.example/r/1"}}
{"kind":"password_reset","to":"b@example.com","data":{"reset_url":"https://app.example/r/2"}}
`
	res := runBatchFile(t, "redis://127.0.0.1:1", content, true, "-timeout", "300ms")
	if code := exitCode(res.err); code != exitFailed {
		t.Errorf("exit code %d (%v), want %d", code, res.err, exitFailed)
	}
	if res.verdicts[1].Outcome != outcomeError || res.verdicts[2].Outcome != outcomeInvalid || res.verdicts[3].Outcome != outcomeError {
		t.Errorf("verdicts %+v, want error, invalid, error", res.verdicts)
	}
	if !strings.Contains(res.verdicts[1].Error, "redis unavailable") {
		t.Errorf("line 1 error %q, want it to say redis unavailable", res.verdicts[1].Error)
	}
}

func TestReadLines(t *testing.T) {
	type got struct {
		n       int
		text    string
		tooLong bool
	}
	in := "a\r\n\n" + strings.Repeat("z", 40) + "\n  b  \n" + strings.Repeat("y", 11) + "\nc"
	var lines []got
	// A small limit and the reader's 64 KiB buffer: the long lines span
	// several reads only through the limit check, which is the same code.
	if err := readLines(strings.NewReader(in), 10, func(n int, text []byte, tooLong bool) bool {
		lines = append(lines, got{n, string(text), tooLong})
		return true
	}); err != nil {
		t.Fatal(err)
	}
	want := []got{{1, "a", false}, {2, "", false}, {3, "", true}, {4, "b", false}, {5, "", true}, {6, "c", false}}
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("readLines = %v, want %v", lines, want)
	}

	// A line longer than the reader's buffer.
	lines = nil
	in = strings.Repeat("w", 200<<10) + "\nok\n"
	if err := readLines(strings.NewReader(in), 100<<10, func(n int, text []byte, tooLong bool) bool {
		lines = append(lines, got{n, string(text), tooLong})
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if want := []got{{1, "", true}, {2, "ok", false}}; fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("readLines(long) = %v, want %v", lines, want)
	}
}

// The bar's clock starts with the batch: started by its first Add, the first
// rate it showed was one line over a few microseconds.
func TestProgressBarStartsWithTheBatch(t *testing.T) {
	bar := newBar(10, io.Discard, true)
	if !bar.IsStarted() {
		t.Error("progress bar not started before the first line")
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
	// Redis down: a clear error, exit 4, nothing printed as a receipt.
	cfg, err := parseConfig([]string{"-redis", "redis://127.0.0.1:1", "-kind", "password_reset", "-to", "a@example.com",
		"-data", "reset_url=https://app.example/r", "-timeout", "300ms"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), cfg, nil, &out, io.Discard); err == nil || !strings.Contains(err.Error(), "redis unavailable") || out.Len() != 0 || exitCode(err) != exitFailed {
		t.Errorf("redis down: err %v (exit %d), output %q", err, exitCode(err), out.String())
	}
	// A file that cannot be read: exit 1.
	cfg, err = parseConfig([]string{"-redis", "redis://127.0.0.1:1", "-file", filepath.Join(t.TempDir(), "missing")}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), cfg, nil, io.Discard, io.Discard); err == nil || exitCode(err) != exitError {
		t.Errorf("missing file: err %v (exit %d), want exit %d", err, exitCode(err), exitError)
	}
}

func TestEnqueueHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := parseConfig([]string{"-h"}, env, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("parseConfig(-h) = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"usage: enqueue", "-file", "FLOODGATE_REDIS_URL", "Exit status", "  3  ", "  4  "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage does not mention %q:\n%s", want, out.String())
		}
	}
}
