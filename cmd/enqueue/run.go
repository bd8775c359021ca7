package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/keyfile"
	"github.com/floodgate-dev/floodgate/internal/redisx"
	"github.com/floodgate-dev/floodgate/internal/telemetry"
	"github.com/floodgate-dev/floodgate/queue"
)

// Exit codes, documented in the usage and in README.md.
const (
	// exitOK: every email was decided: queued, or refused by policy
	// (duplicate, capped, held, shed, suppressed).
	exitOK = 0
	// exitError: enqueue could not run (bad Redis URL or policy,
	// unreadable file, interrupted).
	exitError = 1
	// exitUsage: bad flags or arguments.
	exitUsage = 2
	// exitInvalid: at least one line (or the one email) was invalid and
	// not enqueued; every other line was decided.
	exitInvalid = 3
	// exitFailed: at least one email could not be enqueued because Redis
	// was unavailable or did not answer in time. It wins over exitInvalid.
	exitFailed = 4
)

// exitErr carries the process exit code of an error.
type exitErr struct {
	code int
	err  error
}

func (e *exitErr) Error() string { return e.err.Error() }
func (e *exitErr) Unwrap() error { return e.err }

// exitCode returns the exit code for an error run returned.
func exitCode(err error) int {
	var e *exitErr
	if errors.As(err, &e) {
		return e.code
	}
	return exitError
}

const usageText = `usage: enqueue [-redis URL] -kind KIND -to ADDR [-name NAME] [-source S]
               [-data key=value ...] [-idempotency-key K]
       enqueue [-redis URL] -file FILE|- [-parallel N] [-no-progress]

One email prints its receipt as one JSON line. A batch (-file, "-" for
standard input) holds one JSON email per line:
  {"kind":"notification","to":"a@example.com","name":"A","source":"203.0.113.7",
   "data":{"subject":"Hi","body":"..."},"idempotency_key":"k1"}
  (optional "account" and "trust" as the -account and -trust flags)
and prints one verdict per line ({"line":N,"outcome":...}) and a last
{"summary":...} line on stdout; errors name the line, never an address.

Flags:
`

const usageTail = `
Environment:
  FLOODGATE_REDIS_URL      Redis URL, when -redis is not given
  FLOODGATE_HASH_KEY       the recipient digest key, when -hash-key-file is not given
  FLOODGATE_PAYLOAD_KEYS   the payload keys, when -payload-key-file is not given
                           (both the workers' own; make them with floodctl keygen)
`

const usageExit = `
Exit status:
  0  every email was decided: queued, or refused by policy (duplicate,
     capped, held, shed, suppressed)
  1  enqueue could not run (bad Redis URL or policy, unreadable file,
     interrupted)
  2  usage error
  3  a line (or the email) was invalid and not enqueued: malformed JSON,
     an unknown field, a line over 1 MiB, a refused field or kind
  4  an email could not be enqueued: Redis unavailable or too slow
     (wins over 3)
`

type config struct {
	RedisURL string
	Kind     string
	To       string
	Name     string
	Source   string
	Data     map[string]string
	IdemKey  string
	File     string
	Parallel int
	Timeout  time.Duration
	NoBar    bool
	Policy   string
	Account  string
	Trust    string
	Confirm  string
	Report   string
	// AssumeNoEviction: Redis's maxmemory-policy cannot be read; take it
	// to be noeviction.
	AssumeNoEviction bool
	hashKeyFile      string
	payloadKeyFile   string
	noKeys           bool
	keys             keyfile.Secrets
	// getenv reads the OTEL_* variables (telemetry.Setup).
	getenv func(string) string
}

// serviceName is the default service.name of enqueue's spans.
const serviceName = "floodgate-enqueue"

type dataFlag map[string]string

func (d dataFlag) String() string { return "" }
func (d dataFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", v)
	}
	d[k] = val
	return nil
}

// parseConfig reads the flags, then the environment for what they leave
// unset. "-h" prints the usage to stderr and returns flag.ErrHelp.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{Data: map[string]string{}, getenv: getenv}
	fs := flag.NewFlagSet("enqueue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), usageTail)
		fmt.Fprint(fs.Output(), "\n"+telemetry.Usage(serviceName))
		fmt.Fprint(fs.Output(), usageExit)
	}
	fs.StringVar(&c.RedisURL, "redis", "", "Redis URL (env FLOODGATE_REDIS_URL)")
	fs.StringVar(&c.Kind, "kind", "", "kind of email: password_reset, verify_email, notification, ...")
	fs.StringVar(&c.To, "to", "", "recipient address")
	fs.StringVar(&c.Name, "name", "", "recipient display name")
	fs.StringVar(&c.Source, "source", "", "client IP or principal behind the request")
	fs.Var(dataFlag(c.Data), "data", "template value key=value, repeatable")
	fs.StringVar(&c.IdemKey, "idempotency-key", "", "same key and kind: one email")
	fs.StringVar(&c.File, "file", "", "JSON-lines batch file (- for standard input)")
	fs.IntVar(&c.Parallel, "parallel", 8, "with -file: enqueues in flight at once")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "per-email timeout")
	fs.BoolVar(&c.NoBar, "no-progress", false, "with -file: no progress bar")
	fs.StringVar(&c.Policy, "policy", "", "policy YAML file, the same the workers use (default: built-in policy)")
	fs.StringVar(&c.Account, "account", "", "the application's id of the account: per-recipient caps key on it")
	fs.StringVar(&c.Trust, "trust", "", "a signal the application verified: device, session or challenge")
	fs.StringVar(&c.Confirm, "confirm", "", "instead of enqueueing: the link in the email with this receipt id was used")
	fs.StringVar(&c.Report, "report", "", "instead of enqueueing: the recipient of the email with this receipt id did not ask for it")
	fs.BoolVar(&c.AssumeNoEviction, "redis-assume-noeviction", false, "enqueue even when Redis's maxmemory-policy cannot be read (CONFIG GET and INFO refused), taking it to be noeviction")
	fs.StringVar(&c.hashKeyFile, "hash-key-file", "", "file holding the recipient digest key (default env FLOODGATE_HASH_KEY)")
	fs.StringVar(&c.payloadKeyFile, "payload-key-file", "", "file holding the payload keys (default env FLOODGATE_PAYLOAD_KEYS)")
	fs.BoolVar(&c.noKeys, "insecure-no-keys", false, "run without the hash and payload keys: guessable digests, plaintext payloads (tests and experiments only)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.RedisURL == "" {
		c.RedisURL = getenv("FLOODGATE_REDIS_URL")
	}
	var err error
	if c.keys, err = keyfile.Load(getenv, c.hashKeyFile, c.payloadKeyFile, !c.noKeys); err != nil {
		return nil, err
	}
	feedback := c.Confirm != "" || c.Report != ""
	switch {
	case c.Confirm != "" && c.Report != "":
		return nil, errors.New("-confirm and -report are one each")
	case feedback && (c.File != "" || c.Kind != "" || c.To != ""):
		return nil, errors.New("-confirm and -report take no -kind, -to or -file")
	case feedback && c.RedisURL != "":
		return c, nil
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case c.RedisURL == "":
		return nil, errors.New("-redis (or FLOODGATE_REDIS_URL) is required")
	case c.File == "" && (c.Kind == "" || c.To == ""):
		return nil, errors.New("-kind and -to are required (or -file)")
	case c.File != "" && (c.Kind != "" || c.To != ""):
		return nil, errors.New("-file cannot be combined with -kind/-to")
	case c.Parallel <= 0:
		return nil, errors.New("-parallel must be positive")
	}
	return c, nil
}

// run enqueues the email or the batch cfg names. A batch reads stdin when
// cfg.File is "-". Errors carry their exit code (see exitCode).
func run(ctx context.Context, cfg *config, stdin io.Reader, stdout, stderr io.Writer) error {
	rdb, err := redisx.Open(cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := checkRedis(ctx, rdb, cfg.AssumeNoEviction); err != nil {
		return err
	}
	policy := guard.DefaultPolicy()
	if cfg.Policy != "" {
		if policy, err = guard.LoadPolicy(cfg.Policy); err != nil {
			return err
		}
	}
	tel, err := telemetry.Setup(ctx, serviceName, cfg.getenv, stderr)
	if err != nil {
		return err
	}
	defer func() {
		// The spans of this run are exported before it exits.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(ctx); err != nil {
			fmt.Fprintln(stderr, "enqueue: exporting spans:", err)
		}
	}()
	tp := tel.TracerProvider()
	g, err := guard.New(guard.Config{Redis: rdb, Policy: policy, HashKey: cfg.keys.HashKey, Keyring: cfg.keys.Keyring,
		TracerProvider: tp})
	if err != nil {
		return err
	}
	client, err := queue.NewClient(queue.Config{Redis: rdb, Admitter: g, Kinds: policy.Kinds(), Timeout: cfg.Timeout,
		Keyring: cfg.keys.Keyring, TracerProvider: tp})
	if err != nil {
		return err
	}
	defer client.Close()
	if cfg.Confirm != "" || cfg.Report != "" {
		return feedback(ctx, client, cfg, stdout)
	}
	if cfg.File != "" {
		return runBatch(ctx, client, cfg, stdin, stdout, stderr)
	}
	r, err := client.Enqueue(ctx, queue.Email{
		Kind: cfg.Kind, To: cfg.To, Name: cfg.Name, Source: cfg.Source,
		Data: cfg.Data, IdempotencyKey: cfg.IdemKey, Account: cfg.Account, Trust: queue.Trust(cfg.Trust),
	})
	switch {
	case isInvalid(err):
		return &exitErr{exitInvalid, err}
	case err != nil:
		return &exitErr{exitFailed, err}
	}
	return json.NewEncoder(stdout).Encode(r)
}

// feedback sends -confirm or -report and prints one JSON line.
func feedback(ctx context.Context, client *queue.Client, cfg *config, stdout io.Writer) error {
	op, id, f := "confirm", cfg.Confirm, client.Confirm
	if cfg.Report != "" {
		op, id, f = "report", cfg.Report, client.Report
	}
	err := f(ctx, id)
	switch {
	case errors.Is(err, queue.ErrUnknownEmail):
		return &exitErr{exitInvalid, fmt.Errorf("%s %s: no sent email with that id (never sent, expired, or already given feedback)", op, id)}
	case isInvalid(err):
		return &exitErr{exitInvalid, err}
	case err != nil:
		return &exitErr{exitFailed, err}
	}
	return json.NewEncoder(stdout).Encode(map[string]string{"id": id, op: "recorded"})
}

// checkRedis refuses a Redis that may evict keys: the emails queued into
// it, and the caps that admitted them, could vanish without a trace. A
// Redis that does not answer is left to the enqueue to report.
func checkRedis(ctx context.Context, rdb redis.UniversalClient, assume bool) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := guard.CheckRedis(ctx, rdb)
	switch {
	case err == nil, errors.Is(err, guard.ErrUnavailable), assume && errors.Is(err, guard.ErrPolicyUnknown):
		return nil
	case errors.Is(err, guard.ErrPolicyUnknown):
		return fmt.Errorf("%w; if it is noeviction, run with -redis-assume-noeviction", err)
	}
	return err
}

// isInvalid reports whether err refuses the email itself, so that sending it
// again cannot help.
func isInvalid(err error) bool {
	return errors.Is(err, queue.ErrInvalid) || errors.Is(err, queue.ErrUnknownKind)
}
