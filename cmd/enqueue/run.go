package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/schollz/progressbar/v3"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/redisx"
	"github.com/floodgate-dev/floodgate/queue"
)

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
	// AssumeNoEviction: Redis's maxmemory-policy cannot be read; take it
	// to be noeviction.
	AssumeNoEviction bool
}

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

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{Data: map[string]string{}}
	fs := flag.NewFlagSet("enqueue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.RedisURL, "redis", "", "Redis URL (env FLOODGATE_REDIS_URL)")
	fs.StringVar(&c.Kind, "kind", "", "kind of email: password_reset, verify_email, notification, ...")
	fs.StringVar(&c.To, "to", "", "recipient address")
	fs.StringVar(&c.Name, "name", "", "recipient display name")
	fs.StringVar(&c.Source, "source", "", "client IP or principal behind the request")
	fs.Var(dataFlag(c.Data), "data", "template value key=value, repeatable")
	fs.StringVar(&c.IdemKey, "idempotency-key", "", "same key and kind: one email")
	fs.StringVar(&c.File, "file", "", "JSON-lines batch file (- for stdin)")
	fs.IntVar(&c.Parallel, "parallel", 8, "with -file: enqueues in flight at once")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "per-email timeout")
	fs.BoolVar(&c.NoBar, "no-progress", false, "with -file: no progress bar")
	fs.StringVar(&c.Policy, "policy", "", "policy YAML file, the same the workers use (default: built-in policy)")
	fs.BoolVar(&c.AssumeNoEviction, "redis-assume-noeviction", false, "enqueue even when Redis's maxmemory-policy cannot be read (CONFIG GET and INFO refused), taking it to be noeviction")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.RedisURL == "" {
		c.RedisURL = getenv("FLOODGATE_REDIS_URL")
	}
	switch {
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

func run(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
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
	g, err := guard.New(guard.Config{Redis: rdb, Policy: policy})
	if err != nil {
		return err
	}
	client, err := queue.NewClient(queue.Config{Redis: rdb, Admitter: g, Kinds: policy.Kinds(), Timeout: cfg.Timeout})
	if err != nil {
		return err
	}
	defer client.Close()
	if cfg.File != "" {
		return runBatch(ctx, client, cfg, stdout, stderr)
	}
	r, err := client.Enqueue(ctx, queue.Email{
		Kind: cfg.Kind, To: cfg.To, Name: cfg.Name, Source: cfg.Source,
		Data: cfg.Data, IdempotencyKey: cfg.IdemKey,
	})
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(r)
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

// line is one email of a batch file.
type line struct {
	Kind           string            `json:"kind"`
	To             string            `json:"to"`
	Name           string            `json:"name"`
	Source         string            `json:"source"`
	Data           map[string]string `json:"data"`
	IdempotencyKey string            `json:"idempotency_key"`
}

// summary is what a batch prints at the end, as one JSON object.
type summary struct {
	Lines    int            `json:"lines"`
	Outcomes map[string]int `json:"outcomes"`
	Invalid  int            `json:"invalid"`
	Errors   int            `json:"errors"`
	Seconds  float64        `json:"seconds"`
	PerSec   float64        `json:"per_second"`
}

func runBatch(ctx context.Context, client *queue.Client, cfg *config, stdout, stderr io.Writer) error {
	var in io.Reader = os.Stdin
	total := int64(-1)
	if cfg.File != "-" {
		f, err := os.Open(cfg.File)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
		if n, err := countLines(cfg.File); err == nil {
			total = n
		}
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetDescription("enqueue"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetVisibility(!cfg.NoBar),
	)
	start := time.Now()
	s := summary{Outcomes: map[string]int{}}
	var mu sync.Mutex
	type job struct {
		n int
		e queue.Email
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	var firstErr error
	for range cfg.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				r, err := client.Enqueue(ctx, j.e)
				mu.Lock()
				switch {
				case errors.Is(err, queue.ErrInvalid), errors.Is(err, queue.ErrUnknownKind):
					s.Invalid++
					// The error names the field, never its value.
					fmt.Fprintf(stderr, "\nline %d: %v\n", j.n, err)
				case err != nil:
					s.Errors++
					if firstErr == nil {
						firstErr = err
					}
				default:
					s.Outcomes[string(r.Outcome)]++
				}
				mu.Unlock()
				_ = bar.Add(1)
			}
		}()
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var parseErr error
	for sc.Scan() && ctx.Err() == nil {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		mu.Lock()
		s.Lines++
		mu.Unlock()
		var l line
		if err := json.Unmarshal([]byte(text), &l); err != nil {
			mu.Lock()
			s.Invalid++
			mu.Unlock()
			fmt.Fprintf(stderr, "\nline %d: %v\n", s.Lines, err)
			continue
		}
		jobs <- job{n: s.Lines, e: queue.Email{Kind: l.Kind, To: l.To, Name: l.Name, Source: l.Source, Data: l.Data, IdempotencyKey: l.IdempotencyKey}}
	}
	close(jobs)
	wg.Wait()
	_ = bar.Finish()
	if err := sc.Err(); err != nil {
		parseErr = fmt.Errorf("read %s: %w", cfg.File, err)
	}
	s.Seconds = time.Since(start).Seconds()
	if s.Seconds > 0 {
		s.PerSec = float64(s.Lines) / s.Seconds
	}
	fmt.Fprintln(stderr)
	printSummary(stderr, s)
	if err := json.NewEncoder(stdout).Encode(s); err != nil {
		return err
	}
	switch {
	case parseErr != nil:
		return parseErr
	case firstErr != nil:
		return fmt.Errorf("%d emails could not be enqueued, first: %w", s.Errors, firstErr)
	}
	return ctx.Err()
}

func printSummary(w io.Writer, s summary) {
	keys := make([]string, 0, len(s.Outcomes))
	for k := range s.Outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(w, "%d lines in %.1fs (%.0f/s)\n", s.Lines, s.Seconds, s.PerSec)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-12s %d\n", k, s.Outcomes[k])
	}
	if s.Invalid > 0 {
		fmt.Fprintf(w, "  %-12s %d\n", "invalid", s.Invalid)
	}
	if s.Errors > 0 {
		fmt.Fprintf(w, "  %-12s %d\n", "errors", s.Errors)
	}
}

func countLines(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	buf := make([]byte, 64<<10)
	for {
		c, err := f.Read(buf)
		n += int64(strings.Count(string(buf[:c]), "\n"))
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
