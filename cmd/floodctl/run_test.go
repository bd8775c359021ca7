package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/adminapi"
	"github.com/floodgate-dev/floodgate/internal/keyfile"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
)

// fakeBreakers serves the breaker half of the admin API contract from
// memory, with the worker's bearer-token check.
type fakeBreakers struct {
	token string

	mu       sync.Mutex
	breakers map[string]*adminapi.Breaker
	releases []string // the limit query of each release
}

func newFakeBreakers(t *testing.T, token string) (*fakeBreakers, *httptest.Server) {
	t.Helper()
	since := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	f := &fakeBreakers{token: token, breakers: map[string]*adminapi.Breaker{
		queue.KindPasswordReset: {Kind: queue.KindPasswordReset, State: adminapi.StateOpen, Mode: "hold", Reason: "surge",
			Since: since, Rate: 812.5, Baseline: 0.8, Held: 1234, OpenedAt: since},
		queue.KindVerifyEmail: {Kind: queue.KindVerifyEmail, State: adminapi.StateClosed, Mode: "hold", Since: since, Rate: 0.1, Baseline: 0.2},
	}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/breakers", func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		list := []adminapi.Breaker{*f.breakers[queue.KindPasswordReset], *f.breakers[queue.KindVerifyEmail]}
		writeJSON(w, http.StatusOK, map[string]any{"breakers": list})
	})
	mux.HandleFunc("POST /v1/breakers/{kind}/{op}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		b, ok := f.breakers[r.PathValue("kind")]
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "guard: unknown kind"})
			return
		}
		switch r.PathValue("op") {
		case "trip":
			var body struct {
				Reason string `json:"reason"`
			}
			if r.ContentLength > 0 {
				if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
					writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
					return
				}
			}
			b.State, b.Reason, b.OpenedAt = adminapi.StateOpen, "manual", time.Now()
			if body.Reason != "" {
				b.Reason = body.Reason
			}
			writeJSON(w, http.StatusOK, b)
		case "reset":
			b.State, b.Reason = adminapi.StateClosed, ""
			writeJSON(w, http.StatusOK, b)
		case "release":
			l := r.URL.Query().Get("limit")
			f.releases = append(f.releases, l)
			n := b.Held
			if l != "" {
				lim, _ := strconv.ParseInt(l, 10, 64)
				n = min(n, lim)
			}
			b.Held -= n
			writeJSON(w, http.StatusOK, map[string]int64{"released": n})
		case "purge":
			n := b.Held
			b.Held = 0
			writeJSON(w, http.StatusOK, map[string]int64{"purged": n})
		default:
			http.NotFound(w, r)
		}
	})
	var h http.Handler = mux
	if token != "" {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+token {
				http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
				return
			}
			mux.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return f, srv
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ctl runs floodctl with args and returns stdout, stderr and the error.
func ctl(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, err := ctl(t, args...)
	if err != nil {
		t.Fatalf("floodctl %s: %v\nstderr: %s", strings.Join(args, " "), err, stderr)
	}
	return out
}

func TestBreakersTable(t *testing.T) {
	t.Setenv("FLOODGATE_ADMIN_TOKEN", "")
	_, srv := newFakeBreakers(t, "")
	out := mustCtl(t, "-api", srv.URL, "breakers")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("breakers printed %d lines, want header + 2:\n%s", len(lines), out)
	}
	for _, want := range []string{"KIND", "STATE", "HELD", "BASELINE"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("header %q lacks %s", lines[0], want)
		}
	}
	for _, want := range []string{"password_reset", "open", "hold", "surge", "812.5", "0.8", "1234", "2025-01-02 03:04:05"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
	if f := strings.Fields(lines[2]); f[0] != "verify_email" || f[1] != "closed" || f[3] != "-" {
		t.Errorf("verify_email row = %q, want kind, closed, mode, reason -", lines[2])
	}
}

func TestJSONIsTheAPIResponse(t *testing.T) {
	t.Setenv("FLOODGATE_ADMIN_TOKEN", "")
	_, srv := newFakeBreakers(t, "")
	// -json before and after the command.
	for _, args := range [][]string{{"-api", srv.URL, "-json", "breakers"}, {"breakers", "-json", "-api", srv.URL}} {
		out := mustCtl(t, args...)
		var r struct {
			Breakers []adminapi.Breaker `json:"breakers"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("floodctl %v output is not JSON: %v\n%s", args, err, out)
		}
		if len(r.Breakers) != 2 || r.Breakers[0].Held != 1234 || r.Breakers[0].OpenedAt.IsZero() {
			t.Errorf("floodctl %v = %+v, want the fake's two breakers", args, r.Breakers)
		}
		if !strings.Contains(out, `"opened_at":"2025-01-02T03:04:05Z"`) {
			t.Errorf("floodctl %v did not print the API's bytes: %s", args, out)
		}
	}
}

func TestBreakerOperations(t *testing.T) {
	t.Setenv("FLOODGATE_ADMIN_TOKEN", "")
	f, srv := newFakeBreakers(t, "")
	api := "-api=" + srv.URL

	out := mustCtl(t, api, "trip", "verify_email", "-reason", "drill")
	if !strings.Contains(out, "verify_email") || !strings.Contains(out, "open") || !strings.Contains(out, "drill") {
		t.Errorf("trip printed %q, want verify_email open drill", out)
	}
	// Flags before the positional argument work too.
	if out := mustCtl(t, api, "trip", "-reason", "again", "verify_email"); !strings.Contains(out, "again") {
		t.Errorf("trip -reason again KIND printed %q", out)
	}
	if out := mustCtl(t, api, "reset", "verify_email"); !strings.Contains(out, "closed") {
		t.Errorf("reset printed %q, want closed", out)
	}
	if out := mustCtl(t, api, "release", "password_reset", "-limit", "100"); !strings.Contains(out, "released 100 held password_reset") {
		t.Errorf("release -limit 100 printed %q", out)
	}
	if out := mustCtl(t, api, "release", "password_reset"); !strings.Contains(out, "released 1134 ") {
		t.Errorf("release printed %q, want the remaining 1134", out)
	}
	f.mu.Lock()
	releases := append([]string(nil), f.releases...)
	f.breakers[queue.KindPasswordReset].Held = 7
	f.mu.Unlock()
	if len(releases) != 2 || releases[0] != "100" || releases[1] != "" {
		t.Errorf("release limits sent = %q, want [100 \"\"]", releases)
	}
	if out := mustCtl(t, api, "purge", "password_reset"); !strings.Contains(out, "purged 7 held password_reset emails (counted as shed)") {
		t.Errorf("purge printed %q", out)
	}
	out = mustCtl(t, api, "-json", "purge", "password_reset")
	if strings.TrimSpace(out) != `{"purged":0}` {
		t.Errorf("purge -json printed %q, want {\"purged\":0}", out)
	}

	_, _, err := ctl(t, api, "trip", "no_such_kind")
	if err == nil || !strings.Contains(err.Error(), "unknown kind") || !strings.Contains(err.Error(), "not found") {
		t.Errorf("trip of an unknown kind: err = %v, want a not-found error naming the kind problem", err)
	}
}

func TestToken(t *testing.T) {
	_, srv := newFakeBreakers(t, "s3cret")
	api := "-api=" + srv.URL

	t.Setenv("FLOODGATE_ADMIN_TOKEN", "")
	_, _, err := ctl(t, api, "breakers")
	if err == nil || !strings.HasPrefix(err.Error(), "unauthorized: set FLOODGATE_ADMIN_TOKEN") {
		t.Errorf("without a token: err = %v, want unauthorized: set FLOODGATE_ADMIN_TOKEN ...", err)
	}

	t.Setenv("FLOODGATE_ADMIN_TOKEN", "wrong")
	_, _, err = ctl(t, api, "breakers")
	if err == nil || !strings.Contains(err.Error(), "refused") || strings.Contains(err.Error(), "wrong") {
		t.Errorf("with a wrong token: err = %v, want a refusal that does not echo the token", err)
	}

	t.Setenv("FLOODGATE_ADMIN_TOKEN", "s3cret")
	mustCtl(t, api, "breakers")

	t.Setenv("FLOODGATE_ADMIN_TOKEN", "wrong")
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustCtl(t, api, "-token-file", file, "breakers") // the file wins over the environment

	_, _, err = ctl(t, api, "-token-file", filepath.Join(t.TempDir(), "missing"), "breakers")
	if err == nil || !strings.Contains(err.Error(), "-token-file") {
		t.Errorf("missing token file: err = %v", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, _, err = ctl(t, "-api", "http://"+addr, "stats")
	if err == nil || !strings.Contains(err.Error(), "cannot reach the admin API") || !strings.Contains(err.Error(), "-admin") ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Errorf("closed port: err = %v, want cannot reach ... connection refused ... -admin", err)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"trip"},
		{"trip", "a", "b"},
		{"breakers", "extra"},
		{"release", "password_reset", "-limit", "-1"},
		{"release", "password_reset", "-limit", "x"},
		{"decisions", "-bogus"},
		{"-timeout", "0", "stats"},
		{"suppress", " "},
	} {
		out, stderr, err := ctl(t, args...)
		if !errors.Is(err, errUsage) {
			t.Errorf("floodctl %q: err = %v, want usage error", args, err)
		}
		if out != "" || stderr == "" {
			t.Errorf("floodctl %q: stdout %q, stderr %q: want the usage on stderr only", args, out, stderr)
		}
	}
}

// -h and help print the usage, with the environment variable, and exit 0.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"stats", "-h"}} {
		out, stderr, err := ctl(t, args...)
		if !errors.Is(err, errHelp) || out != "" || !strings.Contains(stderr, "FLOODGATE_ADMIN_TOKEN") || !strings.Contains(stderr, "usage: floodctl") {
			t.Errorf("floodctl %q: err %v, stdout %q, stderr %q; want errHelp and the usage", args, err, out, stderr)
		}
	}
}

// TestRealGuard drives stats, suppress, unsuppress and decisions against
// the guard's own handler on a real Redis.
func TestRealGuard(t *testing.T) {
	t.Setenv("FLOODGATE_ADMIN_TOKEN", "")
	rdb := testutil.StartRedis(t).Client(t)
	g, err := guard.New(guard.Config{Redis: rdb, DecisionSample: 1})
	if err != nil {
		t.Fatal(err)
	}
	qc, err := queue.NewClient(queue.Config{Redis: rdb, Admitter: g, Kinds: g.Policy().Kinds()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.Close() })
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	api := "-api=" + srv.URL
	ctx := context.Background()
	reset := func(to string) queue.Receipt {
		t.Helper()
		r, err := qc.Enqueue(ctx, queue.Email{Kind: queue.KindPasswordReset, To: to, Source: "203.0.113.9",
			Data: map[string]string{"reset_url": "https://app.example/r/1"}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	reset("alice@example.com")
	reset("alice@example.com") // duplicate

	out := mustCtl(t, api, "stats")
	var row []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == queue.KindPasswordReset {
			row = f
		}
	}
	// KIND REQUESTED ADMITTED SENT DUPLICATE CAPPED HELD SHED SUPPRESSED EXPIRED FAILED IN_FLIGHT ...
	if len(row) < 12 || row[1] != "2" || row[2] != "1" || row[4] != "1" || row[11] != "1" {
		t.Errorf("stats row = %q, want requested 2, admitted 1, duplicate 1, in flight 1\n%s", row, out)
	}
	var st guard.Stats
	if err := json.Unmarshal([]byte(mustCtl(t, api, "stats", "-json")), &st); err != nil {
		t.Fatal(err)
	}
	if ks := st.Kinds[queue.KindPasswordReset]; ks == nil || ks.Requested != 2 {
		t.Errorf("stats -json = %+v, want 2 password_reset requests", st.Kinds[queue.KindPasswordReset])
	}

	if out := mustCtl(t, api, "suppress", "Bob+promo@Example.com", "-reason", "complaint"); !strings.Contains(out, "suppressed Bob+promo@Example.com") {
		t.Errorf("suppress printed %q", out)
	}
	if r := reset("bob@example.com"); r.Outcome != queue.Suppressed {
		t.Errorf("reset to a suppressed address: outcome %s, want suppressed", r.Outcome)
	}
	if _, _, err := ctl(t, api, "suppress", "not an address"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("suppress of a bad address: err = %v, want a 400", err)
	}

	out = mustCtl(t, api, "decisions", "-limit", "2")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "RCPT_HASH") || !strings.Contains(lines[1], "suppressed") {
		t.Errorf("decisions -limit 2 = \n%s\nwant header + 2 rows, newest the suppression", out)
	}
	if strings.Contains(out, "bob@") || strings.Contains(out, "alice@") {
		t.Errorf("decisions show an address:\n%s", out)
	}
	if _, _, err := ctl(t, api, "decisions", "-limit", "1000000"); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("decisions -limit 1000000: err = %v, want the guard's bound", err)
	}

	if out := mustCtl(t, api, "unsuppress", "bob@example.com"); !strings.Contains(out, "removed bob@example.com") {
		t.Errorf("unsuppress printed %q", out)
	}
	if out := mustCtl(t, api, "unsuppress", "bob@example.com"); !strings.Contains(out, "was not on the suppression list") {
		t.Errorf("second unsuppress printed %q", out)
	}
	if r := reset("bob@example.com"); r.Outcome != queue.Queued {
		t.Errorf("reset after unsuppress: outcome %s, want queued", r.Outcome)
	}

	// The breakers of the real guard.
	out = mustCtl(t, api, "breakers")
	if !strings.Contains(out, "THRESHOLD/S") || !regexpRow(out, `password_reset\s+closed\s+hold\s+-`) {
		t.Errorf("breakers of a quiet guard:\n%s", out)
	}
	out = mustCtl(t, api, "trip", queue.KindPasswordReset, "-reason", "drill")
	if !regexpRow(out, `password_reset\s+open\s+hold\s+manual`) {
		t.Errorf("trip printed:\n%s", out)
	}
	for _, to := range []string{"dave@example.com", "erin@example.com"} {
		if r := reset(to); r.Outcome != queue.Held {
			t.Errorf("reset while tripped: outcome %s, want held", r.Outcome)
		}
	}
	if out := mustCtl(t, api, "breakers"); !regexpRow(out, `password_reset\s+open\s+hold\s+manual(\s+\S+){3}\s+2\s`) {
		t.Errorf("breakers after two held:\n%s", out)
	}
	if out := mustCtl(t, api, "purge", queue.KindPasswordReset); !strings.Contains(out, "purged 2 held") {
		t.Errorf("purge printed %q", out)
	}
	if r := reset("frank@example.com"); r.Outcome != queue.Held {
		t.Errorf("reset while tripped: outcome %s, want held", r.Outcome)
	}
	if out := mustCtl(t, api, "reset", queue.KindPasswordReset); !regexpRow(out, `password_reset\s+closed`) {
		t.Errorf("reset printed:\n%s", out)
	}
	// Frank's request passes no lane: a default release keeps it held
	// (to expire); -dry-run says so; -all releases it.
	if out := mustCtl(t, api, "release", queue.KindPasswordReset, "-dry-run"); !strings.Contains(out, "would release 0 held") || !regexpRow(out, `none\s+1`) {
		t.Errorf("release -dry-run printed %q", out)
	}
	if out := mustCtl(t, api, "release", queue.KindPasswordReset); !strings.Contains(out, "released 0 held") || !strings.Contains(out, "kept held") {
		t.Errorf("release printed %q", out)
	}
	if out := mustCtl(t, api, "release", queue.KindPasswordReset, "-all"); !strings.Contains(out, "released 1 held") {
		t.Errorf("release -all printed %q", out)
	}
	if err := json.Unmarshal([]byte(mustCtl(t, api, "stats", "-json")), &st); err != nil {
		t.Fatal(err)
	}
	if ks := st.Kinds[queue.KindPasswordReset]; ks.Outcomes[queue.Shed] != 2 || ks.Outcomes[queue.Held] != 0 {
		t.Errorf("after purge and release: outcomes %v, want shed 2, held 0", ks.Outcomes)
	}
	if _, _, err := ctl(t, api, "trip", "no_such_kind"); err == nil || !strings.Contains(err.Error(), "no_such_kind") {
		t.Errorf("trip of an unknown kind: %v", err)
	}

	// Feedback on a sent email: confirm once; a second time, or an unknown
	// id, is not found.
	sent := reset("grace@example.com")
	task, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(queue.ClassSecurity.QueueName(), sent.ID)
	if err != nil {
		t.Fatal(err)
	}
	p, err := queue.DecodePayload(task.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := g.Dispatch(ctx, p, "a1"); err != nil || !v.Allow {
		t.Fatalf("Dispatch = %+v, %v", v, err)
	}
	if err := g.Settle(ctx, p, "a1", queue.Sent, ""); err != nil {
		t.Fatal(err)
	}
	if out := mustCtl(t, api, "confirm", sent.ID); !strings.Contains(out, "confirmed "+sent.ID) {
		t.Errorf("confirm printed %q", out)
	}
	if _, _, err := ctl(t, api, "confirm", sent.ID); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("second confirm: %v, want a 404", err)
	}
	if _, _, err := ctl(t, api, "report", "0123456789abcdef0123456789abcdef"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("report of an unknown id: %v, want a 404", err)
	}
}

func regexpRow(out, pattern string) bool {
	return regexp.MustCompile(`(?m)^` + pattern).MatchString(out)
}

// TestKeygenAndHash: keygen prints keys the commands load; hash names an
// address as the guard's logs do, with the worker's key.
func TestKeygenAndHash(t *testing.T) {
	out := mustCtl(t, "keygen")
	env := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(l, "=")
		env[k] = v
	}
	sec, err := keyfile.Load(func(k string) string { return env[k] }, "", "", true)
	if err != nil {
		t.Fatalf("keygen printed %q: %v", out, err)
	}
	if again := mustCtl(t, "keygen"); again == out {
		t.Error("keygen printed the same keys twice")
	}
	t.Setenv("FLOODGATE_ADMIN_TOKEN", "")
	rdb := testutil.StartRedis(t).Client(t)
	g, err := guard.New(guard.Config{Redis: rdb, HashKey: sec.HashKey})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	got := strings.TrimSpace(mustCtl(t, "-api="+srv.URL, "hash", "Alice+x@Example.com"))
	if got != g.HashRecipient("alice@example.com") || len(got) != 16 {
		t.Errorf("hash printed %q, want the guard's %q", got, g.HashRecipient("alice@example.com"))
	}
	unkeyed, _ := guard.New(guard.Config{Redis: rdb})
	if got == unkeyed.HashRecipient("alice@example.com") {
		t.Error("the keyed hash equals the unkeyed one")
	}
	if _, _, err := ctl(t, "-api="+srv.URL, "hash", "not an address"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("hash of a bad address: %v, want a 400", err)
	}
}

// TestTrace: floodctl trace against a real guard behind a bearer token:
// the table and -json show the decisions and caps; the address travels in
// the body, never in the URL; an unknown address is an empty trace.
func TestTrace(t *testing.T) {
	t.Setenv("FLOODGATE_ADMIN_TOKEN", "s3cret")
	rdb := testutil.StartRedis(t).Client(t)
	g, err := guard.New(guard.Config{Redis: rdb, HashKey: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	qc, err := queue.NewClient(queue.Config{Redis: rdb, Admitter: g, Kinds: g.Policy().Kinds()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.Close() })
	var mu sync.Mutex
	var urls []string
	h := g.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		urls = append(urls, r.URL.String())
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	api := "-api=" + srv.URL
	for range 2 {
		if _, err := qc.Enqueue(context.Background(), queue.Email{Kind: queue.KindPasswordReset, To: "erin@example.com",
			Data: map[string]string{"reset_url": "https://app.example/r/1"}}); err != nil {
			t.Fatal(err)
		}
	}
	out := mustCtl(t, api, "trace", "Erin+x@Example.com")
	for _, want := range []string{"recipient " + g.HashRecipient("erin@example.com"), "not on the suppression list", "password_reset",
		"admit  queued", "admit  duplicate"} {
		if !strings.Contains(out, want) {
			t.Errorf("trace table lacks %q:\n%s", want, out)
		}
	}
	for _, re := range []string{`dedup\s+2m0s\s+1\s+1\s+yes`, `per_recipient\s+1h0m0s\s+1\s+3\s+no`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("trace table lacks a row matching %s:\n%s", re, out)
		}
	}
	var tr guard.Trace
	if err := json.Unmarshal([]byte(mustCtl(t, api, "-json", "trace", "erin@example.com")), &tr); err != nil || len(tr.Kinds) != 1 || len(tr.Kinds[0].Events) != 2 {
		t.Errorf("trace -json = %+v, %v; want one kind with two events", tr, err)
	}
	if out := mustCtl(t, api, "trace", "nobody@example.com"); !strings.Contains(out, "nothing recorded") {
		t.Errorf("unknown address:\n%s", out)
	}
	t.Setenv("FLOODGATE_ADMIN_TOKEN", "")
	if _, _, err := ctl(t, api, "trace", "erin@example.com"); err == nil || !strings.Contains(err.Error(), "unauthorized") {
		t.Errorf("without the token: %v, want unauthorized", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, u := range urls {
		if strings.Contains(strings.ToLower(u), "erin") || strings.Contains(u, "nobody") || u != adminapi.PathTrace {
			t.Errorf("request URL %q: want %s, without the address", u, adminapi.PathTrace)
		}
	}
}
