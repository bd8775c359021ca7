package guard

import (
	"context"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/queue"
)

func TestSuppressionSource(t *testing.T) {
	g, rc, _ := newTestGuard(t, "", Config{})
	ctx := context.Background()
	if err := g.SuppressFrom(ctx, "dsn@example.com", "hard_bounce", SourceDSN); err != nil {
		t.Fatal(err)
	}
	if err := g.Suppress(ctx, "op@example.com", ""); err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]Suppression{
		"dsn@example.com": {Reason: "hard_bounce", Source: SourceDSN},
		"op@example.com":  {Reason: "manual", Source: SourceManual},
	} {
		s, ok, err := g.LookupSuppression(ctx, addr)
		if err != nil || !ok || s.Reason != want.Reason || s.Source != want.Source || s.Since.IsZero() {
			t.Errorf("LookupSuppression(%q) = %+v, %v, %v; want reason %q source %q", addr, s, ok, err, want.Reason, want.Source)
		}
	}
	if err := g.SuppressFrom(ctx, "x@example.com", "complaint", "Not A Source"); err == nil {
		t.Error("SuppressFrom with a bad source: no error")
	}

	// An entry written before sources were recorded stays readable and
	// keeps suppressing.
	canon := Canonical("old@example.com", g.Policy().RecipientRules)
	old := "hard_bounce|1700000000000"
	if err := rc.Set(ctx, rkeys.Suppression(canon), old, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.HSet(ctx, rkeys.Suppressions, rkeys.SuppressionField(canon), old).Err(); err != nil {
		t.Fatal(err)
	}
	s, ok, err := g.LookupSuppression(ctx, "old@example.com")
	if err != nil || !ok || s.Reason != "hard_bounce" || s.Source != "" || !s.Since.Equal(time.UnixMilli(1700000000000)) {
		t.Errorf("old entry: LookupSuppression = %+v, %v, %v", s, ok, err)
	}
	list, _, err := g.ListSuppressions(ctx, 0, 100)
	if err != nil || len(list) != 3 {
		t.Fatalf("ListSuppressions = %d entries, %v; want 3", len(list), err)
	}
	wantVerdict(t, "old entry", admit(t, g, adm(queue.KindPasswordReset, "old@example.com", "s")), queue.Suppressed, "")
}
