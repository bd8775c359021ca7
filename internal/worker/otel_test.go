package worker_test

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/worker"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// spanWaiter is a span processor that wakes tests when a span ends. It is
// registered after the in-memory exporter's, so an ended span is already
// exported when the waiter hears of it.
type spanWaiter struct {
	mu      sync.Mutex
	ended   []sdktrace.ReadOnlySpan
	changed chan struct{}
}

func (s *spanWaiter) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (s *spanWaiter) OnEnd(sp sdktrace.ReadOnlySpan) {
	s.mu.Lock()
	s.ended = append(s.ended, sp)
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}
func (s *spanWaiter) Shutdown(context.Context) error   { return nil }
func (s *spanWaiter) ForceFlush(context.Context) error { return nil }

// wait blocks until n spans named name have ended.
func (s *spanWaiter) wait(t *testing.T, name string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		s.mu.Lock()
		got := 0
		for _, sp := range s.ended {
			if sp.Name() == name {
				got++
			}
		}
		s.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-s.changed:
		case <-ctx.Done():
			t.Fatalf("%d %s spans ended, still waiting for %d", got, name, n)
		}
	}
}

// tracing returns a sampling-everything provider exporting to memory.
func tracing(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter, *spanWaiter) {
	exp := tracetest.NewInMemoryExporter()
	w := &spanWaiter{changed: make(chan struct{}, 1)}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSyncer(exp), sdktrace.WithSpanProcessor(w))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return tp, exp, w
}

// tracedEnv is a guarded env whose guard, worker and producer trace to tp;
// traces collects the traceparent of each payload the worker handled.
func tracedEnv(t *testing.T, tp trace.TracerProvider) (*env, *queue.Client, *sync.Map) {
	t.Helper()
	var traces sync.Map
	e := newGuardedEnv(t, withGuard(`{}`, guard.Config{TracerProvider: tp, HashKey: []byte("otel test hash key, 32 bytes ok!")}),
		func(c *worker.Config, _ *smtpsink.Config) {
			c.TracerProvider = tp
			observe := c.Observe
			c.Observe = func(p *queue.Payload, o queue.Outcome, reason string) {
				if p != nil {
					traces.Store(p.ID, p.Trace)
				}
				observe(p, o, reason)
			}
		})
	client, err := queue.NewClient(queue.Config{Redis: e.rdb, Kinds: e.wcfg.Kinds, Admitter: e.guard, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return e, client, &traces
}

var traceparentRE = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`)

// TestSpanTree: an email enqueued through a real Redis and delivered by a
// real worker to a real sink, DKIM-signed, is one trace: floodgate.enqueue
// with guard.admit, queue.wait and floodgate.process under it, the last
// continued across the queue from the payload's traceparent, with
// guard.dispatch, render, dkim.sign, smtp.send and guard.settle under it.
// No span holds the recipient's address; the recipient is named only by
// the guard's keyed digest.
func TestSpanTree(t *testing.T) {
	tp, exp, waiter := tracing(t)
	e, client, traces := tracedEnv(t, tp)
	const addr = "Alice.Tracer@example.com"
	r, err := client.Enqueue(context.Background(), resetEmail(addr))
	if err != nil || r.Outcome != queue.Queued {
		t.Fatalf("enqueue: %+v, %v", r, err)
	}
	if seq := e.waitOutcome(t, r.ID); seq[len(seq)-1] != queue.Sent {
		t.Fatalf("outcomes %v, want sent", seq)
	}
	waiter.wait(t, "floodgate.process", 1)
	if n := len(e.sink.Messages(smtpsink.Query{To: strings.ToLower(addr)})); n != 1 {
		t.Fatalf("sink has %d messages, want 1", n)
	}

	spans := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		if _, dup := spans[s.Name]; dup {
			t.Errorf("two %s spans", s.Name)
		}
		spans[s.Name] = s
	}
	tree := map[string]string{ // span: its parent
		"floodgate.enqueue": "",
		"guard.admit":       "floodgate.enqueue",
		"queue.wait":        "floodgate.enqueue",
		"floodgate.process": "floodgate.enqueue",
		"guard.dispatch":    "floodgate.process",
		"render":            "floodgate.process",
		"dkim.sign":         "floodgate.process",
		"smtp.send":         "floodgate.process",
		"guard.settle":      "floodgate.process",
	}
	if len(spans) != len(tree) {
		t.Errorf("spans %v, want %d", names(spans), len(tree))
	}
	root := spans["floodgate.enqueue"]
	for name, parent := range tree {
		s, ok := spans[name]
		if !ok {
			t.Errorf("no %s span", name)
			continue
		}
		if s.SpanContext.TraceID() != root.SpanContext.TraceID() {
			t.Errorf("%s is in trace %s, want %s", name, s.SpanContext.TraceID(), root.SpanContext.TraceID())
		}
		switch {
		case parent == "" && s.Parent.IsValid():
			t.Errorf("%s has parent %s, want none", name, s.Parent.SpanID())
		case parent != "" && s.Parent.SpanID() != spans[parent].SpanContext.SpanID():
			t.Errorf("%s's parent is %s, want %s (%s)", name, s.Parent.SpanID(), parent, spans[parent].SpanContext.SpanID())
		}
	}
	// Across the queue the parent is remote: it came from the payload.
	for _, name := range []string{"queue.wait", "floodgate.process"} {
		if !spans[name].Parent.IsRemote() {
			t.Errorf("%s's parent is not remote", name)
		}
	}
	tp0, _ := traces.Load(r.ID)
	if want := "00-" + root.SpanContext.TraceID().String() + "-" + root.SpanContext.SpanID().String() + "-01"; tp0 != want {
		t.Errorf("payload trace %q, want %q", tp0, want)
	}
	if s := spans["queue.wait"]; s.EndTime.After(spans["floodgate.process"].StartTime) {
		t.Errorf("queue.wait ends at %v, after floodgate.process starts at %v", s.EndTime, spans["floodgate.process"].StartTime)
	}

	digest := e.guard.HashRecipient(addr)
	want := map[string]map[string]string{
		"floodgate.enqueue": {"floodgate.kind": queue.KindPasswordReset, "floodgate.email.id": r.ID, "floodgate.outcome": "queued", "floodgate.rcpt_hash": digest},
		"guard.admit":       {"floodgate.outcome": "queued", "floodgate.rcpt_hash": digest, "floodgate.email.id": r.ID},
		"guard.dispatch":    {"floodgate.outcome": "dispatched", "floodgate.rcpt_hash": digest},
		"floodgate.process": {"floodgate.outcome": "sent", "floodgate.email.id": r.ID, "messaging.destination.name": queue.ClassSecurity.QueueName()},
		"smtp.send":         {"floodgate.smtp.result": "sent"},
		"guard.settle":      {"floodgate.outcome": "sent", "floodgate.rcpt_hash": digest},
	}
	for name, kv := range want {
		got := attrs(spans[name])
		for k, v := range kv {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q", name, k, got[k], v)
			}
		}
	}
	noAddress(t, exp.GetSpans(), addr)
}

// TestSpanFailedSend: a relay's permanent refusal marks smtp.send and
// floodgate.process failed by class (smtp_550), quoting nothing of the
// relay's reply, which may name the recipient.
func TestSpanFailedSend(t *testing.T) {
	tp, exp, waiter := tracing(t)
	e, client, _ := tracedEnv(t, tp)
	const addr = "permfail+carol@example.com"
	r, err := client.Enqueue(context.Background(), resetEmail(addr))
	if err != nil || r.Outcome != queue.Queued {
		t.Fatalf("enqueue: %+v, %v", r, err)
	}
	if seq := e.waitOutcome(t, r.ID); seq[len(seq)-1] != queue.Failed {
		t.Fatalf("outcomes %v, want failed", seq)
	}
	waiter.wait(t, "floodgate.process", 1)
	for _, s := range exp.GetSpans() {
		switch s.Name {
		case "smtp.send", "floodgate.process":
			if s.Status.Description != "smtp_550" {
				t.Errorf("%s status %+v, want error smtp_550", s.Name, s.Status)
			}
		}
	}
	noAddress(t, exp.GetSpans(), addr)
}

// TestNoSpansWhenOff: without a tracer provider the payload carries no
// traceparent, and the guard, worker and producer create no spans (a
// provider given to none of them sees nothing).
func TestNoSpansWhenOff(t *testing.T) {
	_, exp, _ := tracing(t)
	e, _, traces := tracedEnv(t, nil)
	r := e.enqueue(t, resetEmail("dave@example.com"))
	e.waitOutcome(t, r.ID)
	if tp, _ := traces.Load(r.ID); tp != "" {
		t.Errorf("payload trace %q, want none", tp)
	}
	if n := len(exp.GetSpans()); n != 0 {
		t.Errorf("%d spans, want none", n)
	}
}

// TestTraceparentFormat: the payload's trace is a bare W3C traceparent.
func TestTraceparentFormat(t *testing.T) {
	tp, _, _ := tracing(t)
	e, client, traces := tracedEnv(t, tp)
	r, err := client.Enqueue(context.Background(), resetEmail("erin@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	e.waitOutcome(t, r.ID)
	v, _ := traces.Load(r.ID)
	if s, _ := v.(string); !traceparentRE.MatchString(s) {
		t.Errorf("payload trace %q, want a traceparent", s)
	}
}

func names(spans map[string]tracetest.SpanStub) []string {
	var out []string
	for n := range spans {
		out = append(out, n)
	}
	return out
}

func attrs(s tracetest.SpanStub) map[string]string {
	m := map[string]string{}
	for _, kv := range s.Attributes {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

// noAddress fails if any span's name, attributes, status, events or
// resource hold addr, its local part, or its domain's "@".
func noAddress(t *testing.T, spans tracetest.SpanStubs, addr string) {
	t.Helper()
	local := strings.ToLower(addr[:strings.IndexByte(addr, '@')])
	for _, s := range spans {
		texts := []string{s.Name, s.Status.Description}
		for _, kv := range s.Attributes {
			texts = append(texts, string(kv.Key), kv.Value.String())
		}
		for _, ev := range s.Events {
			texts = append(texts, ev.Name)
			for _, kv := range ev.Attributes {
				texts = append(texts, kv.Value.String())
			}
		}
		for _, kv := range s.Resource.Attributes() {
			texts = append(texts, kv.Value.String())
		}
		for _, x := range texts {
			if l := strings.ToLower(x); strings.Contains(l, local) || strings.Contains(l, "@") {
				t.Errorf("span %s holds %q, which names the recipient", s.Name, x)
			}
		}
	}
}
