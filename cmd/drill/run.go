package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/drill"
)

// errUsage is returned after a usage problem was printed; main exits 2.
var errUsage = errors.New("usage")

// errHelp is returned after the usage was printed for -h; main exits 0.
var errHelp = errors.New("help")

// options are the flags that are not part of drill.Config.
type options struct {
	quick      bool
	policyFile string
	tokenFile  string
	report     string
	noProgress bool
	strict     bool
	logLevel   string
	domains    string
	cpuProfile string
	scenario   string
	speed      float64
}

// flags binds the flags to cfg and o, with their current values as
// defaults.
func flags(cfg *drill.Config, o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("drill", flag.ContinueOnError)
	fs.StringVar(&cfg.RedisURL, "redis", cfg.RedisURL, "deployment mode: the stack's Redis URL (needs -api and -sink); empty runs the embedded stack")
	fs.StringVar(&cfg.APIURL, "api", cfg.APIURL, "deployment mode: the worker's admin API, e.g. http://worker:8080")
	fs.StringVar(&cfg.SinkURL, "sink", cfg.SinkURL, "deployment mode: the smtpsink's HTTP API, e.g. http://sink:8025")
	fs.StringVar(&o.tokenFile, "token-file", o.tokenFile, "deployment mode: file holding the admin token (default env FLOODGATE_ADMIN_TOKEN)")
	fs.StringVar(&o.policyFile, "policy", o.policyFile, "policy YAML, the same file the workers use (default: built-in policy)")
	fs.IntVar(&cfg.Attack, "attack", cfg.Attack, "attack password_reset requests")
	fs.IntVar(&cfg.Recipients, "recipients", cfg.Recipients, "distinct attacked recipients (victimN@-attack-domain)")
	fs.IntVar(&cfg.Sources, "sources", cfg.Sources, "distinct attack sources")
	fs.Float64Var(&cfg.AttackRate, "attack-rate", cfg.AttackRate, "attack requests per second; 0 = as fast as the machine takes them")
	fs.IntVar(&cfg.Parallel, "parallel", cfg.Parallel, "concurrent attack enqueuers")
	fs.StringVar(&cfg.AttackDomain, "attack-domain", cfg.AttackDomain, "attacked recipients' domain")
	fs.Float64Var(&cfg.NotifyRate, "notify-rate", cfg.NotifyRate, "legitimate notifications per second, throughout")
	fs.Float64Var(&cfg.LegitResetRate, "legit-reset-rate", cfg.LegitResetRate, "legitimate password resets per second for other users, throughout")
	fs.StringVar(&o.domains, "legit-domains", o.domains, "comma-separated domains of legitimate recipients, used in turn")
	fs.DurationVar(&cfg.Quiet, "quiet", cfg.Quiet, "legitimate-only phase before the attack (quiet latency, breaker baseline)")
	fs.DurationVar(&cfg.Drain, "drain", cfg.Drain, "phase after the attack for mail in flight to settle")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "embedded mode: in-process workers")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "embedded mode: emails each worker processes at once")
	fs.BoolVar(&o.quick, "quick", o.quick, "a small drill: 20,000 requests over 5,000 recipients from 100 sources, quiet 5s, drain 5s (other flags still apply)")
	fs.StringVar(&o.report, "report", o.report, "write the JSON report to this file (\"\" writes none)")
	fs.BoolVar(&o.noProgress, "no-progress", o.noProgress, "no phase announcements or progress bar on stderr")
	fs.BoolVar(&o.strict, "strict", o.strict, "exit 1 when a target or check fails")
	fs.StringVar(&o.cpuProfile, "cpuprofile", o.cpuProfile, "write a CPU profile of the drill process to this file")
	fs.StringVar(&o.scenario, "scenario", o.scenario, "run a scenario with legitimate users instead of the classic drill: "+strings.Join(drill.ScenarioNames, ", ")+", or all (embedded stack; -quick for the short variants)")
	fs.Float64Var(&o.speed, "speed", o.speed, "scenarios: simulated seconds per real second (0: each scenario's own, 60 or 120)")
	fs.StringVar(&o.logLevel, "log-level", o.logLevel, "embedded components' log level on stderr: debug, info, warn, error")
	return fs
}

// parse reads args over the defaults, and over the quick drill's when
// -quick is given, so that explicit flags always win.
//
// The logger and the progress bar share stderr: writes to it are
// serialised.
func parse(args []string, stderr io.Writer) (drill.Config, options, error) {
	newDefaults := func(quick bool) (drill.Config, options) {
		c := drill.DefaultConfig()
		if quick {
			c = drill.QuickConfig()
		}
		return c, options{quick: quick, report: "drill-report.json", logLevel: "warn", domains: strings.Join(c.LegitDomains, ",")}
	}
	cfg, o := newDefaults(false)
	fs := flags(&cfg, &o)
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if err == nil && o.quick {
		cfg, o = newDefaults(true)
		fs = flags(&cfg, &o)
		fs.SetOutput(io.Discard)
		err = fs.Parse(args)
	}
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stderr)
		fmt.Fprintln(stderr, "usage: drill [flags]   (embedded stack)\n       drill -redis URL -api URL -sink URL [flags]   (a running deployment)\n       drill -scenario NAME|all [-quick] [-strict] [-speed N]   (attack shapes with legitimate users, embedded)")
		fs.PrintDefaults()
		fmt.Fprint(stderr, `
Environment:
  FLOODGATE_ADMIN_TOKEN   deployment mode: the admin token, when -token-file is not given

Exit status: 0 the drill ran (with -strict: and met every target), 1 it failed, 2 usage error.
`)
		return cfg, o, errHelp
	}
	if err != nil {
		fmt.Fprintf(stderr, "drill: %v (drill -h lists the flags)\n", err)
		return cfg, o, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "drill: unexpected argument %q (drill -h lists the flags)\n", fs.Arg(0))
		return cfg, o, errUsage
	}
	cfg.LegitDomains = nil
	for _, d := range strings.Split(o.domains, ",") {
		if d = strings.TrimSpace(d); d != "" {
			cfg.LegitDomains = append(cfg.LegitDomains, d)
		}
	}
	if o.policyFile != "" {
		p, err := guard.LoadPolicy(o.policyFile)
		if err != nil {
			return cfg, o, err
		}
		cfg.Policy, cfg.PolicyName = p, o.policyFile
	}
	if !cfg.Embedded() {
		if o.tokenFile != "" {
			b, err := os.ReadFile(o.tokenFile)
			if err != nil {
				return cfg, o, fmt.Errorf("-token-file: %w", err)
			}
			cfg.Token = strings.TrimSpace(string(b))
		} else {
			cfg.Token = strings.TrimSpace(os.Getenv("FLOODGATE_ADMIN_TOKEN"))
		}
	} else if o.tokenFile != "" {
		fmt.Fprintln(stderr, "drill: -token-file is for deployment mode (-redis, -api, -sink)")
		return cfg, o, errUsage
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "drill: %v\n", err)
		return cfg, o, errUsage
	}
	if o.scenario != "" {
		if o.scenario != "all" && !slices.Contains(drill.ScenarioNames, o.scenario) {
			fmt.Fprintf(stderr, "drill: -scenario: no scenario %q (have %s, or all)\n", o.scenario, strings.Join(drill.ScenarioNames, ", "))
			return cfg, o, errUsage
		}
		if o.speed < 0 || o.speed > 1000 {
			fmt.Fprintln(stderr, "drill: -speed must be between 1 and 1000 (0: each scenario's own)")
			return cfg, o, errUsage
		}
		if !cfg.Embedded() {
			fmt.Fprintln(stderr, "drill: -scenario runs on the embedded stack only: drop -redis, -api and -sink")
			return cfg, o, errUsage
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(stderr, "drill: -log-level: %v\n", err)
		return cfg, o, errUsage
	}
	shared := &syncWriter{w: stderr}
	cfg.Logger = slog.New(slog.NewTextHandler(shared, &slog.HandlerOptions{Level: level}))
	if !o.noProgress {
		cfg.Progress = shared
	}
	return cfg, o, nil
}

// run parses args, runs the drill, prints the report's table to stdout and
// writes its JSON to -report.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if o.scenario != "" {
		return runScenarios(ctx, cfg, o, stdout, stderr)
	}
	rep, err := drill.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if err := rep.WriteTable(stdout); err != nil {
		return err
	}
	if err := writeReport(o, rep, stderr); err != nil {
		return err
	}
	if o.strict && !rep.Passed() {
		return errors.New("a target or check failed (-strict)")
	}
	return nil
}

// runScenarios runs -scenario (one, or all in turn), prints each
// report's table and writes their JSON, an array, to -report.
func runScenarios(ctx context.Context, cfg drill.Config, o options, stdout, stderr io.Writer) error {
	if !cfg.Embedded() {
		return errors.New("-scenario runs on the embedded stack only: drop -redis, -api and -sink")
	}
	names := []string{o.scenario}
	if o.scenario == "all" {
		names = drill.ScenarioNames
	}
	var reps []*drill.ScenarioReport
	ok := true
	for _, name := range names {
		rep, err := drill.RunScenario(ctx, drill.ScenarioConfig{Name: name, Quick: o.quick, Speed: o.speed, Policy: cfg.Policy,
			Workers: cfg.Workers, Concurrency: cfg.Concurrency, RedisServer: cfg.RedisServer, Progress: cfg.Progress, Logger: cfg.Logger})
		if err != nil {
			return err
		}
		reps = append(reps, rep)
		ok = ok && rep.OK
		if err := rep.WriteText(stdout); err != nil {
			return err
		}
		fmt.Fprintln(stdout)
	}
	if err := writeReport(o, reps, stderr); err != nil {
		return err
	}
	if o.strict && !ok {
		return errors.New("a scenario missed a target (-strict)")
	}
	return nil
}

// writeReport writes v's JSON to -report, when given.
func writeReport(o options, v any, stderr io.Writer) error {
	if o.report == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(o.report, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("-report: %w", err)
	}
	if !o.noProgress {
		fmt.Fprintf(stderr, "drill: report written to %s\n", o.report)
	}
	return nil
}

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
