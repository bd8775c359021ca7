package guard

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ptestutil "github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
)

// BenchmarkAdmitTracing measures what tracing costs an admission. Each
// iteration runs three admissions in turn on one private Redis, so that
// drift in Redis or the machine falls on all three alike: "untraced" is
// the decision alone (the code as it was before spans and the round-trip
// histogram), "off" is Admit with no tracer provider (the histogram, no
// span), "on" is Admit sampling every span into memory. It reports each
// one's ns and allocations per admission and the ratios off/untraced
// (what a deployment without OTEL_* settings pays) and on/untraced.
//
//	go test ./guard -run '^$' -bench AdmitTracing -benchtime 20000x -count 5
func BenchmarkAdmitTracing(b *testing.B) {
	srv := testutil.StartRedis(b)
	rc := benchClient(b, srv.Addr)
	ctx := context.Background()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSyncer(exp))
	b.Cleanup(func() { tp.Shutdown(ctx) })
	off := guardOn(b, rc, benchPolicy, Config{})
	on := guardOn(b, rc, benchPolicy, Config{TracerProvider: tp})
	var seq atomic.Int64
	runs := []func() error{
		func() error { _, err := off.admit(ctx, benchAdmission(&seq, nil)); return err },
		func() error { _, err := off.Admit(ctx, benchAdmission(&seq, nil)); return err },
		func() error { _, err := on.Admit(ctx, benchAdmission(&seq, nil)); return err },
	}
	var took [3]time.Duration
	var allocs [3]uint64
	var ms runtime.MemStats
	n := 0
	for b.Loop() {
		// The order turns each iteration: whichever runs first finds the
		// connection and the caches colder.
		for j := range runs {
			i := (n + j) % len(runs)
			run := runs[i]
			runtime.ReadMemStats(&ms)
			a0, t0 := ms.Mallocs, time.Now()
			if err := run(); err != nil {
				b.Fatal(err)
			}
			took[i] += time.Since(t0)
			runtime.ReadMemStats(&ms)
			allocs[i] += ms.Mallocs - a0
		}
		n++
		if n%1000 == 0 {
			exp.Reset()
		}
	}
	for i, name := range []string{"untraced", "off", "on"} {
		b.ReportMetric(float64(took[i].Nanoseconds())/float64(n), name+"-ns/admit")
		b.ReportMetric(float64(allocs[i])/float64(n), name+"-allocs/admit")
	}
	b.ReportMetric(float64(took[1])/float64(took[0]), "off/untraced")
	b.ReportMetric(float64(took[2])/float64(took[0]), "on/untraced")
}

// floodgate_held_emails counts what each kind's breaker holds, read from
// Redis at scrape time; floodgate_guard_redis_seconds times every decision
// by op. Both pass the exposition lint.
func TestHeldAndRoundTripMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	g, _, _ := newTestGuard(t, "{}", Config{Registerer: reg})
	reg.MustRegister(g.HeldCollector())
	ctx := context.Background()
	if _, err := g.Trip(ctx, queue.KindPasswordReset, ReasonSurge); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{"held1@example.com", "held2@example.com"} {
		wantVerdict(t, to, admit(t, g, realAdm(t, queue.KindPasswordReset, to, "203.0.113.9")), queue.Held, "breaker")
	}
	_, p := deliver(t, g, queue.KindVerifyEmail, "open@example.com", "203.0.113.9")
	if p == nil {
		t.Fatal("no payload")
	}

	var want strings.Builder
	want.WriteString("# HELP floodgate_held_emails Emails the kind's breaker holds now (every process's), waiting for release or expiry.\n# TYPE floodgate_held_emails gauge\n")
	for _, k := range g.kindNames() {
		n := "0"
		if k == queue.KindPasswordReset {
			n = "2"
		}
		want.WriteString("floodgate_held_emails{kind=\"" + k + "\"} " + n + "\n")
	}
	if err := ptestutil.GatherAndCompare(reg, strings.NewReader(want.String()), "floodgate_held_emails"); err != nil {
		t.Error(err)
	}
	// Two held admissions and one delivered email: three admits, one
	// dispatch and one settle.
	for op, n := range map[string]int{"admit": 3, "dispatch": 1, "settle": 1} {
		if got := histCount(t, reg, "floodgate_guard_redis_seconds", "op", op); got != n {
			t.Errorf("floodgate_guard_redis_seconds{op=%q} count %d, want %d", op, got, n)
		}
	}
	problems, err := ptestutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// histCount returns the sample count of the histogram name{label=value}.
func histCount(t *testing.T, reg *prometheus.Registry, name, label, value string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return int(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return 0
}
