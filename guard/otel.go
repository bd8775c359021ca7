package guard

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/queue"
)

// Span attribute keys of the guard's spans. The recipient is named by its
// keyed digest ([Guard.HashRecipient]), never by its address.
const (
	attrKind     = attribute.Key("floodgate.kind")
	attrEmailID  = attribute.Key("floodgate.email.id")
	attrRcpt     = attribute.Key("floodgate.rcpt_hash")
	attrOutcome  = attribute.Key("floodgate.outcome")
	attrReason   = attribute.Key("floodgate.reason")
	attrLane     = attribute.Key("floodgate.lane")
	attrAttempt  = attribute.Key("floodgate.attempt")
	attrRetryMS  = attribute.Key("floodgate.retry_after_ms")
	attrAmbiguos = attribute.Key("floodgate.ambiguous")
)

// The ops of floodgate_guard_redis_seconds, indexes of metrics.roundTrip.
const (
	opAdmit = iota
	opDispatch
	opSettle
)

// newRoundTrip returns the histogram of decision round trips.
func newRoundTrip() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "floodgate_guard_redis_seconds",
		Help: "Time of one guard decision as its caller sees it, by op (admit, dispatch, settle): one script round trip to Redis and the work around it, errors included.",
		// 100µs to ~3s: a loopback Redis answers in well under a millisecond.
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	}, []string{"op"})
}

// tracedAdmit is [Guard.Admit] with its guard.admit span.
func (g *Guard) tracedAdmit(ctx context.Context, a *queue.Admission, start time.Time) (queue.Verdict, error) {
	ctx, span := g.tracer.Start(ctx, "guard.admit", oteltrace.WithTimestamp(start))
	v, err := g.admit(ctx, a)
	g.metrics.roundTrip[opAdmit].Observe(time.Since(start).Seconds())
	if span.IsRecording() {
		span.SetAttributes(attrKind.String(a.Kind), attrEmailID.String(a.ID), attrRcpt.String(g.HashRecipient(a.To)))
		g.endVerdict(span, v, err)
	}
	span.End()
	return v, err
}

// tracedDispatch is [Guard.Dispatch] with its guard.dispatch span.
func (g *Guard) tracedDispatch(ctx context.Context, p *queue.Payload, attempt string, start time.Time) (queue.Verdict, error) {
	ctx, span := g.tracer.Start(ctx, "guard.dispatch", oteltrace.WithTimestamp(start))
	v, err := g.dispatch(ctx, p, attempt)
	g.metrics.roundTrip[opDispatch].Observe(time.Since(start).Seconds())
	if span.IsRecording() {
		span.SetAttributes(attrKind.String(p.Kind), attrEmailID.String(p.ID), attrRcpt.String(g.HashRecipient(p.To)),
			attrAttempt.String(attempt))
		if v.Allow {
			span.SetAttributes(attrAmbiguos.Int(v.Ambiguous))
		}
		g.endVerdict(span, v, err)
	}
	span.End()
	return v, err
}

// tracedSettle is [Guard.Settle] with its guard.settle span.
func (g *Guard) tracedSettle(ctx context.Context, p *queue.Payload, attempt string, outcome queue.Outcome, reason string, start time.Time) error {
	ctx, span := g.tracer.Start(ctx, "guard.settle", oteltrace.WithTimestamp(start))
	err := g.settle(ctx, p, attempt, outcome, reason)
	g.metrics.roundTrip[opSettle].Observe(time.Since(start).Seconds())
	if span.IsRecording() {
		o := string(outcome)
		if o == "" {
			o = "retry"
		}
		span.SetAttributes(attrKind.String(p.Kind), attrEmailID.String(p.ID), attrRcpt.String(g.HashRecipient(p.To)),
			attrAttempt.String(attempt), attrOutcome.String(o), attrReason.String(token(reason)))
		if err != nil {
			span.SetStatus(codes.Error, errClass(err))
		}
	}
	span.End()
	return err
}

// endVerdict sets a decision span's outcome, or its error status.
func (g *Guard) endVerdict(span oteltrace.Span, v queue.Verdict, err error) {
	if err != nil {
		span.SetStatus(codes.Error, errClass(err))
		return
	}
	outcome := string(v.Outcome)
	if v.Allow && outcome == "" {
		outcome = "dispatched"
	}
	span.SetAttributes(attrOutcome.String(outcome), attrReason.String(v.Reason))
	if v.Lane != "" {
		span.SetAttributes(attrLane.String(v.Lane))
	}
	if v.RetryAfter > 0 {
		span.SetAttributes(attrRetryMS.Int64(v.RetryAfter.Milliseconds()))
	}
}

// errClass names an error for a span status: a class, never the message,
// which could quote what the caller passed in.
func errClass(err error) string {
	switch {
	case errors.Is(err, ErrUnknownKind):
		return "unknown_kind"
	case errors.Is(err, ErrUnavailable):
		return "redis_unavailable"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "error"
}

// HeldCollector returns a collector of floodgate_held_emails{kind}: the
// emails each kind's breaker holds now, read from Redis at scrape time in
// one pipelined round trip (an HLEN per kind). Register it where one
// process's scrape should show them (cmd/worker does); when Redis does not
// answer the scrape has none of them.
func (g *Guard) HeldCollector() prometheus.Collector {
	return &heldCollector{g: g, desc: prometheus.NewDesc("floodgate_held_emails",
		"Emails the kind's breaker holds now (every process's), waiting for release or expiry.", []string{"kind"}, nil)}
}

type heldCollector struct {
	g    *Guard
	desc *prometheus.Desc
}

func (c *heldCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *heldCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	kinds := c.g.kindNames()
	cmds := make([]*redis.IntCmd, len(kinds))
	_, err := c.g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range kinds {
			cmds[i] = p.HLen(ctx, rkeys.Held(k))
		}
		return nil
	})
	if err != nil {
		c.g.log.Warn("held metrics", "err", err)
		return
	}
	for i, k := range kinds {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(cmds[i].Val()), k)
	}
}
