// Command smtpsink runs the floodgate SMTP sink: an SMTP server that stores
// every message, verifies DKIM against a keys file, injects faults by
// recipient (tempfail+, permfail+, slow+, drop+, and bounce+ and complain+,
// which send a DSN or an abuse report to the envelope sender through
// -bounce-relay) and serves an HTTP API and a web page to read the mail. See
// package github.com/floodgate-dev/floodgate/smtpsink.
//
// Usage:
//
//	smtpsink [-smtp ADDR] [-http ADDR|-] [-dkim-keys FILE] [-max-messages N]
//	         [-reject-ratio F] [-max-rate F] [-slow-delay D] [-bounce-relay HOST:PORT]
//	         [-procs N]
//
// The sink runs on one CPU unless -procs or GOMAXPROCS says otherwise: it
// mostly waits on the network, and more threads cost a small machine more
// in wake-ups than they gain.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/floodgate-dev/floodgate/smtpsink"
)

// shutdownTimeout bounds the graceful part of shutdown after a signal.
const shutdownTimeout = 10 * time.Second

func main() {
	opts, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "smtpsink:", err)
		os.Exit(2)
	}
	if n := opts.gomaxprocs(os.Getenv("GOMAXPROCS")); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	cfg := opts.cfg
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "smtpsink:", err)
		os.Exit(1)
	}
}

// defaultProcs is the default of -procs. The sink mostly waits on the
// network: with more threads, Go wakes an idle one for nearly every command
// of a busy connection, which on a small machine costs more CPU and latency
// than the parallelism gains. One thread still verifies several thousand
// RSA-2048 signatures a second.
const defaultProcs = 1

// options is the parsed command line.
type options struct {
	cfg      smtpsink.Config
	procs    int
	procsSet bool // -procs was given
}

// gomaxprocs returns the GOMAXPROCS to set, or 0 to leave Go's choice: a
// GOMAXPROCS environment variable wins over the default of -procs, not
// over the flag itself.
func (o options) gomaxprocs(env string) int {
	if !o.procsSet && env != "" {
		return 0
	}
	return o.procs
}

// parseFlags turns the command line into a sink configuration, loading the
// DKIM keys file if one is named.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var (
		o        options
		keysFile string
	)
	cfg := &o.cfg
	fs := flag.NewFlagSet("smtpsink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: smtpsink [-smtp ADDR] [-http ADDR|-] [-dkim-keys FILE] [-max-messages N]
                [-reject-ratio F] [-max-rate F] [-slow-delay D]

Flags:
`)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), `
Environment: smtpsink reads no environment variables.
Exit status: 0 stopped by a signal (or -h), 1 failed to start or run, 2 usage error.
`)
	}
	fs.StringVar(&cfg.SMTPAddr, "smtp", smtpsink.DefaultSMTPAddr, "SMTP listen `address`")
	fs.StringVar(&cfg.HTTPAddr, "http", smtpsink.DefaultHTTPAddr, "HTTP API and web page listen `address`; - disables")
	fs.StringVar(&keysFile, "dkim-keys", "", "DKIM public keys `file`: lines of selector._domainkey.domain TXT-value")
	fs.IntVar(&cfg.MaxMessages, "max-messages", smtpsink.DefaultMaxMessages, "messages kept; the oldest is dropped beyond")
	fs.Float64Var(&cfg.RejectRatio, "reject-ratio", 0, "share of recipients answered with a random 451, 0 to 1")
	fs.Float64Var(&cfg.MaxRate, "max-rate", 0, "messages per second accepted, beyond answered 421; 0 is unlimited")
	fs.DurationVar(&cfg.SlowDelay, "slow-delay", smtpsink.DefaultSlowDelay, "reply delay for slow+ recipients")
	fs.StringVar(&cfg.BounceRelay, "bounce-relay", "", "SMTP `HOST:PORT` that receives the DSNs of bounce+ and the reports of complain+ recipients; empty records them only")
	fs.IntVar(&o.procs, "procs", defaultProcs, "`CPUs` running the sink (GOMAXPROCS); 0 keeps Go's default, all CPUs, for heavy DKIM verification")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	fs.Visit(func(f *flag.Flag) { o.procsSet = o.procsSet || f.Name == "procs" })
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if cfg.MaxMessages < 1 {
		return o, fmt.Errorf("-max-messages %d: must be at least 1", cfg.MaxMessages)
	}
	if cfg.SlowDelay <= 0 {
		return o, fmt.Errorf("-slow-delay %v: must be positive", cfg.SlowDelay)
	}
	if o.procs < 0 {
		return o, fmt.Errorf("-procs %d: must not be negative", o.procs)
	}
	if keysFile != "" {
		k, err := smtpsink.LoadKeys(keysFile)
		if err != nil {
			return o, err
		}
		cfg.Keys = k
	}
	return o, nil
}

// run serves until ctx ends, then shuts the sink down.
func run(ctx context.Context, cfg smtpsink.Config, stdout io.Writer) error {
	s, err := smtpsink.New(cfg)
	if err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "smtpsink: SMTP on %s\n", s.SMTPAddr())
	if a := s.HTTPAddr(); a != "" {
		fmt.Fprintf(stdout, "smtpsink: HTTP on http://%s/\n", a)
	}
	fmt.Fprintf(stdout, "smtpsink: %d DKIM keys\n", cfg.Keys.Len())

	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
