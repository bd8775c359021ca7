package worker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// TestTraceAfterSettle: through the real worker and SMTP sink, the trace of
// a recipient shows its email admitted, dispatched and settled sent, with
// the Message-ID the sink received; a permanent refusal shows as failed
// with its SMTP class, and the recipient as suppressed by the relay.
func TestTraceAfterSettle(t *testing.T) {
	e := newGuardedEnv(t, withGuard(`{}`, guard.Config{MessageIDDomain: domain}))
	ctx := context.Background()
	sent := e.enqueue(t, resetEmail("alice@example.com"))
	failed := e.enqueue(t, resetEmail("permfail+bob@example.com"))
	for _, r := range []queue.Receipt{sent, failed} {
		e.waitOutcome(t, r.ID)
	}

	tr, err := e.guard.Trace(ctx, "Alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Kinds) != 1 || tr.Kinds[0].Kind != queue.KindPasswordReset {
		t.Fatalf("trace %+v, want password_reset only", tr)
	}
	k := tr.Kinds[0]
	var got []string
	for _, ev := range k.Events {
		got = append(got, ev.Stage+" "+ev.Outcome+" "+ev.ID)
	}
	want := []string{"admit queued " + sent.ID, "dispatch dispatched " + sent.ID, "settle sent " + sent.ID}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("events %v, want %v", got, want)
	}
	msgs := e.sink.Messages(smtpsink.Query{To: "alice@example.com"})
	if len(msgs) != 1 {
		t.Fatalf("sink has %d messages for alice", len(msgs))
	}
	if len(k.Sends) != 1 {
		t.Fatalf("sends %+v, want one", k.Sends)
	}
	s := k.Sends[0]
	if s.ID != sent.ID || s.Result != "sent" || s.Attempts != 1 || s.SettledAt == nil ||
		strings.Trim(s.MessageID, "<>") != strings.Trim(msgs[0].MessageID, "<>") {
		t.Errorf("send %+v, want sent as the sink's Message-ID %s", s, msgs[0].MessageID)
	}

	tr, err = e.guard.Trace(ctx, "permfail+bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Kinds) != 1 || len(tr.Kinds[0].Sends) != 1 {
		t.Fatalf("bob's trace %+v, want one send", tr)
	}
	if s := tr.Kinds[0].Sends[0]; s.ID != failed.ID || s.Result != "failed" || !strings.HasPrefix(s.Reason, "smtp_5") {
		t.Errorf("bob's send %+v, want failed with an SMTP 5xx class", s)
	}
	if tr.Suppression == nil || tr.Suppression.Reason != "hard_bounce" {
		t.Errorf("bob's suppression %+v, want hard_bounce", tr.Suppression)
	}
}
