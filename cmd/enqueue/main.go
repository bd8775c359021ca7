// Command enqueue puts emails on floodgate's queue, through the same
// validation and admission guard that applications use.
//
//	enqueue -redis redis://127.0.0.1:6379 -kind password_reset \
//	        -to alice@example.com -data reset_url=https://app.example/r/abc
//	enqueue -redis redis://127.0.0.1:6379 -file batch.jsonl
//	producer | enqueue -redis redis://127.0.0.1:6379 -file -
//
// One email prints its receipt as one JSON line (id, kind, outcome, reason).
// A batch file holds one JSON email per line:
//
//	{"kind":"notification","to":"a@example.com","name":"A","source":"203.0.113.7","data":{"subject":"Hi","body":"..."},"idempotency_key":"k1"}
//
// and prints one verdict per line, with the line's number, then a summary;
// a progress bar goes to stderr. "enqueue -h" lists the flags, the
// environment variables and the exit codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/floodgate-dev/floodgate/internal/redisx"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(exitOK)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "enqueue:", err)
		os.Exit(exitUsage)
	}
	redisx.RouteClientLogs(slog.New(slog.DiscardHandler))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "enqueue:", err)
		os.Exit(exitCode(err))
	}
}
