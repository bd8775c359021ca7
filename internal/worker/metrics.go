package worker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-dev/floodgate/queue"
)

// metrics are the worker's Prometheus series. Labels never carry a
// recipient.
type metrics struct {
	outcomes    *prometheus.CounterVec
	retries     *prometheus.CounterVec
	ambiguous   *prometheus.CounterVec
	sendSeconds *prometheus.HistogramVec
	latency     *prometheus.HistogramVec
	smtpSeconds *prometheus.HistogramVec
	guardErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "floodgate_worker_emails_total",
			Help: "Emails handled by this worker, by kind, outcome and reason.",
		}, []string{"kind", "outcome", "reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "floodgate_worker_retries_total",
			Help: "Delivery attempts that failed temporarily and will be retried.",
		}, []string{"kind", "reason"}),
		ambiguous: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "floodgate_worker_ambiguous_total",
			Help: "Attempts whose result was ambiguous (connection lost after the final dot), by kind and what followed: retried, or failed past the bound.",
		}, []string{"kind", "action"}),
		sendSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "floodgate_worker_attempt_seconds",
			Help:    "Time of one delivery attempt: render, sign and SMTP.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"kind"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "floodgate_worker_delivery_latency_seconds",
			Help:    "Time from enqueue to the relay's 250, for sent emails.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 18),
		}, []string{"kind"}),
		smtpSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "floodgate_smtp_send_seconds",
			Help:    "Time of one SMTP transaction with the relay (a pooled connection's reset or a dial, MAIL, RCPT, DATA and the reply to the final dot), by result: sent, temporary, permanent, ambiguous.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"result"}),
		guardErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "floodgate_worker_guard_errors_total",
			Help: "Guard calls that failed (Redis unreachable); the email is retried, never sent unchecked.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.outcomes, m.retries, m.ambiguous, m.sendSeconds, m.latency, m.smtpSeconds, m.guardErrors)
	}
	return m
}

func (m *metrics) outcome(kind string, o queue.Outcome, reason string) {
	m.outcomes.WithLabelValues(kind, string(o), reason).Inc()
}
