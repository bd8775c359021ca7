package guard

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
)

// BenchmarkAdmitBreaker measures admission of a flood of distinct
// recipients (every cap on, as BenchmarkAdmit) against each breaker state:
// closed (counting every request), open in hold mode (parked until the
// held area is full, then shed) and open in shed mode.
func BenchmarkAdmitBreaker(b *testing.B) {
	srv := testutil.StartRedis(b)
	rc := benchClient(b, srv.Addr)
	ctx := context.Background()
	var seq atomic.Int64
	for _, c := range []struct {
		name, doc string
		trip      bool
	}{
		{"closed", benchPolicy, false},
		{"open_hold", "kinds: { password_reset: { breaker: { learn: { warmup: 0 }, open: hold, hold_max: 100000 } } }\n", true},
		{"open_shed", "kinds: { password_reset: { breaker: { learn: { warmup: 0 }, open: shed } } }\n", true},
	} {
		b.Run(c.name, func(b *testing.B) {
			rc.FlushAll(ctx)
			g := guardOn(b, rc, c.doc, Config{})
			if c.trip {
				if _, err := g.Trip(ctx, queue.KindPasswordReset, ""); err != nil {
					b.Fatal(err)
				}
			}
			payload := []byte(`{"v":1,"id":"0123456789abcdef0123456789abcdef","kind":"password_reset","to":"user@example.com","data":{"reset_url":"https://app.example/reset?token=0123456789abcdef"},"enqueued_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T00:30:00Z"}`)
			b.SetParallelism(benchParallelism)
			b.ReportAllocs()
			b.ResetTimer()
			reportServerTime(b, rc, func() {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := g.Admit(ctx, benchAdmission(&seq, payload)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}
