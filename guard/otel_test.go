package guard

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/floodgate-dev/floodgate/internal/testutil"
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
