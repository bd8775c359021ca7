// Command drill runs floodgate's flood drill: a password-reset flood
// replayed while legitimate mail flows, ending in a report (a table on
// stdout, JSON in -report) of how fast the surge breaker opened, what
// reached the attacked recipients, notification latency, Redis memory and
// conservation of every request.
//
//	go run ./cmd/drill                 # embedded: redis-server, sink, workers in-process
//	go run ./cmd/drill -quick          # a small drill
//	go run ./cmd/drill -scenario all   # attack shapes with legitimate users in them
//	go run ./cmd/drill -redis redis://host:6379 -api http://worker:8080 -sink http://sink:8025
//
// Run "drill -h" for the flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, errHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "drill:", err)
		os.Exit(1)
	}
}
