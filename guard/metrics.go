package guard

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the guard's Prometheus collectors. They are per process; the
// stats hash in Redis ([Guard.Stats]) covers every process.
type metrics struct {
	decisions *prometheus.CounterVec
	// transitions counts the breaker transitions this process's decisions
	// made; every transition is made, and counted, by exactly one process.
	transitions *prometheus.CounterVec
	// breakerState is 0 closed, 1 half-open, 2 open, as last seen by this
	// process: every decision's reply carries the state.
	breakerState *prometheus.GaugeVec
	// feedback counts Confirm and Report calls by kind, op and result.
	feedback       *prometheus.CounterVec
	webhookDropped prometheus.Counter
	webhookFailed  prometheus.Counter
	// roundTrip observes each decision's time by op (opAdmit, ...).
	roundTrip [3]prometheus.Observer
}

// Values of floodgate_breaker_state.
const (
	stateClosed   = 0
	stateHalfOpen = 1
	stateOpen     = 2
)

// newMetrics creates the collectors and registers them on reg when it is
// not nil. A second guard on the same registerer shares the first one's
// collectors.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "floodgate_decisions_total",
			Help: "Guard decisions by kind, outcome and reason (admission: queued, duplicate, capped, suppressed, held, shed; dispatch: dispatched, deferred, duplicate, expired, held, shed; settle: sent, failed, expired, retry).",
		}, []string{"kind", "outcome", "reason"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "floodgate_breaker_transitions_total",
			Help: "Surge breaker transitions made by this process, by kind, from and to state (closed, open, half_open) and reason (surge, refusals, relay, manual, ceiling, budget, redemption, reports).",
		}, []string{"kind", "from", "to", "reason"}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "floodgate_breaker_state",
			Help: "Surge breaker state per kind as last seen by this process: 0 closed, 1 half-open, 2 open.",
		}, []string{"kind"}),
		feedback: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "floodgate_feedback_total",
			Help: "Feedback from the application on sent emails, by kind, op (confirm, report) and result (confirmed, reported, already, unknown).",
		}, []string{"kind", "op", "result"}),
		webhookDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "floodgate_breaker_webhook_dropped_total",
			Help: "Breaker transition notifications dropped because the webhook queue was full or the guard was shut down.",
		}),
		webhookFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "floodgate_breaker_webhook_failures_total",
			Help: "Breaker transition notifications given up after every retry failed.",
		}),
	}
	rt := newRoundTrip()
	if reg != nil {
		var err error
		if rt, err = register(reg, rt); err != nil {
			return nil, err
		}
	}
	for op, name := range []string{opAdmit: "admit", opDispatch: "dispatch", opSettle: "settle"} {
		m.roundTrip[op] = rt.WithLabelValues(name)
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.decisions, err = register(reg, m.decisions); err != nil {
		return nil, err
	}
	if m.transitions, err = register(reg, m.transitions); err != nil {
		return nil, err
	}
	if m.breakerState, err = register(reg, m.breakerState); err != nil {
		return nil, err
	}
	if m.feedback, err = register(reg, m.feedback); err != nil {
		return nil, err
	}
	if m.webhookDropped, err = register(reg, m.webhookDropped); err != nil {
		return nil, err
	}
	if m.webhookFailed, err = register(reg, m.webhookFailed); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c on reg, or returns the collector already registered
// under its name.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("guard: register metrics: %w", err)
}
