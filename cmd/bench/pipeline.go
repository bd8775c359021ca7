package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/mail"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/delivery"
	"github.com/floodgate-dev/floodgate/internal/redisx"
	"github.com/floodgate-dev/floodgate/internal/worker"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
	"github.com/floodgate-dev/floodgate/templates"
)

const benchDomain = "example.test"

type pipelineBench struct {
	guard       *guard.Guard // set: the floodgate side runs with the guard
	rdb         redis.UniversalClient
	sink        *smtpsink.Server
	n           int
	concurrency int
	tmpl        *templates.Set
}

func runPipeline(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("pipeline", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: bench pipeline [flags]\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), "\nEnvironment:\n  BENCH_CPUPROFILE   write a CPU profile of the run to this file\n")
	}
	redisURL := fs.String("redis", "redis://127.0.0.1:6379/14", "Redis to use; its database is FLUSHed")
	n := fs.Int("n", 5000, "emails per measurement")
	rounds := fs.Int("rounds", 3, "measurements of each side; the median is reported")
	conc := fs.Int("concurrency", 8, "asynq concurrency of both sides")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rdb, err := redisx.Open(*redisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	keys := map[string]delivery.Key{}
	sinkKeys, _ := smtpsink.ParseKeys(strings.NewReader(""))
	for _, alg := range []string{"rsa", "ed25519"} {
		k, err := delivery.GenerateKey("b"+alg, alg)
		if err != nil {
			return err
		}
		keys[alg] = k
		sinkKeys.Add(k.Selector+"._domainkey."+benchDomain, k.DNSRecord())
	}
	sink, err := smtpsink.New(smtpsink.Config{SMTPAddr: "127.0.0.1:0", HTTPAddr: "-", Keys: sinkKeys, MaxMessages: *n})
	if err != nil {
		return err
	}
	if err := sink.Start(); err != nil {
		return err
	}
	defer sink.Shutdown(context.Background())
	tmpl, err := templates.New("")
	if err != nil {
		return err
	}
	b := &pipelineBench{rdb: rdb, sink: sink, n: *n, concurrency: *conc, tmpl: tmpl}

	fmt.Fprintf(out, "pipeline: %d emails per run, concurrency %d, median of %d rounds; sink verifies DKIM\n\n", *n, *conc, *rounds)
	fmt.Fprintf(out, "%-10s %14s %14s %8s\n", "keys", "floodgate/s", "baseline/s", "ratio")
	for _, set := range []struct {
		name string
		keys []delivery.Key
	}{
		{"rsa", []delivery.Key{keys["rsa"]}},
		{"ed25519", []delivery.Key{keys["ed25519"]}},
		{"both", []delivery.Key{keys["rsa"], keys["ed25519"]}},
	} {
		var fg, base []float64
		for range *rounds {
			r, err := b.measure(ctx, set.keys, b.runFloodgate)
			if err != nil {
				return fmt.Errorf("floodgate %s: %w", set.name, err)
			}
			fg = append(fg, r)
			r, err = b.measure(ctx, set.keys, b.runBaseline)
			if err != nil {
				return fmt.Errorf("baseline %s: %w", set.name, err)
			}
			base = append(base, r)
		}
		f, bl := median(fg), median(base)
		fmt.Fprintf(out, "%-10s %14.0f %14.0f %7.2fx\n", set.name, f, bl, f/bl)
	}

	// The guard's cost on the same path: admission at enqueue is outside
	// the timing; dispatch and settle (two scripts per email) are inside.
	// The policy's rates are set far above the pipeline's, and the reset
	// breaker (which a benchmark's burst would trip) is off, so that only
	// the guard's overhead is measured, not its limits.
	pol, err := guard.ParsePolicy([]byte("global: { rate: 1000000/1s, burst: 1000000 }\ndomains: { default: 1000000/1s }\n" +
		"kinds: { password_reset: { breaker: off } }\n"))
	if err != nil {
		return err
	}
	g, err := guard.New(guard.Config{Redis: rdb, Policy: pol})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%-10s %14s %14s %8s\n", "keys", "guard on/s", "guard off/s", "ratio")
	for _, alg := range []string{"ed25519", "rsa"} {
		var on, off []float64
		for range *rounds {
			b.guard = g
			r, err := b.measure(ctx, []delivery.Key{keys[alg]}, b.runFloodgate)
			if err != nil {
				return fmt.Errorf("guard on: %w", err)
			}
			on = append(on, r)
			b.guard = nil
			if r, err = b.measure(ctx, []delivery.Key{keys[alg]}, b.runFloodgate); err != nil {
				return fmt.Errorf("guard off: %w", err)
			}
			off = append(off, r)
		}
		f, bl := median(on), median(off)
		fmt.Fprintf(out, "%-10s %14.0f %14.0f %7.2fx\n", alg, f, bl, f/bl)
	}
	return nil
}

func median(xs []float64) float64 {
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

// measure empties Redis and the sink, lets run queue n emails and start
// its consumer, and returns emails per second from the consumer's start to
// the sink holding all n, DKIM-verified.
func (b *pipelineBench) measure(ctx context.Context, keys []delivery.Key, run func(context.Context, []delivery.Key) (func() error, func(), error)) (float64, error) {
	if err := b.rdb.FlushDB(ctx).Err(); err != nil {
		return 0, err
	}
	b.sink.Reset()
	start, stop, err := run(ctx, keys)
	if err != nil {
		return 0, err
	}
	defer stop()
	t0 := time.Now()
	if err := start(); err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	msgs, err := b.sink.Wait(wctx, b.n, smtpsink.Query{})
	if err != nil {
		return 0, fmt.Errorf("sink has %d of %d: %w", b.sink.Stats().Received, b.n, err)
	}
	elapsed := time.Since(t0)
	for _, m := range msgs[:min(len(msgs), 20)] {
		for _, d := range m.DKIM {
			if d.Result != "pass" {
				return 0, fmt.Errorf("DKIM %s at the sink: %s %s", d.Selector, d.Result, d.Error)
			}
		}
	}
	return float64(b.n) / elapsed.Seconds(), nil
}

// runFloodgate queues n reset emails with queue.Client and returns a start
// function that runs the real worker: render, MIME, DKIM, pooled SMTP.
func (b *pipelineBench) runFloodgate(ctx context.Context, keys []delivery.Key) (func() error, func(), error) {
	qcfg := queue.Config{Redis: b.rdb, Unguarded: true}
	if b.guard != nil {
		qcfg = queue.Config{Redis: b.rdb, Admitter: b.guard, Kinds: b.guard.Policy().Kinds()}
	}
	qc, err := queue.NewClient(qcfg)
	if err != nil {
		return nil, nil, err
	}
	defer qc.Close()
	for i := range b.n {
		// One source per /24, so that neither the per-source nor the
		// per-group caps refuse what the bench means to deliver.
		r, err := qc.Enqueue(ctx, queue.Email{Kind: queue.KindPasswordReset, To: fmt.Sprintf("user%d@example.com", i), Name: "Bench User",
			Source: fmt.Sprintf("%d.%d.%d.7", 20+i/65536%100, i/256%256, i%256), Data: map[string]string{"reset_url": "https://app.example/reset/0123456789abcdef"}})
		if err != nil {
			return nil, nil, err
		}
		if r.Outcome != queue.Queued {
			return nil, nil, fmt.Errorf("enqueue %d: %s %s", i, r.Outcome, r.Reason)
		}
	}
	signer, err := delivery.NewSigner(benchDomain, keys)
	if err != nil {
		return nil, nil, err
	}
	pool, err := delivery.NewPool(delivery.PoolConfig{Addr: b.sink.SMTPAddr(), TLS: delivery.TLSNone})
	if err != nil {
		return nil, nil, err
	}
	wcfg := worker.Config{
		Redis: b.rdb, Sender: pool, Templates: b.tmpl, Signer: signer,
		From:        mail.Address{Name: "Example App", Address: "no-reply@" + benchDomain},
		Concurrency: b.concurrency,
	}
	if b.guard != nil {
		wcfg.Dispatcher, wcfg.Suppressor, wcfg.Kinds = b.guard, b.guard, b.guard.Policy().Kinds()
	}
	w, err := worker.New(wcfg)
	if err != nil {
		return nil, nil, err
	}
	stop := func() {
		_ = w.Shutdown(context.Background())
		pool.Close()
	}
	return w.Start, stop, nil
}

// baselineTask is the baseline's own payload.
type baselineTask struct {
	ID, To, Name, URL string
}

// runBaseline queues n tasks with plain asynq and returns a start function
// for a plain asynq handler with no floodgate code: it fills a message
// prepared once from the same templates, signs it with go-msgauth and the
// same keys, and sends it with go-smtp over one kept-open connection.
func (b *pipelineBench) runBaseline(ctx context.Context, keys []delivery.Key) (func() error, func(), error) {
	ac := asynq.NewClientFromRedisClient(b.rdb)
	defer ac.Close()
	for i := range b.n {
		p, _ := json.Marshal(baselineTask{ID: fmt.Sprintf("%032x", i), To: fmt.Sprintf("user%d@example.com", i), Name: "Bench User", URL: "https://app.example/reset/0123456789abcdef"})
		if _, err := ac.EnqueueContext(ctx, asynq.NewTask("baseline", p), asynq.Queue("baseline")); err != nil {
			return nil, nil, err
		}
	}
	r, err := b.tmpl.Render(queue.KindPasswordReset, templates.Data{Kind: queue.KindPasswordReset, Name: "Bench User", App: "Example App",
		ExpiresIn: 30 * time.Minute, Values: map[string]string{"reset_url": "https://app.example/reset/0123456789abcdef"}})
	if err != nil {
		return nil, nil, err
	}
	body := "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" +
		strings.ReplaceAll(r.Text, "\n", "\r\n") + "\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" +
		strings.ReplaceAll(r.HTML, "\n", "\r\n") + "\r\n--b1--\r\n"
	var opts []*dkim.SignOptions
	for _, k := range keys {
		opts = append(opts, &dkim.SignOptions{Domain: benchDomain, Selector: k.Selector, Signer: k.Signer,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed})
	}
	conn, err := net.Dial("tcp", b.sink.SMTPAddr())
	if err != nil {
		return nil, nil, err
	}
	c := smtp.NewClient(conn)
	if err := c.Hello("bench.local"); err != nil {
		return nil, nil, err
	}
	var mu sync.Mutex
	handler := func(ctx context.Context, t *asynq.Task) error {
		var bt baselineTask
		if err := json.Unmarshal(t.Payload(), &bt); err != nil {
			return err
		}
		msg := "From: Example App <no-reply@" + benchDomain + ">\r\nTo: " + bt.Name + " <" + bt.To + ">\r\nSubject: " + r.Subject +
			"\r\nDate: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <" + bt.ID + "@" + benchDomain + ">\r\n" + body
		signed := []byte(msg)
		for _, o := range opts {
			var buf bytes.Buffer
			if err := dkim.Sign(&buf, bytes.NewReader([]byte(msg)), o); err != nil {
				return err
			}
			signed = append(buf.Bytes()[:len(buf.Bytes())-len(msg)], signed...)
		}
		mu.Lock()
		defer mu.Unlock()
		if err := c.Mail("no-reply@"+benchDomain, nil); err != nil {
			return err
		}
		if err := c.Rcpt(bt.To, nil); err != nil {
			return err
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		if _, err := w.Write(signed); err != nil {
			return err
		}
		return w.Close()
	}
	srv := asynq.NewServerFromRedisClient(b.rdb, asynq.Config{Concurrency: b.concurrency, Queues: map[string]int{"baseline": 1},
		TaskCheckInterval: 100 * time.Millisecond, LogLevel: asynq.ErrorLevel})
	stop := func() {
		srv.Shutdown()
		_ = c.Quit()
	}
	start := func() error {
		if err := srv.Start(asynq.HandlerFunc(handler)); err != nil {
			return errors.Join(err, c.Close())
		}
		return nil
	}
	return start, stop, nil
}
