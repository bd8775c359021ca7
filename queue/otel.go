package queue

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracedEnqueue is [Client.Enqueue] inside its floodgate.enqueue span. The
// span names the email by id and kind, and its recipient only by the
// admitter's keyed digest, when the admitter has one.
func (c *Client) tracedEnqueue(ctx context.Context, e Email) (Receipt, error) {
	ctx, span := c.tracer.Start(ctx, "floodgate.enqueue", trace.WithSpanKind(trace.SpanKindProducer))
	defer span.End()
	r, err := c.enqueue(ctx, e)
	if !span.IsRecording() {
		return r, err
	}
	span.SetAttributes(attribute.String("messaging.system", "asynq"), attribute.String("floodgate.kind", e.Kind))
	if spec, ok := c.cfg.Kinds[e.Kind]; ok {
		span.SetAttributes(attribute.String("messaging.destination.name", spec.Class.QueueName()))
	}
	if err != nil {
		span.SetStatus(codes.Error, enqueueErrClass(err))
		return r, err
	}
	span.SetAttributes(attribute.String("floodgate.email.id", r.ID), attribute.String("messaging.message.id", r.ID),
		attribute.String("floodgate.outcome", string(r.Outcome)), attribute.String("floodgate.reason", r.Reason))
	if h, ok := c.cfg.Admitter.(RecipientHasher); ok {
		if to, err := NormalizeAddress(e.To); err == nil {
			span.SetAttributes(attribute.String("floodgate.rcpt_hash", h.HashRecipient(to)))
		}
	}
	return r, nil
}

// enqueueErrClass names an Enqueue error for a span status: a class, not
// the message, which may quote the address or data it refused.
func enqueueErrClass(err error) string {
	var ie *InvalidError
	switch {
	case errors.As(err, &ie):
		return "invalid:" + ie.Field
	case errors.Is(err, ErrUnknownKind):
		return "unknown_kind"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrClosed):
		return "closed"
	}
	return "error"
}
