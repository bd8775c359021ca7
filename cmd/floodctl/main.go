// Command floodctl is the operator CLI for a floodgate worker's admin API:
// inspect, trip, reset, release and purge the surge breakers, read the
// guard's counts and decision log, and manage the suppression list.
//
//	floodctl [-api http://127.0.0.1:8080] [-token-file F] [-json] COMMAND [ARGS]
//
// The token comes from -token-file or the environment variable
// FLOODGATE_ADMIN_TOKEN, never from the command line. Run "floodctl help"
// for the commands.
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
		fmt.Fprintln(os.Stderr, "floodctl:", err)
		os.Exit(1)
	}
}
