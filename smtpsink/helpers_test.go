package smtpsink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startSink starts a sink on free loopback ports and shuts it down when the
// test ends, failing the test if shutdown fails.
func startSink(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.SMTPAddr = "127.0.0.1:0"
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s
}

// dial opens an SMTP client to the sink, closed when the test ends.
func dial(t *testing.T, s *Server) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(s.SMTPAddr())
	if err != nil {
		t.Fatalf("dial %s: %v", s.SMTPAddr(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// send delivers msg on a fresh connection and returns the client's error.
func send(t *testing.T, s *Server, from string, to []string, msg []byte) error {
	t.Helper()
	c := dial(t, s)
	if err := c.SendMail(from, to, bytes.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// mustSend is send for messages that must be accepted.
func mustSend(t *testing.T, s *Server, to string, msg []byte) {
	t.Helper()
	if err := send(t, s, "sender@example.org", []string{to}, msg); err != nil {
		t.Fatalf("send to %s: %v", to, err)
	}
}

// newMessage builds a small CRLF message.
func newMessage(subject, messageID, body string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Sender <sender@example.org>\r\n")
	fmt.Fprintf(&b, "To: rcpt@example.com\r\n")
	fmt.Fprintf(&b, "Subject: %s\r\n", subject)
	if messageID != "" {
		fmt.Fprintf(&b, "Message-ID: %s\r\n", messageID)
	}
	fmt.Fprintf(&b, "Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n")
	fmt.Fprintf(&b, "MIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\n")
	fmt.Fprintf(&b, "\r\n%s\r\n", body)
	return []byte(b.String())
}

// smtpCode returns the reply code of an *smtp.SMTPError, or 0.
func smtpCode(err error) (int, smtp.EnhancedCode) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, se.EnhancedCode
	}
	return 0, smtp.EnhancedCode{}
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
