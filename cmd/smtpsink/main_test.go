package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/floodgate-dev/floodgate/smtpsink"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseFlags(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte("s._domainkey.example.org v=DKIM1; p=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags([]string{
		"-smtp", "127.0.0.1:2600", "-http", "-", "-dkim-keys", keys, "-max-messages", "5",
		"-reject-ratio", "0.25", "-max-rate", "100", "-slow-delay", "3s", "-bounce-relay", "127.0.0.1:2700",
		"-procs", "0",
	}, io.Discard)
	if err != nil {
		t.Fatalf("parseFlags: %v", err)
	}
	cfg := o.cfg
	if o.procs != 0 || !o.procsSet {
		t.Errorf("procs = %d, set %v; want 0 given", o.procs, o.procsSet)
	}
	if cfg.SMTPAddr != "127.0.0.1:2600" || cfg.HTTPAddr != "-" || cfg.Keys.Len() != 1 || cfg.MaxMessages != 5 ||
		cfg.RejectRatio != 0.25 || cfg.MaxRate != 100 || cfg.SlowDelay != 3*time.Second || cfg.BounceRelay != "127.0.0.1:2700" {
		t.Errorf("parseFlags = %+v", cfg)
	}

	defOpts, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	def := defOpts.cfg
	if defOpts.procs != 1 || defOpts.procsSet {
		t.Errorf("default procs = %d, set %v; want 1, not set", defOpts.procs, defOpts.procsSet)
	}
	if def.SMTPAddr != "127.0.0.1:2525" || def.HTTPAddr != "127.0.0.1:8025" || def.Keys != nil || def.BounceRelay != "" {
		t.Errorf("defaults = %+v", def)
	}

	for _, args := range [][]string{
		{"-max-messages", "0"},
		{"-slow-delay", "0s"},
		{"-procs", "-1"},
		{"-dkim-keys", filepath.Join(t.TempDir(), "missing")},
		{"-nope"},
		{"extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) succeeded, want an error", args)
		}
	}
}

func TestGOMAXPROCSChoice(t *testing.T) {
	tests := []struct {
		args []string
		env  string
		want int // 0: Go's choice
	}{
		{nil, "", 1},
		{nil, "4", 0},
		{[]string{"-procs", "2"}, "4", 2},
		{[]string{"-procs", "0"}, "", 0},
	}
	for _, tt := range tests {
		o, err := parseFlags(tt.args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if got := o.gomaxprocs(tt.env); got != tt.want {
			t.Errorf("args %q, GOMAXPROCS=%q: gomaxprocs() = %d, want %d", tt.args, tt.env, got, tt.want)
		}
	}
}

func TestRunStartsAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, smtpsink.Config{SMTPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}, pw)
		pw.Close()
	}()

	lines := bufio.NewScanner(pr)
	var smtpAddr, httpURL string
	for smtpAddr == "" || httpURL == "" {
		if !lines.Scan() {
			t.Fatalf("run ended before announcing its addresses: %v", <-done)
		}
		line := lines.Text()
		if a, ok := strings.CutPrefix(line, "smtpsink: SMTP on "); ok {
			smtpAddr = a
		}
		if u, ok := strings.CutPrefix(line, "smtpsink: HTTP on "); ok {
			httpURL = u
		}
	}
	go io.Copy(io.Discard, pr)

	c, err := smtp.Dial(smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	msg := "Subject: via run\r\n\r\nbody\r\n"
	if err := c.SendMail("a@example.org", []string{"r@example.com"}, strings.NewReader(msg)); err != nil {
		t.Fatalf("send: %v", err)
	}
	c.Quit()

	client := smtpsink.NewClient(httpURL)
	defer client.CloseIdleConnections()
	msgs, err := client.Messages(ctx, smtpsink.Query{})
	if err != nil || len(msgs) != 1 || msgs[0].Subject != "via run" {
		t.Fatalf("Messages = %+v, %v", msgs, err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("run = %v, want nil after cancel", err)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	err := run(context.Background(), smtpsink.Config{RejectRatio: 2}, io.Discard)
	if err == nil {
		t.Error("run with RejectRatio 2 succeeded")
	}
}
