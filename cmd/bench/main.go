// Command bench measures floodgate side by side with baselines on this
// machine, and prints ratios. It is for humans and release notes, not CI.
//
//	go run ./cmd/bench pipeline [-n 5000] [-rounds 3]   # worker vs plain asynq+go-msgauth+go-smtp
//
// Each figure is measured against its baseline in the same run, on the same
// Redis and the same sink, alternating the two to share any drift.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

const usage = `usage: bench pipeline [flags]   (bench pipeline -h lists them)

pipeline  worker delivery vs plain asynq + go-msgauth + go-smtp, guard on and off

Environment:
  BENCH_CPUPROFILE   write a CPU profile of the run to this file
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(os.Stderr, usage)
		os.Exit(0)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if prof := os.Getenv("BENCH_CPUPROFILE"); prof != "" {
		f, err := os.Create(prof)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	var err error
	switch os.Args[1] {
	case "pipeline":
		err = runPipeline(ctx, os.Args[2:], os.Stdout)
	default:
		err = fmt.Errorf("unknown benchmark %q", os.Args[1])
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
