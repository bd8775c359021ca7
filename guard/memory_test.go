package guard

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
)

var (
	memoryRecipients = flag.Int("memory-recipients", 30000, "distinct recipients TestMemoryPerRecipient admits")
	memoryWindow     = flag.Duration("memory-window", 5*time.Second, "per-recipient windows in TestMemoryPerRecipient; longer than the admission run for an exact figure")
)

// memoryBudget is the target Redis memory per tracked recipient.
const memoryBudget = 150

// TestMemoryPerRecipient admits distinct recipients with every
// per-recipient window and the dedup window on, measures Redis used_memory
// (without client buffers) per recipient, and checks that it returns to the baseline once the
// windows have expired. Figure: go test ./guard -run TestMemoryPerRecipient
// -memory-recipients=1000000 -memory-window=3m -v
func TestMemoryPerRecipient(t *testing.T) {
	n, w := *memoryRecipients, *memoryWindow
	srv := testutil.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 64})
	t.Cleanup(func() { rc.Close() })
	// mc measures on its own connection, after dropping every other one
	// so that their buffers do not count.
	mc := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 1})
	t.Cleanup(func() { mc.Close() })
	g := guardOn(t, rc, fmt.Sprintf(`
kinds:
  password_reset: { dedup_window: %[1]s, per_recipient: ["3/%[1]s", "10/%[1]s"], per_source: [], breaker: off }
`, formatDuration(w)), Config{DecisionSample: -1})
	ctx := context.Background()
	// Load the script and create the counters before the baseline.
	admit(t, g, adm(queue.KindPasswordReset, "warmup@example.com", ""))
	if err := mc.Del(ctx, rkeys.Recipient(queue.KindPasswordReset, "warmup@example.com")).Err(); err != nil {
		t.Fatal(err)
	}
	base := usedMemory(t, mc)
	baseKeys := mc.DBSize(ctx).Val()

	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				v, err := g.Admit(ctx, &queue.Admission{ID: newID(), Kind: queue.KindPasswordReset, To: "user" + strconv.FormatInt(i, 10) + "@example.com"})
				if err != nil || !v.Allow {
					t.Errorf("Admit #%d = %+v, %v", i, v, err)
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	peak := usedMemory(t, mc)
	live := mc.DBSize(ctx).Val() - baseKeys
	if live <= 0 {
		t.Fatalf("no recipient keys alive after %v: raise -memory-window (%v)", took, w)
	}
	perLive := float64(peak-base) / float64(live)
	t.Logf("%d recipients admitted in %v (%.0f/s); %d keys alive; used_memory %d -> %d: %.1f bytes per recipient",
		n, took.Round(time.Millisecond), float64(n)/took.Seconds(), live, base, peak, perLive)
	if live != int64(n) {
		t.Logf("some windows expired during the run; the figure divides by the %d keys alive (raise -memory-window for an exact figure)", live)
	}
	if perLive > memoryBudget {
		t.Errorf("%.1f bytes per recipient, budget %d", perLive, memoryBudget)
	}

	// Once the windows have expired, every recipient key is gone and the
	// memory is back at the baseline (plus at most a few pages of allocator
	// slack). Redis expires keys on its own clock: poll.
	deadline := time.Now().Add(w + 2*time.Minute)
	for {
		keys := mc.DBSize(ctx).Val() - baseKeys
		now := usedMemory(t, mc)
		if keys == 0 && now-base <= 64<<10 {
			t.Logf("after the windows: %d keys, used_memory %d (baseline %d)", keys, now, base)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("memory did not return: %d recipient keys left, used_memory %d, baseline %d", keys, now, base)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// usedMemory closes every other client connection (CLIENT KILL is
// synchronous), then returns INFO memory's used_memory minus
// mem_clients_normal: the data set and its indexes, without client buffers.
// rc must have a single connection.
func usedMemory(t testing.TB, rc *redis.Client) int64 {
	t.Helper()
	ctx := context.Background()
	if err := rc.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	info, err := rc.Info(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]int64{}
	for line := range strings.SplitSeq(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			fields[k] = n
		}
	}
	used, ok := fields["used_memory"]
	if !ok {
		t.Fatal("no used_memory in INFO memory")
	}
	return used - fields["mem_clients_normal"]
}
