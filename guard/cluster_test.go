package guard

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
)

// TestCluster runs admission, dispatch, settle, suppression and stats on a
// 3-master Redis Cluster: every script's keys share one slot.
func TestCluster(t *testing.T) {
	cl := testutil.StartCluster(t)
	cc := cl.Client(t)
	g := guardOn(t, cc, `
global: { rate: 2/1h, burst: 2 }
kinds:
  password_reset: { dedup_window: 0, per_recipient: [2/1h], per_source: [3/1h] }
`, Config{})
	ctx := context.Background()

	if err := g.Suppress(ctx, "gone@example.com", "hard_bounce"); err != nil {
		t.Fatal(err)
	}
	wantVerdict(t, "suppressed", admit(t, g, adm(queue.KindPasswordReset, "gone@example.com", "s1")), queue.Suppressed, "")
	wantVerdict(t, "1", admit(t, g, adm(queue.KindPasswordReset, "a@example.com", "s1")), queue.Queued, "")
	wantVerdict(t, "2", admit(t, g, adm(queue.KindPasswordReset, "A+x@example.com", "s2")), queue.Queued, "")
	wantVerdict(t, "recipient cap", admit(t, g, adm(queue.KindPasswordReset, "a@example.com", "s3")), queue.Capped, "recipient")
	for i := range 2 {
		admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("b%d@example.com", i), "s1"))
	}
	wantVerdict(t, "source cap", admit(t, g, adm(queue.KindPasswordReset, "c@example.com", "s1")), queue.Capped, "source")

	p1, p2, p3 := payload("a@example.com", time.Hour), payload("b@example.net", time.Hour), payload("c@example.org", time.Hour)
	wantDispatch(t, "dispatch 1", dispatch(t, g, p1, "a"), true, "", "")
	wantDispatch(t, "dispatch 2", dispatch(t, g, p2, "a"), true, "", "")
	wantDispatch(t, "global rate", dispatch(t, g, p3, "a"), false, queue.Deferred, "global")
	settle(t, g, p1, "a", queue.Sent, "")
	wantDispatch(t, "duplicate", dispatch(t, g, p1, "b"), false, queue.Duplicate, "sent")
	wantDispatch(t, "claimed", dispatch(t, g, p2, "b"), false, queue.Deferred, "claimed")

	ks := stats(t, g, queue.KindPasswordReset)
	if ks.Requested != 7 || ks.Admitted != 4 || ks.Outcomes[queue.Sent] != 1 || ks.Redelivered != 1 {
		t.Errorf("stats %+v", ks)
	}
	if _, err := g.Decisions(ctx, 10); err != nil {
		t.Error(err)
	}
	// Every guard key maps to one slot.
	slot, err := cc.ClusterKeySlot(ctx, rkeys.Stats).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{rkeys.Recipient("k", "x@y"), rkeys.Source("k", "s"), rkeys.Claim(p1.ID), rkeys.Claim("not-hex"),
		rkeys.Global, rkeys.Domain("example.com"), rkeys.Breaker("k"), rkeys.Held("k"), rkeys.Suppressions, rkeys.Decisions} {
		if s, err := cc.ClusterKeySlot(ctx, k).Result(); err != nil || s != slot {
			t.Errorf("key %q in slot %d (%v), want %d", k, s, err, slot)
		}
	}
}
