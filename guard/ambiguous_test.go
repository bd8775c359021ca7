package guard

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/queue"
)

// Ambiguous results are counted on the email's claim across attempts: the
// released claim keeps the count, the next dispatch reports it, and other
// temporary failures neither add to it nor lose it.
func TestDispatchCountsAmbiguousResults(t *testing.T) {
	g, rc, _ := newTestGuard(t, "", Config{})
	ctx := context.Background()
	p := payload("drop@example.com", time.Hour)
	claim := func(want string) {
		t.Helper()
		if got, err := rc.Get(ctx, rkeys.Claim(p.ID)).Result(); err != nil || got != want {
			t.Fatalf("claim = %q (%v), want %q", got, err, want)
		}
	}
	steps := []struct {
		attempt   string
		ambiguous int    // want in the verdict
		reason    string // the attempt's temporary failure
		claim     string // want after its settle
	}{
		{"a1", 0, "ambiguous", "m1"},
		{"a2", 1, "smtp_451", "m1"},
		{"a3", 1, "ambiguous", "m2"},
		{"a4", 2, "", ""},
	}
	for _, s := range steps {
		v := dispatch(t, g, p, s.attempt)
		if !v.Allow || v.Ambiguous != s.ambiguous {
			t.Fatalf("attempt %s: %+v, want allowed with %d ambiguous before", s.attempt, v, s.ambiguous)
		}
		if s.ambiguous > 0 {
			claim(rkeys.AttemptValue(s.attempt) + "~" + strconv.Itoa(s.ambiguous))
			// A re-sent dispatch script reports the same count.
			if v := dispatch(t, g, p, s.attempt); !v.Allow || v.Ambiguous != s.ambiguous {
				t.Fatalf("attempt %s replayed: %+v", s.attempt, v)
			}
		}
		if s.claim == "" {
			break
		}
		settle(t, g, p, s.attempt, "", s.reason)
		claim(s.claim)
		if ttl := rc.PTTL(ctx, rkeys.Claim(p.ID)).Val(); ttl <= 0 || ttl > time.Hour+DefaultClaimGrace {
			t.Errorf("released claim TTL %v, want until expiry plus grace", ttl)
		}
	}
	// Past the worker's bound the email fails, for good.
	settle(t, g, p, "a4", queue.Failed, "ambiguous")
	claim(rkeys.ClaimFailed)
	wantDispatch(t, "after failing", dispatch(t, g, p, "a5"), false, queue.Failed, "settled")
	ks := stats(t, g, queue.KindPasswordReset)
	if ks.Ambiguous != 3 || ks.Retried != 3 || ks.Reasons[queue.Failed]["ambiguous"] != 1 {
		t.Errorf("stats: ambiguous %d, retried %d, failed %v; want 3, 3, ambiguous 1", ks.Ambiguous, ks.Retried, ks.Reasons[queue.Failed])
	}
	// Another attempt's settle does not touch the count.
	q := payload("other@example.com", time.Hour)
	dispatch(t, g, q, "b1")
	settle(t, g, q, "b2", "", "ambiguous")
	if got := rc.Get(ctx, rkeys.Claim(q.ID)).Val(); got != rkeys.AttemptValue("b1") {
		t.Errorf("claim after a stranger's settle = %q, want b1's", got)
	}
	if _, err := g.Dispatch(ctx, q, "x~1"); err == nil {
		t.Error("an attempt holding '~' was accepted")
	}
}
