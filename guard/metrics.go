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
}

// newMetrics creates the collectors and registers them on reg when it is
// not nil. A second guard on the same registerer shares the first one's
// counter.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	cv := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "floodgate_decisions_total",
		Help: "Guard decisions by kind, outcome and reason (admission: queued, duplicate, capped, suppressed, held, shed; dispatch: dispatched, deferred, duplicate, expired, held, shed; settle: sent, failed, expired, retry).",
	}, []string{"kind", "outcome", "reason"})
	if reg != nil {
		if err := reg.Register(cv); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("guard: register metrics: %w", err)
			}
			existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
			if !ok {
				return nil, fmt.Errorf("guard: register metrics: %w", err)
			}
			cv = existing
		}
	}
	return &metrics{decisions: cv}, nil
}
