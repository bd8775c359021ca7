package drill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/adminapi"
	"github.com/floodgate-dev/floodgate/internal/delivery"
	"github.com/floodgate-dev/floodgate/internal/redisx"
	"github.com/floodgate-dev/floodgate/internal/worker"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
	"github.com/floodgate-dev/floodgate/templates"
)

// Embedded stack settings.
const (
	// senderDomain signs and sends the drill's mail.
	senderDomain = "drill.example"
	// sinkCapacity is the embedded sink's message store; the collector
	// reads new messages every sinkPoll, long before they are evicted.
	sinkCapacity = 100_000
)

// sinkAPI is what the drill reads from a sink: the in-process server or
// the HTTP client of a remote one.
type sinkAPI interface {
	Messages(ctx context.Context, q smtpsink.Query) ([]smtpsink.Message, error)
	Stats(ctx context.Context) (smtpsink.Stats, error)
}

var _ sinkAPI = (*smtpsink.Client)(nil)

// localSink adapts an in-process sink.
type localSink struct{ s *smtpsink.Server }

func (l localSink) Messages(_ context.Context, q smtpsink.Query) ([]smtpsink.Message, error) {
	return l.s.Messages(q), nil
}

func (l localSink) Stats(context.Context) (smtpsink.Stats, error) { return l.s.Stats(), nil }

// stack is what a drill runs against.
type stack struct {
	// desc says what was started or reached, for the report.
	desc         string
	redisAddr    string
	redisVersion string
	// rdb serves the enqueuers, INFO and the queue inspector.
	rdb   redis.UniversalClient
	admin *adminapi.Client
	sink  sinkAPI
	// stopWorkers stops the embedded workers so that the final counts
	// are still; nil in deployment mode.
	stopWorkers func(context.Context) error
	closers     []func()
}

// close releases everything in reverse order of creation.
func (s *stack) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// startEmbedded starts redis-server, the sink, the workers and the admin
// API in this process. On error everything started is stopped.
func startEmbedded(ctx context.Context, cfg *Config, policy *guard.Policy, log *slog.Logger) (_ *stack, err error) {
	s := &stack{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	rp, err := startRedis(ctx, cfg.RedisServer)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, rp.Stop)
	s.redisAddr, s.redisVersion = rp.Addr, rp.Version

	var keys []delivery.Key
	sinkKeys, err := smtpsink.ParseKeys(strings.NewReader(""))
	if err != nil {
		return nil, err
	}
	for _, k := range []struct{ sel, alg string }{{"drill-rsa", "rsa"}, {"drill-ed25519", "ed25519"}} {
		key, err := delivery.GenerateKey(k.sel, k.alg)
		if err != nil {
			return nil, fmt.Errorf("drill: %s key: %w", k.alg, err)
		}
		keys = append(keys, key)
		sinkKeys.Add(k.sel+"._domainkey."+senderDomain, key.DNSRecord())
	}
	sink, err := smtpsink.New(smtpsink.Config{SMTPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Keys: sinkKeys,
		MaxMessages: sinkCapacity, Logger: log})
	if err != nil {
		return nil, err
	}
	if err := sink.Start(); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = sink.Shutdown(sctx)
	})
	s.sink = localSink{sink}

	tmpl, err := templates.New("")
	if err != nil {
		return nil, err
	}
	signer, err := delivery.NewSigner(senderDomain, keys)
	if err != nil {
		return nil, err
	}
	var workers []*worker.Worker
	var admin *guard.Guard
	for i := range cfg.Workers {
		rdb, err := redisx.Open(rp.URL())
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, func() { rdb.Close() })
		g, err := guard.New(guard.Config{Redis: rdb, Policy: policy, Logger: log})
		if err != nil {
			return nil, err
		}
		if i == 0 {
			admin = g
		}
		pool, err := delivery.NewPool(delivery.PoolConfig{Addr: sink.SMTPAddr(), TLS: delivery.TLSNone,
			MaxConns: max(1, min(cfg.Concurrency, 16)), Logger: log})
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, func() { pool.Close() })
		w, err := worker.New(worker.Config{
			Redis:           rdb,
			Sender:          pool,
			Templates:       tmpl,
			Signer:          signer,
			From:            mail.Address{Name: "Floodgate Drill", Address: "no-reply@" + senderDomain},
			Kinds:           policy.Kinds(),
			Dispatcher:      g,
			Suppressor:      g,
			Sweeper:         g,
			Concurrency:     cfg.Concurrency,
			ShutdownTimeout: 5 * time.Second,
			PollInterval:    cfg.pollInterval,
			SweepInterval:   cfg.sweepInterval,
			Logger:          log,
		})
		if err != nil {
			return nil, err
		}
		if err := w.Start(); err != nil {
			return nil, err
		}
		workers = append(workers, w)
	}
	s.stopWorkers = func(ctx context.Context) error {
		errs := make([]error, len(workers))
		done := make(chan int)
		for i, w := range workers {
			go func() { errs[i] = w.Shutdown(ctx); done <- i }()
		}
		for range workers {
			<-done
		}
		return errors.Join(errs...)
	}
	// Shutdown is idempotent: stopping again at close is harmless.
	s.closers = append(s.closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.stopWorkers(sctx)
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("drill: admin listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", admin.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	s.closers = append(s.closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	if s.admin, err = adminapi.New(adminapi.Config{BaseURL: "http://" + ln.Addr().String()}); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.admin.CloseIdleConnections)

	if s.rdb, err = redisx.Open(rp.URL()); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.rdb.Close() })
	s.desc = fmt.Sprintf("embedded: redis-server %s at %s (subprocess), smtpsink in-process (smtp %s, http http://%s), %d workers x %d, admin API http://%s/v1/",
		rp.Version, rp.Addr, sink.SMTPAddr(), sink.HTTPAddr(), cfg.Workers, cfg.Concurrency, ln.Addr())
	return s, nil
}

// enqueuer returns the drill's own admission guard on the stack's Redis
// and the queue client that enqueues through it.
func (s *stack) enqueuer(policy *guard.Policy, log *slog.Logger) (*guard.Guard, *queue.Client, error) {
	g, err := guard.New(guard.Config{Redis: s.rdb, Policy: policy, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	client, err := queue.NewClient(queue.Config{Redis: s.rdb, Admitter: g, Kinds: policy.Kinds(), Logger: log})
	if err != nil {
		return nil, nil, err
	}
	return g, client, nil
}

// connectDeployment reaches a running stack and checks each part answers.
func connectDeployment(ctx context.Context, cfg *Config) (_ *stack, err error) {
	s := &stack{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.rdb, err = redisx.Open(cfg.RedisURL); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.rdb.Close() })
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := s.rdb.InfoMap(cctx, "server").Result()
	if err != nil {
		return nil, fmt.Errorf("drill: -redis: %w", err)
	}
	s.redisVersion = info["Server"]["redis_version"]
	s.redisAddr = redactURL(cfg.RedisURL)
	if s.admin, err = adminapi.New(adminapi.Config{BaseURL: cfg.APIURL, Token: cfg.Token}); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.admin.CloseIdleConnections)
	if _, err := s.admin.Stats(cctx); err != nil {
		switch {
		case errors.Is(err, adminapi.ErrUnauthorized):
			return nil, fmt.Errorf("drill: -api %s: unauthorized: set FLOODGATE_ADMIN_TOKEN (or -token-file) to the worker's admin token", cfg.APIURL)
		case errors.Is(err, adminapi.ErrUnreachable):
			return nil, fmt.Errorf("drill: -api: %w (the worker must run with -http and -admin)", err)
		}
		return nil, fmt.Errorf("drill: -api: %w", err)
	}
	sc := smtpsink.NewClient(cfg.SinkURL)
	s.closers = append(s.closers, sc.CloseIdleConnections)
	if _, err := sc.Stats(cctx); err != nil {
		return nil, fmt.Errorf("drill: -sink: %w", err)
	}
	s.sink = sc
	s.desc = fmt.Sprintf("deployment: redis %s (%s), admin API %s, sink %s", s.redisAddr, s.redisVersion, cfg.APIURL, cfg.SinkURL)
	return s, nil
}

// redactURL drops a password from a Redis URL.
func redactURL(raw string) string {
	if i := strings.Index(raw, "://"); i >= 0 {
		if j := strings.LastIndex(raw, "@"); j > i {
			return raw[:i+3] + "xxxxx@" + raw[j+1:]
		}
	}
	return raw
}
