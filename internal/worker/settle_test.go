package worker_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/internal/worker"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

var longOutage = flag.Bool("long-outage", false, "also run the 60s Redis outage at the moment of the relay's 250")

// A Redis outage at the moment the relay answers 250 must not turn into a
// second send: the worker keeps trying to record the 250 until Redis is
// back, and a redelivered task, on another worker, finds the email sent.
// Redis is either frozen (SIGSTOP: commands hang, nothing is lost) or cut
// off by a proxy that closes every connection and refuses new ones.
func TestSentSurvivesRedisOutage(t *testing.T) {
	cases := []struct {
		name   string
		cut    bool
		outage time.Duration
		long   bool
	}{
		{"frozen 10s", false, 10 * time.Second, false},
		{"cut 10s", true, 10 * time.Second, false},
		{"frozen 60s", false, 60 * time.Second, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.long && !*longOutage {
				t.Skip("60s outage: run with -long-outage")
			}
			t.Parallel()
			testOutageAt250(t, c.cut, c.outage)
		})
	}
}

func testOutageAt250(t *testing.T, cut bool, outage time.Duration) {
	const n = 5
	var proxy *testutil.Proxy
	e := newGuardedEnv(t, func(e *env) { e.policy, e.poolConns = "{}", n }, func(w *worker.Config, s *smtpsink.Config) {
		// Every email is in its SMTP transaction at once; the sink stores
		// each message, then holds its 250 for SlowDelay.
		w.Concurrency = n
		s.SlowDelay = 1500 * time.Millisecond
		if cut {
			// The worker, asynq and guard alike, reaches Redis through a
			// proxy; the producer and the other worker below do not.
			proxy = testutil.StartProxy(t, w.Redis.(*redis.Client).Options().Addr)
			rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr, ContextTimeoutEnabled: true,
				DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
			t.Cleanup(func() { rdb.Close() })
			g, err := guard.New(guard.Config{Redis: rdb})
			if err != nil {
				t.Fatal(err)
			}
			w.Redis, w.Dispatcher, w.Suppressor = rdb, g, g
		}
	})
	// The other worker a redelivered task would reach: its own process
	// state, Redis direct.
	ocfg := e.wcfg
	ocfg.Redis, ocfg.Dispatcher, ocfg.Suppressor = e.rdb, e.guard, e.guard
	other, err := worker.New(ocfg)
	if err != nil {
		t.Fatal(err)
	}

	ids := make([]string, n)
	for i := range ids {
		ids[i] = e.enqueue(t, resetEmail(fmt.Sprintf("slow+x@d%d.example.com", i))).ID
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.sink.Wait(ctx, n, smtpsink.Query{}); err != nil {
		t.Fatal(err)
	}
	// Every DATA is done and every 250 pending: take the tasks as asynq
	// would redeliver them, then take Redis away before the replies.
	tasks := make([]*asynq.Task, n)
	for i, id := range ids {
		tasks[i] = taskOf(t, e.rdb, queue.ClassSecurity.QueueName(), id)
	}
	if cut {
		proxy.Cut()
	} else {
		e.redis.Pause(t)
	}
	// The outage's length is the fault under test, not a wait for an event.
	time.Sleep(outage)
	if cut {
		proxy.Restore()
	} else {
		e.redis.Resume(t)
	}

	// A redelivery at once, racing the first worker's record of the 250:
	// it may wait for the claim, it must not send.
	for _, task := range tasks {
		_ = other.ProcessTask(context.Background(), task)
	}
	for _, id := range ids {
		e.waitFor(t, id, func(seq []queue.Outcome) bool { return slices.Contains(seq, queue.Sent) })
	}
	for _, id := range ids {
		if v, err := e.rdb.Get(context.Background(), rkeys.Claim(id)).Result(); err != nil || !strings.HasPrefix(v, rkeys.ClaimSent) {
			t.Errorf("email %s: claim %q (%v) after its 250, want %q (sent)", id, v, err, rkeys.ClaimSent)
		}
	}
	// A redelivery once Redis has the record: a duplicate, not a send.
	for i, task := range tasks {
		_ = other.ProcessTask(context.Background(), task)
		e.mu.Lock()
		seq := e.outcomes[ids[i]]
		e.mu.Unlock()
		if seq[len(seq)-1] != queue.Duplicate {
			t.Errorf("email %s: redelivery after the outage recorded %v, want duplicate last", ids[i], seq)
		}
	}
	byID := map[string]int{}
	for _, m := range e.sink.Messages(smtpsink.Query{}) {
		byID[m.MessageID]++
	}
	for mid, c := range byID {
		if c != 1 {
			t.Errorf("Message-ID %s reached the sink %d times", mid, c)
		}
	}
	if len(byID) != n {
		t.Errorf("%d distinct messages at the sink, want %d", len(byID), n)
	}
	// asynq finishes the tasks: at once when its own lease outlived the
	// outage, else after its recoverer redelivers them, as duplicates.
	waitQueueDrained(t, e.rdb, queue.ClassSecurity.QueueName(), 4*time.Minute)
	if got := len(e.sink.Messages(smtpsink.Query{})); got != n {
		t.Errorf("sink has %d messages after asynq finished, want %d", got, n)
	}
	st, err := e.guard.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ks := st.Kinds[queue.KindPasswordReset]; ks.Outcomes[queue.Sent] != n || ks.InFlight != 0 {
		t.Errorf("stats: sent %d, in flight %d; want %d and 0", ks.Outcomes[queue.Sent], ks.InFlight, n)
	}
}

// waitQueueDrained polls asynq's inspector until q holds no pending,
// active, scheduled or retrying task: queue states publish no event.
func waitQueueDrained(t *testing.T, rdb *redis.Client, q string, within time.Duration) {
	t.Helper()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	deadline := time.Now().Add(within)
	for {
		info, err := insp.GetQueueInfo(q)
		if err == nil && info.Pending+info.Active+info.Scheduled+info.Retry == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s not drained: %+v, %v", q, info, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// signalHandler is a slog handler that reports each record whose message
// is msg.
type signalHandler struct {
	msg string
	ch  chan struct{}
}

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h signalHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return nil
}
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h signalHandler) WithGroup(string) slog.Handler      { return h }

// While a worker is still recording a 250 it saw, the same email handed to
// it again is deferred without asking Redis or the relay, however long the
// outage and whatever the claim's lease.
func TestUnsettledRedeliveryDeferred(t *testing.T) {
	retrying := signalHandler{msg: "settle failed; retrying until Redis answers", ch: make(chan struct{}, 1)}
	e := newGuardedEnv(t, withGuard("{}", guard.Config{}), func(w *worker.Config, s *smtpsink.Config) {
		s.SlowDelay = 500 * time.Millisecond
		w.Logger = slog.New(retrying)
	})
	r := e.enqueue(t, resetEmail("slow+x@example.com"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.sink.Wait(ctx, 1, smtpsink.Query{}); err != nil {
		t.Fatal(err)
	}
	task := taskOf(t, e.rdb, queue.ClassSecurity.QueueName(), r.ID)
	e.redis.Pause(t)
	select {
	case <-retrying.ch:
	case <-ctx.Done():
		t.Fatal("the worker never retried its settle")
	}
	if err := e.worker.ProcessTask(context.Background(), task); err == nil {
		t.Fatal("the redelivery was not deferred")
	}
	e.mu.Lock()
	seq := e.outcomes[r.ID]
	e.mu.Unlock()
	if len(seq) != 1 || seq[0] != queue.Deferred {
		t.Fatalf("outcomes %v while Redis is frozen, want [deferred]", seq)
	}
	e.redis.Resume(t)
	e.waitFor(t, r.ID, func(seq []queue.Outcome) bool { return slices.Contains(seq, queue.Sent) })
	if got := e.sink.Stats().Received; got != 1 || e.sends.Load() != 1 {
		t.Fatalf("sink received %d, sends %d; want 1 and 1", got, e.sends.Load())
	}
}
