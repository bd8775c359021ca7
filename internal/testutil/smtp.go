package testutil

import (
	"context"
	"errors"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/floodgate-dev/floodgate/smtpsink"
)

// SendFromNull delivers msg from the null sender (as a relay sends a
// bounce) to rcpts at the SMTP server addr, and returns the first error:
// RCPT's, DATA's or QUIT's. A failed dial fails the test.
func SendFromNull(t testing.TB, addr string, msg []byte, rcpts ...string) error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("mx.example.net"); err != nil {
		return err
	}
	if err := c.Mail("", nil); err != nil {
		return err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// SMTPCode is the reply code of an SMTP error, 0 for none.
func SMTPCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// StartSink starts an smtpsink on a free loopback port with no web page
// (cfg's SMTPAddr and HTTPAddr, when empty) and shuts it down at cleanup.
func StartSink(t testing.TB, cfg smtpsink.Config) *smtpsink.Server {
	t.Helper()
	if cfg.SMTPAddr == "" {
		cfg.SMTPAddr = "127.0.0.1:0"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "-"
	}
	sink, err := smtpsink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Shutdown(context.Background()) })
	return sink
}
