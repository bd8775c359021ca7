package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/guard"
)

// redisMonitor checks the Redis settings floodgate depends on (see
// guard.CheckRedis) at start-up and then periodically, so that a
// maxmemory-policy changed at run time shows on /readyz, in
// floodgate_redis_maxmemory_policy and in the log. It is safe for
// concurrent use.
type redisMonitor struct {
	rdb    redis.UniversalClient
	assume bool // the policy cannot be read: the operator says noeviction
	log    *slog.Logger
	policy *prometheus.GaugeVec

	mu   sync.Mutex
	bad  error // the last refusal; nil when the settings are fine
	seen bool  // a check has answered
}

func newRedisMonitor(rdb redis.UniversalClient, assume bool, log *slog.Logger, reg prometheus.Registerer) *redisMonitor {
	m := &redisMonitor{rdb: rdb, assume: assume, log: log,
		policy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "floodgate_redis_maxmemory_policy",
			Help: "1 for each maxmemory-policy the Redis masters report (\"unknown\" when it cannot be read); floodgate needs noeviction only.",
		}, []string{"policy"})}
	reg.MustRegister(m.policy)
	return m
}

// check runs one check and records it. It returns the refusal (a
// *guard.RedisSettingError), or the error of a Redis that did not answer,
// which changes nothing recorded.
func (m *redisMonitor) check(ctx context.Context) (guard.RedisReport, error) {
	rep, err := guard.CheckRedis(ctx, m.rdb)
	if errors.Is(err, guard.ErrUnavailable) {
		return rep, err
	}
	if errors.Is(err, guard.ErrPolicyUnknown) && m.assume {
		err = nil
	}
	m.policy.Reset()
	for _, p := range rep.Policies() {
		if p == "" {
			p = "unknown"
		}
		m.policy.WithLabelValues(p).Set(1)
	}
	m.mu.Lock()
	changed := !m.seen || (m.bad == nil) != (err == nil) || (err != nil && err.Error() != m.bad.Error())
	m.bad, m.seen = err, true
	m.mu.Unlock()
	if changed {
		if err != nil {
			m.log.Error("redis settings", "err", err)
		} else {
			m.log.Info("redis settings ok", "maxmemory_policy", strings.Join(rep.Policies(), ","), "assumed", m.assume)
		}
	}
	return rep, err
}

// run repeats the check every interval until ctx ends.
func (m *redisMonitor) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, _ = m.check(cctx)
			cancel()
		}
	}
}

// ready returns the last refusal, nil when the settings are fine or no
// check has answered yet.
func (m *redisMonitor) ready() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bad
}

// refusal explains a start-up refusal, with the way out when the policy
// could not be read.
func refusal(err error) error {
	if errors.Is(err, guard.ErrPolicyUnknown) {
		return fmt.Errorf("%w; if it is noeviction, start with -redis-assume-noeviction", err)
	}
	return err
}
