package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Scope is the instrumentation scope of floodgate's spans.
const Scope = "github.com/floodgate-dev/floodgate"

// Tracer starts floodgate's spans. A nil *Tracer is tracing off: Start
// returns the context unchanged and a span that does nothing, without
// allocating.
type Tracer struct{ t trace.Tracer }

// NewTracer returns a tracer of tp, or nil (off) when tp is nil.
func NewTracer(tp trace.TracerProvider) *Tracer {
	if tp == nil {
		return nil
	}
	return &Tracer{t: tp.Tracer(Scope)}
}

// noSpan is the span of a nil Tracer, boxed once. It is not the context's
// span: ending it must not end a span of the caller's.
var noSpan trace.Span = noop.Span{}

// Start starts a span named name as a child of ctx's span. Callers set
// attributes only when the span IsRecording, so that an unsampled span
// costs no attribute either.
func (t *Tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t == nil {
		return ctx, noSpan
	}
	return t.t.Start(ctx, name, opts...)
}

// On reports whether t creates spans.
func (t *Tracer) On() bool { return t != nil }

// traceContext is the W3C Trace Context propagator.
var traceContext propagation.TraceContext

// Traceparent returns the W3C traceparent of ctx's span, or "" when it has
// none (tracing off, or not sampled and not propagated). It carries the
// trace and span ids and the sampled flag, nothing else.
func Traceparent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	return c["traceparent"]
}

// WithTraceparent returns ctx with the remote span context of traceparent
// as its parent, or ctx unchanged when traceparent is "" or malformed.
func WithTraceparent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}
