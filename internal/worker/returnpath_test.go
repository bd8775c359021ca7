package worker_test

import (
	"net/mail"
	"strings"
	"testing"

	"github.com/floodgate-dev/floodgate/internal/worker"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// TestReturnPath: the envelope sender is the email's return path, the From
// header is unchanged, and an empty return path falls back to From.
func TestReturnPath(t *testing.T) {
	e := newEnv(t, func(w *worker.Config, _ *smtpsink.Config) {
		w.ReturnPath = func(p *queue.Payload) string {
			if strings.HasPrefix(p.To, "plain") {
				return ""
			}
			return "bounces+" + p.ID + "@bounce." + domain
		}
	})
	for _, to := range []string{"verp@example.com", "plain@example.com"} {
		r := e.enqueue(t, resetEmail(to))
		if seq := e.waitOutcome(t, r.ID); seq[len(seq)-1] != queue.Sent {
			t.Fatalf("%s: outcomes %v, want sent", to, seq)
		}
		msgs := e.sink.Messages(smtpsink.Query{To: to})
		if len(msgs) != 1 {
			t.Fatalf("%s: %d messages at the sink", to, len(msgs))
		}
		want := "bounces+" + r.ID + "@bounce." + domain
		if to == "plain@example.com" {
			want = fromAddr.Address
		}
		if msgs[0].MailFrom != want {
			t.Errorf("%s: MAIL FROM %q, want %q", to, msgs[0].MailFrom, want)
		}
		full, _ := e.sink.Message(msgs[0].ID)
		_, _, hdr := parts(t, full.Raw)
		if from, err := mail.ParseAddress(hdr.Get("From")); err != nil || from.Address != fromAddr.Address {
			t.Errorf("%s: From header %q, want %s", to, hdr.Get("From"), fromAddr.Address)
		}
	}
}
