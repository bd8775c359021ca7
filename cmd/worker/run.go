package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/mail"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/delivery"
	"github.com/floodgate-dev/floodgate/internal/devstack"
	"github.com/floodgate-dev/floodgate/internal/redisx"
	"github.com/floodgate-dev/floodgate/internal/telemetry"
	"github.com/floodgate-dev/floodgate/internal/worker"
	"github.com/floodgate-dev/floodgate/templates"
)

// started is what run reports once the worker is up; tests wait on it.
type started struct {
	HTTPAddr     string
	RedisURL     string
	BounceAddr   string
	WebhooksAddr string
	Stack        *devstack.Stack
	// Relay is the background relay check behind /readyz.
	Relay *relayMonitor
}

// run starts the worker and blocks until ctx ends, then shuts down in this
// order: stop taking emails and finish running sends (worker), stop the
// HTTP server, flush breaker notifications (guard), close SMTP connections,
// stop the embedded stack.
func run(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	return runWith(ctx, cfg, stdout, stderr, nil)
}

func runWith(ctx context.Context, cfg *config, stdout, stderr io.Writer, up chan<- started) error {
	logger, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	redisx.RouteClientLogs(logger)
	var stack *devstack.Stack
	var keys []delivery.Key
	if cfg.Dev {
		stack, err = devstack.Start(devstack.Config{SMTPAddr: cfg.DevSMTPAddr, HTTPAddr: cfg.DevHTTPAddr, Logger: logger})
		if err != nil {
			return err
		}
		defer stack.Shutdown(context.WithoutCancel(ctx))
		cfg.RedisURL = stack.RedisURL()
		cfg.SMTPAddr, cfg.SMTPTLS = stack.Sink.SMTPAddr(), "none"
		cfg.DKIMDomain = stack.Domain
		keys = stack.Keys
		// The stack's own keys, which its banner gives cmd/enqueue.
		cfg.Secrets = stack.Secrets
		if cfg.From == "" {
			cfg.From = "Floodgate Dev <no-reply@" + stack.Domain + ">"
		}
	}
	for _, spec := range cfg.DKIMKeys {
		sel, path, ok := strings.Cut(spec, "=")
		if !ok || sel == "" || path == "" {
			return fmt.Errorf("-dkim-key %q: want SELECTOR=PEMFILE", spec)
		}
		k, err := delivery.LoadKey(sel, path)
		if err != nil {
			return fmt.Errorf("-dkim-key %s: %w", sel, err)
		}
		keys = append(keys, k)
	}
	var signer *delivery.Signer
	if len(keys) > 0 {
		if signer, err = delivery.NewSigner(cfg.DKIMDomain, keys); err != nil {
			return err
		}
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return fmt.Errorf("-from: %w", err)
	}
	tmpl, err := templates.New(cfg.TemplatesDir)
	if err != nil {
		return err
	}
	policy := guard.DefaultPolicy()
	if cfg.PolicyFile != "" {
		if policy, err = guard.LoadPolicy(cfg.PolicyFile); err != nil {
			return err
		}
	}
	kinds := policy.Kinds()
	if err := tmpl.Require(slices.Sorted(maps.Keys(kinds))); err != nil {
		return fmt.Errorf("%w (add the files under -templates DIR, or remove the kind from the policy)", err)
	}

	rdb, err := redisx.Open(cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	getenv := cfg.getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	tel, err := telemetry.Setup(ctx, serviceName, getenv, stderr)
	if err != nil {
		return err
	}
	// Deferred before the worker's shutdown runs: the spans of the last
	// emails are exported after them.
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(ctx); err != nil {
			logger.Warn("exporting spans at shutdown", "err", err)
		}
	}()
	tp := tel.TracerProvider()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mon := newRedisMonitor(rdb, cfg.AssumeNoEviction, logger, reg)
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = rdb.Ping(pingCtx).Err()
	cancel()
	if err != nil {
		// Not fatal: tasks stay in Redis, and asynq reconnects when it is
		// back; the monitor checks its settings then.
		logger.Warn("redis not reachable at start-up; will keep trying", "err", err)
	} else {
		checkCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rep, err := mon.check(checkCtx)
		cancel()
		if err != nil && !errors.Is(err, guard.ErrUnavailable) {
			return refusal(err)
		}
		if !cfg.Dev {
			for _, addr := range rep.NotPersistent() {
				logger.Warn("redis has no persistence (appendonly no, no RDB save points): a restart loses every queued email, claim and counter",
					"redis", addr)
			}
		}
	}
	monCtx, stopMon := context.WithCancel(ctx)
	defer stopMon()
	go mon.run(monCtx, cfg.RedisCheck)

	pool, err := delivery.NewPool(delivery.PoolConfig{
		Addr:     cfg.SMTPAddr,
		TLS:      delivery.TLSMode(cfg.SMTPTLS),
		Username: cfg.SMTPUser,
		Password: cfg.SMTPPassword,
		MaxConns: max(1, min(cfg.Concurrency, 16)),
		Logger:   logger,
	})
	if err != nil {
		return err
	}
	defer pool.Close()
	reg.MustRegister(pool.Collector())
	relay := newRelayMonitor(pool.Check, cfg.RelayCheck, logger, reg)
	relayCtx, stopRelay := context.WithCancel(ctx)
	defer stopRelay()
	go relay.run(relayCtx)

	if cfg.Secrets.HashKey == nil || cfg.Secrets.Keyring == nil {
		logger.Warn("running without the hash or the payload key: recipients have guessable digests and queued emails hold addresses and links in plaintext")
	}
	g, err := guard.New(guard.Config{Redis: rdb, Policy: policy, Logger: logger, Registerer: reg,
		Webhook: cfg.Webhook, WebhookSecret: cfg.WebhookSecret, HashKey: cfg.Secrets.HashKey, Keyring: cfg.Secrets.Keyring,
		MessageIDDomain: from.Address[strings.LastIndexByte(from.Address, '@')+1:], TracerProvider: tp})
	if err != nil {
		return err
	}
	// Last to stop: breaker transitions seen while draining still notify.
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			logger.Warn("breaker webhook: undelivered notifications at shutdown", "err", err)
		}
	}()
	fb, err := startBounces(cfg, g, policy, cfg.DKIMDomain, logger)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fb.shutdown(ctx)
	}()
	if cfg.Dev && fb.bounceAddr() != "" {
		// The sink's DSNs and complaints (bounce+ and complain+ recipients)
		// go to the embedded receiver, which closes the loop: the next email
		// to such a recipient is suppressed.
		if err := stack.Sink.SetBounceRelay(loopbackFor(fb.bounceAddr())); err != nil {
			return err
		}
	}
	reg.MustRegister(g.BounceCollector(), g.HeldCollector(), worker.QueueCollector(rdb, logger))
	w, err := worker.New(worker.Config{
		Dispatcher:       g,
		Keyring:          cfg.Secrets.Keyring,
		Suppressor:       smtpSuppressor{g},
		Sweeper:          g,
		ReturnPath:       fb.returnPath(),
		Observe:          fb.observe,
		Redis:            rdb,
		Sender:           pool,
		Templates:        tmpl,
		Signer:           signerOrNil(signer),
		From:             *from,
		App:              cfg.App,
		ReportURL:        cfg.ReportURL,
		Kinds:            kinds,
		Concurrency:      cfg.Concurrency,
		AmbiguousRetries: ambiguousRetries(cfg.AmbiguousRetries),
		ShutdownTimeout:  cfg.ShutdownTimeout,
		Logger:           logger,
		Registerer:       reg,
		TracerProvider:   tp,
	})
	if err != nil {
		return err
	}

	// The listener and the admin API's guard come before the worker starts:
	// a refused -admin must stop start-up before any email is taken.
	var httpAddr string
	var srv *http.Server
	var ln net.Listener
	if cfg.HTTPAddr != "" {
		if ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return fmt.Errorf("-http: %w", err)
		}
		httpAddr = ln.Addr().String()
		var admin http.Handler
		if cfg.Admin {
			if admin, err = adminHandler(g.Handler(), ln.Addr(), cfg.AdminToken); err != nil {
				ln.Close()
				return err
			}
		}
		mux := newMux(reg, w, mon, relay, admin)
		fb.mount(mux)
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	}
	if err := w.Start(); err != nil {
		if ln != nil {
			ln.Close()
		}
		return err
	}
	if srv != nil {
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("http server", "err", err)
			}
		}()
	}
	logger.Info("worker started", "http", httpAddr, "smtp", cfg.SMTPAddr, "concurrency", cfg.Concurrency, "dkim_keys", len(keys),
		"bounce_domain", cfg.BounceDomain, "bounce_smtp", fb.bounceAddr(), "traces", strings.Join(tel.Exporters, ","))
	if cfg.Dev {
		printDevBanner(stdout, stack, httpAddr, fb.bounceAddr(), cfg.BounceDomain)
	}
	if up != nil {
		up <- started{HTTPAddr: httpAddr, RedisURL: cfg.RedisURL, BounceAddr: fb.bounceAddr(), WebhooksAddr: fb.webhooksAddr(), Stack: stack, Relay: relay}
	}

	<-ctx.Done()
	logger.Info("shutting down")
	shutCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout+5*time.Second)
	defer cancel()
	werr := w.Shutdown(shutCtx)
	if srv != nil {
		_ = srv.Shutdown(shutCtx)
	}
	return werr
}

// loopbackFor returns addr with an unspecified host (":2526" binds
// "[::]:2526") replaced by loopback, the address to dial it on this machine.
func loopbackFor(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err == nil && (host == "" || ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// ambiguousRetries maps the flag (0: none) to worker.Config (0: default).
func ambiguousRetries(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// signerOrNil keeps a nil *Signer from becoming a non-nil interface.
func signerOrNil(s *delivery.Signer) worker.Signer {
	if s == nil {
		return nil
	}
	return s
}

func newMux(reg *prometheus.Registry, w *worker.Worker, mon *redisMonitor, relay *relayMonitor, admin http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	if admin != nil {
		mux.Handle("/v1/", admin)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(rw, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		rep := readiness{Status: "ready", Checks: map[string]readyCheck{}}
		add := func(name string, err error, checked time.Time) {
			c := readyCheck{OK: err == nil}
			if err != nil {
				c.Error = err.Error()
				rep.Status = "not ready"
			}
			if !checked.IsZero() {
				c.CheckedAt = &checked
			}
			rep.Checks[name] = c
		}
		var err error
		if w.Ready(ctx) != nil {
			err = errors.New("redis unreachable")
		}
		add("redis", err, time.Now())
		add("redis_policy", mon.ready(), time.Time{})
		checked, err := relay.state()
		if checked.IsZero() && err == nil {
			err = errors.New("not checked yet")
		}
		add("relay", err, checked)
		rw.Header().Set("Content-Type", "application/json")
		if rep.Status != "ready" {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(rw).Encode(rep)
	})
	return mux
}

// readiness is the body of /readyz: "ready" or "not ready", and each check.
type readiness struct {
	Status string                `json:"status"`
	Checks map[string]readyCheck `json:"checks"`
}

// readyCheck is one check of /readyz: redis (a PING now), redis_policy
// (the last maxmemory-policy check), relay (the last background check).
type readyCheck struct {
	OK        bool       `json:"ok"`
	Error     string     `json:"error,omitempty"`
	CheckedAt *time.Time `json:"checked_at,omitempty"`
}

func newLogger(cfg *config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

func printDevBanner(w io.Writer, s *devstack.Stack, httpAddr, bounceAddr, bounceDomain string) {
	fmt.Fprintf(w, `
floodgate worker -dev is running (embedded stack; everything is in memory)

  Redis (embedded):     %[1]s
  SMTP sink:            smtp://%[2]s
  Sink web page:        http://%[3]s/
  Sink API:             http://%[3]s/api/messages
  Worker HTTP:          http://%[4]s/metrics  /healthz  /readyz  /v1/stats
  DKIM:                 d=%[5]s, selectors dev-rsa (RSA-2048) and dev-ed25519, verified by the sink
  Bounce receiver:      smtp://%[6]s for bounces+<token>@%[7]s (DSNs and ARF complaints)

Send a password-reset email from another terminal:

  go run ./cmd/enqueue -redis %[1]s \
      -hash-key-file %[8]s -payload-key-file %[9]s \
      -kind password_reset -to alice@example.test -data reset_url=https://app.example/r/abc

then open http://%[3]s/ to see it with its DKIM results.

Try the bounce loop: the sink accepts mail to bounce+…@ (complain+…@ for a complaint),
then sends a DSN to its return path at the bounce receiver, which suppresses the recipient.
Run this twice: the first is "queued", the second "suppressed".

  go run ./cmd/enqueue -redis %[1]s \
      -hash-key-file %[8]s -payload-key-file %[9]s \
      -kind password_reset -to bounce+x@example.test -data reset_url=https://app.example/r/abc

The DSN is listed at http://%[3]s/api/reports. Ctrl-C stops everything.

`, s.RedisURL(), s.Sink.SMTPAddr(), s.Sink.HTTPAddr(), httpAddr, s.Domain, bounceAddr, bounceDomain, s.HashKeyFile, s.PayloadKeyFile)
}

// adminHandler guards the admin API: on a loopback listener it may run
// without a token; anywhere else a bearer token is required, and when a
// token is set every request must carry it.
func adminHandler(h http.Handler, addr net.Addr, token string) (http.Handler, error) {
	tcp, ok := addr.(*net.TCPAddr)
	loopback := ok && tcp.IP.IsLoopback()
	if token == "" {
		if !loopback {
			return nil, fmt.Errorf("-admin on non-loopback %s needs FLOODGATE_ADMIN_TOKEN", addr)
		}
		return h, nil
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			rw.Header().Set("WWW-Authenticate", `Bearer realm="floodgate"`)
			http.Error(rw, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(rw, r)
	}), nil
}
