package worker

import (
	"context"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/floodgate-dev/floodgate/internal/delivery"
	"github.com/floodgate-dev/floodgate/internal/telemetry"
	"github.com/floodgate-dev/floodgate/queue"
)

// startProcess continues the producer's trace from p's traceparent: it
// records the queue.wait span, from the enqueue to this attempt's start,
// and starts the attempt's floodgate.process span, both children of the
// producer's floodgate.enqueue. Without a traceparent the attempt is a
// trace of its own. Spans name the email by id and kind only.
func (w *Worker) startProcess(ctx context.Context, p *queue.Payload, start time.Time) (context.Context, trace.Span) {
	parent := telemetry.WithTraceparent(ctx, p.Trace)
	qname, _ := asynq.GetQueueName(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	attrs := []attribute.KeyValue{
		attribute.String("floodgate.kind", p.Kind), attribute.String("floodgate.email.id", p.ID),
		attribute.String("messaging.system", "asynq"), attribute.String("messaging.destination.name", qname),
		attribute.String("messaging.message.id", p.ID),
	}
	// The producer's clock: a skewed one must not give a negative wait.
	enqueued := p.EnqueuedAt
	if enqueued.IsZero() || enqueued.After(start) {
		enqueued = start
	}
	_, wait := w.tracer.Start(parent, "queue.wait", trace.WithTimestamp(enqueued), trace.WithAttributes(attrs...),
		trace.WithAttributes(attribute.Int("floodgate.retry", retried)))
	wait.End(trace.WithTimestamp(start))
	return w.tracer.Start(parent, "floodgate.process", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(start),
		trace.WithAttributes(attrs...), trace.WithAttributes(attribute.Int("floodgate.retry", retried)))
}

// markProcess sets the attempt's outcome on its floodgate.process span:
// outcome "retry" for a temporary failure, which is an error of the
// attempt like a failure.
func markProcess(ctx context.Context, o queue.Outcome, reason string) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	outcome := string(o)
	if outcome == "" {
		outcome = "retry"
	}
	span.SetAttributes(attribute.String("floodgate.outcome", outcome), attribute.String("floodgate.reason", reason))
	if o == queue.Failed || o == "" {
		span.SetStatus(codes.Error, reason)
	}
}

// spanFailed marks span failed with err's class (never its message, which
// may quote the recipient) and returns err.
func spanFailed(span trace.Span, err error) error {
	if span.IsRecording() {
		span.SetStatus(codes.Error, reasonOf(err))
	}
	return err
}

// smtpSend delivers raw in the smtp.send span and times it
// (floodgate_smtp_send_seconds).
func (w *Worker) smtpSend(ctx context.Context, from, to string, raw []byte) error {
	ctx, span := w.tracer.Start(ctx, "smtp.send", trace.WithSpanKind(trace.SpanKindClient))
	start := time.Now()
	err := w.cfg.Sender.Send(ctx, from, []string{to}, raw)
	result := sendResult(err)
	w.metrics.smtpSeconds.WithLabelValues(result).Observe(time.Since(start).Seconds())
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("floodgate.message.bytes", len(raw)), attribute.String("floodgate.smtp.result", result))
		if err != nil {
			span.SetAttributes(attribute.String("floodgate.reason", reasonOf(err)))
			spanFailed(span, err)
		}
	}
	span.End()
	return err
}

// sendResult names a send's result for floodgate_smtp_send_seconds: sent,
// ambiguous, permanent or temporary.
func sendResult(err error) string {
	switch {
	case err == nil:
		return "sent"
	case isAmbiguous(err):
		return "ambiguous"
	case delivery.IsPermanent(err):
		return "permanent"
	}
	return "temporary"
}
