package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// relayMonitor checks the SMTP relay in the background, every interval: a
// connection of its own, EHLO (and TLS and AUTH as configured), QUIT. It
// keeps the last result for /readyz and floodgate_smtp_relay_up, so that
// a probe of /readyz never waits on the relay, and a busy or failing relay
// is not dialled once per probe.
type relayMonitor struct {
	check    func(context.Context) error
	interval time.Duration
	timeout  time.Duration
	log      *slog.Logger

	mu      sync.Mutex
	err     error     // the last check's error
	checked time.Time // when the last check ended; zero before the first
	done    chan struct{}
}

func newRelayMonitor(check func(context.Context) error, interval time.Duration, log *slog.Logger, reg prometheus.Registerer) *relayMonitor {
	if interval <= 0 {
		interval = 15 * time.Second
	}
	m := &relayMonitor{check: check, interval: interval, timeout: min(interval, 10*time.Second), log: log, done: make(chan struct{})}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "floodgate_smtp_relay_up",
		Help: "1 when the last background check of the SMTP relay (connect, EHLO, QUIT; every -relay-check-interval) succeeded, 0 when it failed or none has ended yet.",
	}, func() float64 {
		if checked, err := m.state(); err == nil && !checked.IsZero() {
			return 1
		}
		return 0
	}))
	return m
}

// run checks the relay at once, then every interval, until ctx ends.
func (m *relayMonitor) run(ctx context.Context) {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		m.checkOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkOnce runs one check, records it, logs a change of state and wakes
// those waiting on the next result.
func (m *relayMonitor) checkOnce(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, m.timeout)
	err := m.check(cctx)
	cancel()
	if ctx.Err() != nil {
		return // stopping: a cancelled check says nothing about the relay
	}
	m.mu.Lock()
	wasUp, first := m.err == nil, m.checked.IsZero()
	m.err, m.checked = err, time.Now()
	close(m.done)
	m.done = make(chan struct{})
	m.mu.Unlock()
	switch {
	case err != nil && (wasUp || first):
		m.log.Warn("smtp relay check failed: /readyz reports not ready", "err", err)
	case err == nil && !wasUp && !first:
		m.log.Info("smtp relay answers again")
	}
}

// state returns when the last check ended (zero before the first) and its
// error.
func (m *relayMonitor) state() (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.checked, m.err
}

// next returns a channel closed when the check after this call ends.
func (m *relayMonitor) next() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done
}
