// Command enqueue puts emails on floodgate's queue, through the same
// validation and admission guard that applications use.
//
//	enqueue -redis redis://127.0.0.1:6379 -kind password_reset \
//	        -to alice@example.com -data reset_url=https://app.example/r/abc
//	enqueue -redis redis://127.0.0.1:6379 -file batch.jsonl
//
// One email prints its receipt as one JSON line (id, kind, outcome, reason).
// A batch file holds one JSON email per line:
//
//	{"kind":"notification","to":"a@example.com","name":"A","source":"203.0.113.7","data":{"subject":"Hi","body":"..."},"idempotency_key":"k1"}
//
// and prints a progress bar and a summary of outcomes.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/floodgate-dev/floodgate/internal/redisx"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "enqueue:", err)
		os.Exit(2)
	}
	redisx.RouteClientLogs(slog.New(slog.DiscardHandler))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "enqueue:", err)
		os.Exit(1)
	}
}
