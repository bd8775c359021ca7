package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/internal/drill"
	"github.com/floodgate-dev/floodgate/queue"
)

func TestParseQuick(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		attack int
		quiet  time.Duration
	}{
		{nil, drill.DefaultAttack, 10 * time.Second},
		{[]string{"-quick"}, 20_000, 5 * time.Second},
		// Explicit flags win over -quick, in any order.
		{[]string{"-attack", "7", "-quick"}, 7, 5 * time.Second},
		{[]string{"-quick", "-quiet", "1s"}, 20_000, time.Second},
	} {
		cfg, _, err := parse(tc.args, &bytes.Buffer{})
		if err != nil {
			t.Fatalf("parse(%q): %v", tc.args, err)
		}
		if cfg.Attack != tc.attack || cfg.Quiet != tc.quiet {
			t.Errorf("parse(%q) = attack %d, quiet %s; want %d, %s", tc.args, cfg.Attack, cfg.Quiet, tc.attack, tc.quiet)
		}
	}
	cfg, _, err := parse([]string{"-legit-domains", " a.example, b.example ,"}, &bytes.Buffer{})
	if err != nil || strings.Join(cfg.LegitDomains, "|") != "a.example|b.example" {
		t.Errorf("-legit-domains parsed to %q, %v", cfg.LegitDomains, err)
	}
}

func TestFlagErrors(t *testing.T) {
	t.Setenv("FLOODGATE_ADMIN_TOKEN", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-attack", "0"}, "-attack must be at least 1"},
		{[]string{"-recipients", "-5"}, "-recipients must be at least 1"},
		{[]string{"-parallel", "0"}, "-parallel"},
		{[]string{"-quiet", "-1s"}, "-quiet and -drain"},
		{[]string{"-attack-rate", "-1"}, "must not be negative"},
		{[]string{"-workers", "0"}, "-workers"},
		{[]string{"-api", "http://worker:8080"}, "deployment mode"},
		{[]string{"-redis", "redis://127.0.0.1:1"}, "needs -api"},
		{[]string{"-redis", "redis://127.0.0.1:1", "-api", "worker:8080", "-sink", "http://sink:8025"}, "-api \"worker:8080\""},
		{[]string{"-legit-domains", "example.com,attacked.example"}, "must not include the attack domain"},
		{[]string{"-attack-domain", "not a domain"}, "-attack-domain"},
		{[]string{"-token-file", "x"}, "deployment mode"},
		{[]string{"-log-level", "loud"}, "-log-level"},
		{[]string{"-bogus"}, "flag provided but not defined"},
		{[]string{"-scenario", "flod"}, "no scenario \"flod\" (have flood, frog"},
		{[]string{"-scenario", "flood", "-speed", "5000"}, "-speed must be between"},
		{[]string{"-scenario", "flood", "-redis", "redis://127.0.0.1:1", "-api", "http://w:8080", "-sink", "http://s:8025"}, "embedded stack only"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		var stderr bytes.Buffer
		err := run(context.Background(), tc.args, &bytes.Buffer{}, &stderr)
		if !errors.Is(err, errUsage) {
			t.Errorf("drill %q: err = %v, want a usage error", tc.args, err)
			continue
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("drill %q: stderr %q lacks %q", tc.args, stderr.String(), tc.want)
		}
	}
	var stderr bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &bytes.Buffer{}, &stderr); !errors.Is(err, errHelp) ||
		!strings.Contains(stderr.String(), "-attack-rate") || !strings.Contains(stderr.String(), "FLOODGATE_ADMIN_TOKEN") {
		t.Errorf("drill -h: err = %v, stderr %q; want errHelp and the usage with its environment", err, stderr.String())
	}
	// A policy file that does not load is an error, not a usage problem.
	err := run(context.Background(), []string{"-policy", filepath.Join(t.TempDir(), "missing.yaml")}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("-policy of a missing file: err = %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("kinds: { password_reset: { per_recipient: [3/0s] } }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), []string{"-policy", bad}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "per_recipient[0]") {
		t.Errorf("-policy with a bad rate: err = %v, want the field's path", err)
	}
}

// TestQuickDrill runs a -quick drill, scaled down, end to end on the
// embedded stack: a real redis-server, the real sink, real workers. It
// checks the report's structure and the conservation check, never timing.
func TestQuickDrill(t *testing.T) {
	dir := t.TempDir()
	report := filepath.Join(dir, "report.json")
	policy := filepath.Join(dir, "policy.yaml")
	// The default policy with a faster domain rate, so that the drill
	// delivers enough to the attacked domain to count in a few seconds.
	if err := os.WriteFile(policy, []byte("domains: { default: 3000/1m }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	args := []string{"-quick", "-attack", "3000", "-recipients", "1000", "-sources", "40", "-parallel", "8",
		"-quiet", "1500ms", "-drain", "2s", "-notify-rate", "20", "-legit-reset-rate", "2",
		"-workers", "2", "-concurrency", "4", "-policy", policy, "-report", report}
	if err := run(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("drill: %v\nstderr:\n%s", err, stderr.String())
	}
	for _, want := range []string{"floodgate flood drill (embedded)", "redis-server", "breaker (password_reset)",
		"delivered (counted at the sink)", "latency enqueue -> sink", "conservation", "targets and checks"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "attack") || !strings.Contains(stderr.String(), "report written to") {
		t.Errorf("stderr lacks the phase announcements:\n%s", stderr.String())
	}

	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep drill.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report is not JSON: %v", err)
	}
	if rep.Mode != "embedded" || rep.Setup.Attack != 3000 || rep.Setup.Policy != policy {
		t.Errorf("report mode %q, attack %d, policy %q", rep.Mode, rep.Setup.Attack, rep.Setup.Policy)
	}
	var sum int64
	for _, n := range rep.Attack.Outcomes {
		sum += n
	}
	if rep.Attack.Requested != 3000 || sum != 3000 || len(rep.Attack.Errors) != 0 {
		t.Errorf("attack: requested %d, outcomes sum %d, errors %v; want 3000, 3000, none", rep.Attack.Requested, sum, rep.Attack.Errors)
	}
	// The caps bound what passes admission whatever the breaker does:
	// 40 sources x 20/1h.
	if rep.Attack.Admitted > 800 {
		t.Errorf("attack admitted %d (outcomes %v), more than the per-source caps allow (800)", rep.Attack.Admitted, rep.Attack.Outcomes)
	}

	c := rep.Conservation
	if !c.OK || len(c.Problems) != 0 {
		t.Errorf("conservation failed: %q", c.Problems)
	}
	for _, k := range []string{queue.KindPasswordReset, queue.KindNotification} {
		kc, ok := c.Kinds[k]
		if !ok {
			t.Fatalf("conservation has no %s", k)
		}
		if kc.Requested != kc.DrillRequested || kc.Accounted != kc.Requested || kc.Admitted != kc.DrillQueued {
			t.Errorf("%s: %+v", k, kc)
		}
	}
	if c.QueueOutstanding == nil || *c.QueueOutstanding != c.InFlight {
		t.Errorf("in flight %d, queue outstanding %v", c.InFlight, c.QueueOutstanding)
	}
	d := rep.Delivered
	if c.Sent != c.SinkMessages || d.SinkMessages != d.SinkReceived || d.DuplicateMessageIDs != 0 || d.Foreign != 0 || d.DKIMFailed != 0 || d.Unsigned != 0 {
		t.Errorf("sent %d vs sink: %+v", c.Sent, d)
	}
	if d.Attacked > d.Bound.Delivery || d.MaxPerRecipient > 1 {
		t.Errorf("attacked deliveries %d (max %d each), bound %+v", d.Attacked, d.MaxPerRecipient, d.Bound)
	}
	if d.LegitNotifications == 0 || d.LegitNotifications != rep.Legit.Notifications.Delivered {
		t.Errorf("legitimate notifications delivered %d, stream %+v", d.LegitNotifications, rep.Legit.Notifications)
	}
	for _, ph := range []string{"quiet", "attack", "drain"} {
		l, ok := rep.Latency.Notifications[ph]
		if !ok {
			t.Errorf("no notification latency for phase %s", ph)
			continue
		}
		if l.Delivered > l.Admitted || (l.Delivered == l.Admitted && l.Admitted > 0 && (l.P50Ms == nil || l.P99Ms == nil || *l.P50Ms > *l.P99Ms)) {
			t.Errorf("latency %s = %+v", ph, l)
		}
	}
	if rep.Redis.Before <= 0 || rep.Redis.End <= 0 || rep.Redis.Growth != rep.Redis.End-rep.Redis.Before {
		t.Errorf("redis memory %+v", rep.Redis)
	}
	if !rep.Breaker.Available && !strings.Contains(rep.Breaker.Note, "404") {
		t.Errorf("breaker neither available nor reported missing: %+v", rep.Breaker)
	}
	names := map[string]string{}
	for _, tg := range rep.Targets {
		names[tg.Name] = tg.Status
	}
	for _, n := range []string{"breaker opens", "notification latency", "redis memory growth", "total drill time", "attacked deliveries", "conservation"} {
		st, ok := names[n]
		if !ok || (st != drill.Pass && st != drill.Fail && st != drill.NA) {
			t.Errorf("target %q: status %q", n, st)
		}
	}
	if names["conservation"] != drill.Pass || names["attacked deliveries"] != drill.Pass {
		t.Errorf("checks: %v", names)
	}
}
