package smtpsink

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func TestDeliverStoresExactMessage(t *testing.T) {
	s := startSink(t, Config{})
	// The body has a line starting with a dot (dot-stuffed on the wire) and
	// the subject is an RFC 2047 encoded-word.
	raw := []byte("From: a@example.org\r\n" +
		"To: b@example.com\r\n" +
		"Subject: =?utf-8?q?R=C3=A9initialiser_?=\r\n =?utf-8?b?dm90cmUgbW90IGRlIHBhc3Nl?=\r\n" +
		"Message-ID: <abc@example.org>\r\n" +
		"\r\n" +
		"line one\r\n.leading dot\r\n..two dots\r\n")
	if err := send(t, s, "a@example.org", []string{"b@example.com", "c@example.com"}, raw); err != nil {
		t.Fatalf("send: %v", err)
	}

	msgs := s.Messages(Query{})
	if len(msgs) != 1 {
		t.Fatalf("Messages() returned %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if !bytes.Equal(m.Raw, raw) {
		t.Errorf("Raw = %q, want %q", m.Raw, raw)
	}
	checks := []struct{ field, got, want string }{
		{"MailFrom", m.MailFrom, "a@example.org"},
		{"RcptTo", strings.Join(m.RcptTo, ","), "b@example.com,c@example.com"},
		{"Subject", m.Subject, "Réinitialiser votre mot de passe"},
		{"MessageID", m.MessageID, "<abc@example.org>"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.field, c.got, c.want)
		}
	}
	if m.Size != len(raw) || m.Dropped || m.ID == "" || m.ReceivedAt.IsZero() {
		t.Errorf("message = %+v, want size %d, not dropped, with ID and time", m, len(raw))
	}
	if len(m.DKIM) != 1 || m.DKIM[0].Result != ResultNone {
		t.Errorf("DKIM = %+v, want one result none", m.DKIM)
	}
	got, ok := s.Message(m.ID)
	if !ok || got.ID != m.ID || !bytes.Equal(got.Raw, raw) {
		t.Errorf("Message(%q) = %+v, %v, want the stored message", m.ID, got, ok)
	}
	if _, ok := s.Message("nope"); ok {
		t.Errorf(`Message("nope") found a message`)
	}
}

func TestQueryNewestFirstLimitAndTo(t *testing.T) {
	s := startSink(t, Config{})
	for i, to := range []string{"x@example.com", "y@example.com", "x@example.com", "z@example.com"} {
		mustSend(t, s, to, newMessage("m"+string(rune('0'+i)), "", "body"))
	}
	subjects := func(ms []Message) string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Subject)
		}
		return strings.Join(out, ",")
	}
	tests := []struct {
		q    Query
		want string
	}{
		{Query{}, "m3,m2,m1,m0"},
		{Query{Limit: 2}, "m3,m2"},
		{Query{Limit: 100}, "m3,m2,m1,m0"},
		{Query{To: "x@example.com"}, "m2,m0"},
		{Query{To: "X@Example.COM", Limit: 1}, "m2"},
		{Query{To: "nobody@example.com"}, ""},
	}
	for _, tt := range tests {
		if got := subjects(s.Messages(tt.q)); got != tt.want {
			t.Errorf("Messages(%+v) = %q, want %q", tt.q, got, tt.want)
		}
	}
}

func TestRingBufferDropsOldest(t *testing.T) {
	s := startSink(t, Config{MaxMessages: 3})
	var first string
	for i := range 5 {
		mustSend(t, s, "r@example.com", newMessage(string(rune('a'+i)), "", "x"))
		if i == 0 {
			first = s.Messages(Query{})[0].ID
		}
	}
	msgs := s.Messages(Query{})
	if len(msgs) != 3 || msgs[0].Subject != "e" || msgs[2].Subject != "c" {
		t.Fatalf("after 5 sends with MaxMessages 3: %d messages, newest %q", len(msgs), msgs[0].Subject)
	}
	if _, ok := s.Message(first); ok {
		t.Errorf("Message(%q) of the evicted first message still found", first)
	}
	if st := s.Stats(); st.Received != 5 || st.Stored != 3 {
		t.Errorf("Stats() = %+v, want received 5, stored 3", st)
	}
}

func TestRecipientFaults(t *testing.T) {
	tests := []struct {
		to       string
		code     int
		enhanced smtp.EnhancedCode
	}{
		{"tempfail+a@example.com", 451, smtp.EnhancedCode{4, 3, 0}},
		{"TempFail+b@example.com", 451, smtp.EnhancedCode{4, 3, 0}},
		{"tempfail@example.com", 451, smtp.EnhancedCode{4, 3, 0}},
		{"permfail+a@example.com", 550, smtp.EnhancedCode{5, 1, 1}},
		{"PERMFAIL+x+y@example.com", 550, smtp.EnhancedCode{5, 1, 1}},
	}
	s := startSink(t, Config{})
	for _, tt := range tests {
		err := send(t, s, "a@example.org", []string{tt.to}, newMessage("s", "", "b"))
		if code, enh := smtpCode(err); code != tt.code || enh != tt.enhanced {
			t.Errorf("send to %s: error %v, want %d %v", tt.to, err, tt.code, tt.enhanced)
		}
	}
	// Lookalikes are ordinary recipients.
	for _, to := range []string{"tempfailx@example.com", "x+tempfail@example.com", "slowly@example.com"} {
		mustSend(t, s, to, newMessage("ok", "", "b"))
	}
	st := s.Stats()
	if st.Rejected != int64(len(tests)) || st.Received != 3 {
		t.Errorf("Stats() = %+v, want rejected %d, received 3", st, len(tests))
	}
}

func TestFaultOf(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"tempfail+x@example.com", faultTempFail},
		{"Slow+1@example.com", faultSlow},
		{"drop@example.com", faultDrop},
		{"permfail+@example.com", faultPermFail},
		{"drop+x@sub@example.com", faultDrop},
		{"dropper+x@example.com", faultNone},
		{"Bounce+x@example.com", faultBounce},
		{"complain@example.com", faultComplain},
		{"bounces+token@bounce.example.org", faultNone},
		{"user@example.com", faultNone},
		{"", faultNone},
	}
	for _, tt := range tests {
		if got := faultOf(tt.addr); got != tt.want {
			t.Errorf("faultOf(%q) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

func TestMixedRecipientsKeepAccepted(t *testing.T) {
	s := startSink(t, Config{})
	c := dial(t, s)
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("ok1@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("permfail+1@example.com", nil); err == nil {
		t.Fatal("RCPT permfail+ accepted")
	}
	if err := c.Rcpt("ok2@example.com", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write(newMessage("mixed", "", "b"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	m := s.Messages(Query{})[0]
	if got := strings.Join(m.RcptTo, ","); got != "ok1@example.com,ok2@example.com" {
		t.Errorf("RcptTo = %q, want the two accepted recipients", got)
	}
}

func TestRejectRatio(t *testing.T) {
	t.Run("always", func(t *testing.T) {
		s := startSink(t, Config{RejectRatio: 1})
		err := send(t, s, "a@example.org", []string{"r@example.com"}, newMessage("s", "", "b"))
		if code, enh := smtpCode(err); code != 451 || enh != (smtp.EnhancedCode{4, 3, 0}) {
			t.Errorf("send with RejectRatio 1: %v, want 451 4.3.0", err)
		}
		if st := s.Stats(); st.Rejected != 1 || st.Received != 0 {
			t.Errorf("Stats() = %+v, want rejected 1, received 0", st)
		}
	})
	t.Run("never", func(t *testing.T) {
		s := startSink(t, Config{RejectRatio: 0})
		for range 5 {
			mustSend(t, s, "r@example.com", newMessage("s", "", "b"))
		}
	})
}

func TestSlowReplyWaitsAndShutdownReleasesIt(t *testing.T) {
	s := startSink(t, Config{SMTPAddr: "127.0.0.1:0", HTTPAddr: "-", SlowDelay: time.Hour})
	c := dial(t, s)

	sent := make(chan error, 1)
	go func() {
		sent <- c.SendMail("a@example.org", []string{"slow+1@example.com"}, bytes.NewReader(newMessage("slow", "", "b")))
	}()
	// The message is stored before the reply is held back.
	if _, err := s.Wait(testContext(t), 1, Query{}); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	select {
	case err := <-sent:
		t.Fatalf("slow+ reply arrived before SlowDelay (1h): %v", err)
	default:
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a held reply: %v", err)
	}
	if err := <-sent; err != nil {
		t.Errorf("held reply after shutdown: %v, want 250", err)
	}
}

func TestSlowReplyDelivers(t *testing.T) {
	s := startSink(t, Config{SlowDelay: time.Millisecond})
	mustSend(t, s, "SLOW+x@example.com", newMessage("slow", "", "b"))
	if n := len(s.Messages(Query{})); n != 1 {
		t.Errorf("stored %d messages, want 1", n)
	}
}

func TestDropClosesWithoutReply(t *testing.T) {
	s := startSink(t, Config{})
	err := send(t, s, "a@example.org", []string{"ok@example.com", "drop+1@example.com"}, newMessage("dropped", "<d@x>", "b"))
	if err == nil {
		t.Fatal("send to drop+: got a reply, want the connection closed")
	}
	if code, _ := smtpCode(err); code != 0 {
		t.Fatalf("send to drop+: SMTP reply %d (%v), want no reply", code, err)
	}
	msgs := s.Messages(Query{})
	if len(msgs) != 1 || !msgs[0].Dropped || msgs[0].Subject != "dropped" {
		t.Fatalf("Messages() = %+v, want the dropped message stored", msgs)
	}
	if st := s.Stats(); st.Dropped != 1 || st.Received != 1 {
		t.Errorf("Stats() = %+v, want dropped 1, received 1", st)
	}
}

func TestRateLimit421ClosesConnection(t *testing.T) {
	// One message per 1000 s: the second is refused however slow the test runs.
	s := startSink(t, Config{MaxRate: 0.001})
	mustSend(t, s, "r@example.com", newMessage("first", "", "b"))

	c := dial(t, s)
	err := c.Mail("a@example.org", nil)
	if code, enh := smtpCode(err); code != 421 || enh != (smtp.EnhancedCode{4, 7, 0}) {
		t.Fatalf("MAIL beyond MaxRate: %v, want 421 4.7.0", err)
	}
	if err := c.Noop(); err == nil {
		t.Errorf("NOOP after 421 succeeded, want the connection closed")
	}
	if st := s.Stats(); st.Received != 1 || st.Rejected != 1 {
		t.Errorf("Stats() = %+v, want received 1, rejected 1", st)
	}
}

func TestLimits(t *testing.T) {
	s := startSink(t, Config{MaxMessageBytes: 1500, MaxRecipients: 2, MaxSessions: 2})

	t.Run("message size", func(t *testing.T) {
		err := send(t, s, "a@example.org", []string{"r@example.com"}, newMessage("big", "", strings.Repeat("x\r\n", 700)))
		if code, _ := smtpCode(err); code != 552 {
			t.Errorf("oversized message: %v, want 552", err)
		}
	})
	t.Run("line length", func(t *testing.T) {
		if err := send(t, s, "a@example.org", []string{"r@example.com"}, newMessage("998", "", strings.Repeat("x", 998))); err != nil {
			t.Errorf("998-octet line: %v, want accepted", err)
		}
		err := send(t, s, "a@example.org", []string{"r@example.com"}, newMessage("999", "", strings.Repeat("x", 999)))
		if code, _ := smtpCode(err); code != 500 {
			t.Errorf("999-octet line: %v, want 500", err)
		}
	})
	t.Run("recipients", func(t *testing.T) {
		c := dial(t, s)
		if err := c.Mail("a@example.org", nil); err != nil {
			t.Fatal(err)
		}
		for i, want := range []int{0, 0, 452} {
			err := c.Rcpt("r"+string(rune('0'+i))+"@example.com", nil)
			if code, _ := smtpCode(err); code != want {
				t.Errorf("RCPT %d: %v, want code %d", i+1, err, want)
			}
		}
	})
	t.Run("sessions", func(t *testing.T) {
		// A sink of its own: connections closed by the other subtests may
		// not have been noticed yet. Hold both slots; a third is turned away.
		s := startSink(t, Config{MaxSessions: 2})
		for range 2 {
			c := dial(t, s)
			if err := c.Noop(); err != nil {
				t.Fatal(err)
			}
		}
		c, err := smtp.Dial(s.SMTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		err = c.Noop() // go-smtp reads the greeting on the first command
		if code, _ := smtpCode(err); code != 421 {
			t.Errorf("third session: %v, want 421 greeting", err)
		}
	})
	if n := len(s.Messages(Query{})); n != 1 {
		t.Errorf("stored %d messages, want only the 998-octet one", n)
	}
}

func TestDuplicateMessageIDs(t *testing.T) {
	s := startSink(t, Config{})
	for _, id := range []string{"<a@x>", "<b@x>", "<a@x>", "", "", "<a@x>"} {
		mustSend(t, s, "r@example.com", newMessage("s", id, "b"))
	}
	if got := s.Stats().DuplicateMessageIDs; got != 2 {
		t.Errorf("DuplicateMessageIDs = %d, want 2 (messages without Message-ID are not duplicates)", got)
	}
	s.Reset()
	if st := s.Stats(); st != (Stats{}) {
		t.Errorf("Stats() after Reset = %+v, want zero", st)
	}
	mustSend(t, s, "r@example.com", newMessage("s", "<a@x>", "b"))
	if got := s.Stats().DuplicateMessageIDs; got != 0 {
		t.Errorf("DuplicateMessageIDs after Reset = %d, want 0", got)
	}
}

func TestDuplicateSeenAfterEviction(t *testing.T) {
	s := startSink(t, Config{MaxMessages: 1})
	mustSend(t, s, "r@example.com", newMessage("s", "<a@x>", "b"))
	mustSend(t, s, "r@example.com", newMessage("s", "<b@x>", "b"))
	mustSend(t, s, "r@example.com", newMessage("s", "<a@x>", "b"))
	if got := s.Stats().DuplicateMessageIDs; got != 1 {
		t.Errorf("DuplicateMessageIDs = %d, want 1 though the first copy was evicted", got)
	}
}

func TestSessionsCounted(t *testing.T) {
	s := startSink(t, Config{})
	for range 3 {
		mustSend(t, s, "r@example.com", newMessage("s", "", "b"))
	}
	if got := s.Stats().Sessions; got != 3 {
		t.Errorf("Sessions = %d, want 3", got)
	}
}

func TestWait(t *testing.T) {
	s := startSink(t, Config{})
	type result struct {
		msgs []Message
		err  error
	}
	done := make(chan result, 1)
	go func() {
		msgs, err := s.Wait(testContext(t), 2, Query{To: "x@example.com", Limit: 1})
		done <- result{msgs, err}
	}()
	mustSend(t, s, "x@example.com", newMessage("one", "", "b"))
	mustSend(t, s, "y@example.com", newMessage("other", "", "b"))
	mustSend(t, s, "x@example.com", newMessage("two", "", "b"))
	r := <-done
	if r.err != nil {
		t.Fatalf("Wait: %v", r.err)
	}
	if len(r.msgs) != 1 || r.msgs[0].Subject != "two" {
		t.Errorf("Wait returned %+v, want the newest x@ message only (Limit 1)", r.msgs)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Wait(ctx, 10, Query{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with cancelled ctx = %v, want context.Canceled", err)
	}
	if msgs, err := s.Wait(ctx, 0, Query{}); err != nil || len(msgs) != 3 {
		t.Errorf("Wait(n=0) = %d messages, %v; want 3, nil", len(msgs), err)
	}
}

func TestWaitEndsOnShutdown(t *testing.T) {
	s := startSink(t, Config{SMTPAddr: "127.0.0.1:0", HTTPAddr: "-"})
	done := make(chan error, 1)
	go func() {
		_, err := s.Wait(context.Background(), 1, Query{})
		done <- err
	}()
	if err := s.Shutdown(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Wait during shutdown = %v, want ErrServerClosed", err)
	}
}

func TestShutdownIdempotent(t *testing.T) {
	s := startSink(t, Config{SMTPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"})
	if err := s.Start(); err == nil {
		t.Error("second Start succeeded")
	}
	// An idle client connection must not hold shutdown up.
	c := dial(t, s)
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.Shutdown(testContext(t)); err != nil {
			t.Fatalf("Shutdown #%d: %v", i+1, err)
		}
	}
	if err := c.Noop(); err == nil {
		t.Error("idle connection still open after Shutdown")
	}
	if err := s.Start(); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Start after Shutdown = %v, want ErrServerClosed", err)
	}
	if _, err := net.Dial("tcp", s.SMTPAddr()); err == nil {
		t.Error("SMTP listener still accepting after Shutdown")
	}
}

func TestShutdownUnstarted(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(testContext(t)); err != nil {
		t.Errorf("Shutdown of an unstarted server: %v", err)
	}
	if s.SMTPAddr() != "" || s.HTTPAddr() != "" {
		t.Errorf("addresses of an unstarted server = %q, %q; want empty", s.SMTPAddr(), s.HTTPAddr())
	}
}

func TestShutdownTimeoutClosesBusyConnections(t *testing.T) {
	s := startSink(t, Config{SMTPAddr: "127.0.0.1:0", HTTPAddr: "-"})
	c := dial(t, s)
	// Inside a transaction, so graceful shutdown would wait for it.
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with expired ctx = %v, want context.Canceled", err)
	}
	if err := c.Rcpt("r@example.com", nil); err == nil {
		t.Error("busy connection still open after forced shutdown")
	}
	if err := s.Shutdown(testContext(t)); err != nil {
		t.Errorf("Shutdown after a forced one = %v, want nil", err)
	}
}

func TestShutdownClosesBusyConnectionAfterReply(t *testing.T) {
	s := startSink(t, Config{SMTPAddr: "127.0.0.1:0", HTTPAddr: "-"})
	conn, err := net.Dial("tcp", s.SMTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tp := textproto.NewConn(conn)
	expect := func(cmd string, code int) {
		t.Helper()
		if cmd != "" {
			if err := tp.PrintfLine("%s", cmd); err != nil {
				t.Fatalf("%s: %v", cmd, err)
			}
		}
		if _, _, err := tp.ReadResponse(code); err != nil {
			t.Fatalf("after %q: %v, want %d", cmd, err, code)
		}
	}
	expect("", 220)
	expect("EHLO test", 250)
	expect("MAIL FROM:<a@example.org>", 250)
	expect("RCPT TO:<r@example.com>", 250)

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	// Wait returns ErrServerClosed once shutdown has begun; the open
	// transaction must still be allowed to finish.
	if _, err := s.Wait(testContext(t), 1<<30, Query{}); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Wait = %v, want ErrServerClosed", err)
	}
	expect("DATA", 354)
	if err := tp.PrintfLine("Subject: last\r\n\r\nbody\r\n."); err != nil {
		t.Fatal(err)
	}
	expect("", 250)
	if err := <-shut; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if _, err := tp.ReadLine(); err == nil {
		t.Error("connection open after its last reply during shutdown")
	}
	if n := len(s.Messages(Query{})); n != 1 {
		t.Errorf("stored %d messages, want the one finished during shutdown", n)
	}
}

func TestNonLoopbackWarns(t *testing.T) {
	var logs bytes.Buffer
	// Not startSink: it would bind loopback.
	s, err := New(Config{SMTPAddr: "0.0.0.0:0", HTTPAddr: "-", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "non-loopback") {
		t.Errorf("logs = %q, want a non-loopback warning", logs.String())
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []Config{
		{RejectRatio: -0.1},
		{RejectRatio: 1.5},
		{MaxRate: -1},
		{MaxMessages: -1},
		{SlowDelay: -time.Second},
		{MaxSessions: -1},
		{BounceRelay: "no-port"},
	}
	for _, cfg := range tests {
		if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New(%+v) error = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}

func TestLogsNeverHoldRecipients(t *testing.T) {
	var logs bytes.Buffer
	s := startSink(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	mustSend(t, s, "secret.person@example.com", newMessage("s", "", "b"))
	send(t, s, "a@example.org", []string{"tempfail+secret.person@example.com"}, newMessage("s", "", "b"))
	send(t, s, "secret.sender@example.org", []string{"bounce+secret.person@example.com"}, newMessage("s", "", "b"))
	if strings.Contains(logs.String(), "secret.") {
		t.Errorf("logs contain a recipient address: %s", logs.String())
	}
	if !strings.Contains(logs.String(), "rcpt_hash=") {
		t.Errorf("logs = %q, want rcpt_hash", logs.String())
	}
}

func TestCleanRunLogsNoWarnings(t *testing.T) {
	var logs bytes.Buffer
	s, err := New(Config{
		SMTPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	mustSend(t, s, "r@example.com", newMessage("s", "", "b"))
	if err := s.Shutdown(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if logs.Len() > 0 {
		t.Errorf("start, send and shutdown logged warnings or errors:\n%s", logs.String())
	}
}

func TestSetLazily(t *testing.T) {
	base := time.Unix(1_000_000, 0)
	tests := []struct {
		name    string
		cur     time.Time // zero: none set
		next    time.Time
		applied bool
	}{
		{"first deadline", time.Time{}, base, true},
		{"later within the slack", base, base.Add(deadlineSlack - time.Nanosecond), false},
		{"later by the slack", base, base.Add(deadlineSlack), true},
		{"earlier", base, base.Add(-time.Millisecond), true},
		{"cleared", base, time.Time{}, true},
	}
	for _, tt := range tests {
		var cur atomic.Int64
		if !tt.cur.IsZero() {
			cur.Store(tt.cur.UnixNano())
		}
		applied := false
		setLazily(&cur, tt.next, func(time.Time) error { applied = true; return nil })
		if applied != tt.applied {
			t.Errorf("%s: applied = %v, want %v", tt.name, applied, tt.applied)
		}
		want := tt.next.UnixNano()
		if tt.next.IsZero() {
			want = 0
		}
		if !tt.applied {
			want = tt.cur.UnixNano()
		}
		if got := cur.Load(); got != want {
			t.Errorf("%s: recorded deadline %d, want %d", tt.name, got, want)
		}
	}
}
