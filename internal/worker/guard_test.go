package worker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/delivery"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/internal/worker"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// taskOf returns the asynq task a redelivery of email id would carry.
func taskOf(t *testing.T, rdb *redis.Client, q, id string) *asynq.Task {
	t.Helper()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	info, err := insp.GetTaskInfo(q, id)
	if err != nil {
		t.Fatal(err)
	}
	return asynq.NewTask(info.Type, info.Payload)
}

// A task delivered again after a successful send is a duplicate: the
// guard's claim says sent, and nothing reaches the relay twice.
func TestRedeliveryAfterSendIsDuplicate(t *testing.T) {
	e := newGuardedEnv(t, withGuard("{}", guard.Config{}))
	r := e.enqueue(t, resetEmail("once@example.com"))
	if seq := e.waitOutcome(t, r.ID); seq[len(seq)-1] != queue.Sent {
		t.Fatalf("outcomes %v", seq)
	}
	// asynq keeps no completed task; rebuild the payload the redelivery
	// would carry from what the sink received.
	p := &queue.Payload{ID: r.ID, Kind: queue.KindPasswordReset, To: "once@example.com", Name: "Alice",
		Data: map[string]string{"reset_url": "https://app.example/r/abc"}, EnqueuedAt: time.Now(), ExpiresAt: time.Now().Add(30 * time.Minute)}
	body, _ := p.Encode()
	if err := e.worker.ProcessTask(context.Background(), asynq.NewTask(queue.TypeEmail, body)); err != nil {
		t.Fatalf("redelivery: %v", err)
	}
	e.mu.Lock()
	seq := e.outcomes[r.ID]
	e.mu.Unlock()
	if seq[len(seq)-1] != queue.Duplicate {
		t.Fatalf("redelivery outcomes %v, want duplicate last", seq)
	}
	if got := e.sink.Stats().Received; got != 1 {
		t.Fatalf("sink received %d, want 1", got)
	}
}

// Shutting a worker down while its SMTP transaction waits for the reply
// makes asynq re-queue the task; the transaction still completes, and the
// second worker records a duplicate instead of sending again.
func TestShutdownDuringDataNotSentTwice(t *testing.T) {
	// The lease outlasts the slow reply, and a redelivery that finds the
	// claim taken looks again when it ends.
	e := newGuardedEnv(t, withGuard("{}", guard.Config{Lease: 3 * time.Second}), func(w *worker.Config, s *smtpsink.Config) {
		w.ShutdownTimeout = 100 * time.Millisecond
		s.SlowDelay = 1500 * time.Millisecond
	})
	r := e.enqueue(t, resetEmail("slow+x@example.com"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The sink stores the message before its delayed reply: DATA is done,
	// the 250 is pending.
	if _, err := e.sink.Wait(ctx, 1, smtpsink.Query{}); err != nil {
		t.Fatal(err)
	}
	if err := e.worker.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// A second worker on the same Redis takes the re-queued task.
	e.startWorker(t)
	seq := e.waitOutcome(t, r.ID) // the first worker's Sent
	for seq[len(seq)-1] != queue.Duplicate {
		seq = e.waitNext(t, r.ID, len(seq))
	}
	if got := e.sink.Stats().Received; got != 1 {
		t.Fatalf("sink received %d, want 1; outcomes %v", got, seq)
	}
}

// A claim whose worker died (it never settles) expires with its lease, and
// the email is then sent exactly once.
func TestDeadWorkersClaimExpires(t *testing.T) {
	e := newGuardedEnv(t, withGuard("{}", guard.Config{Lease: 300 * time.Millisecond}))
	if err := e.worker.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := e.enqueue(t, resetEmail("orphan@example.com"))
	p, err := queue.DecodePayload(taskOf(t, e.rdb, queue.ClassSecurity.QueueName(), r.ID).Payload())
	if err != nil {
		t.Fatal(err)
	}
	if v, err := e.guard.Dispatch(context.Background(), p, "dead-worker"); err != nil || !v.Allow {
		t.Fatalf("claim by the dead worker: %+v, %v", v, err)
	}
	e.startWorker(t)
	seq := e.waitOutcome(t, r.ID)
	if seq[len(seq)-1] != queue.Sent || seq[0] != queue.Deferred {
		t.Fatalf("outcomes %v, want deferred while claimed, then sent", seq)
	}
	if got := e.sink.Stats().Received; got != 1 {
		t.Fatalf("sink received %d, want 1", got)
	}
}

// Rate-limited emails are deferred (a domain's rate; short global-rate
// waits are taken in the handler): re-queued after the retry-after,
// never counted as failures, never using a retry, never archived.
func TestDomainRateDefersWithoutRetries(t *testing.T) {
	e := newGuardedEnv(t, withGuard("domains: {default: {rate: 10/1s, burst: 1}}\n", guard.Config{}))
	var ids []string
	for i := range 12 {
		ids = append(ids, e.enqueue(t, queue.Email{Kind: queue.KindNotification, To: "n" + string(rune('a'+i)) + "@example.com",
			Data: map[string]string{"subject": "s", "body": "b"}}).ID)
	}
	var deferred int
	for _, id := range ids {
		seq := e.waitOutcome(t, id)
		if seq[len(seq)-1] != queue.Sent {
			t.Fatalf("%s: outcomes %v", id, seq)
		}
		for _, o := range seq {
			if o == queue.Deferred {
				deferred++
			}
		}
	}
	if deferred == 0 {
		t.Fatal("no email was deferred at 10/s")
	}
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	for _, q := range []string{queue.ClassNotify.QueueName()} {
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			t.Fatal(err)
		}
		if info.Failed != 0 || info.Archived != 0 || info.Retry != 0 {
			t.Errorf("queue %s: failed %d archived %d retry %d, want none", q, info.Failed, info.Archived, info.Retry)
		}
	}
	st, err := e.guard.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("deferrals: %d; stats %+v", deferred, st)
}

// A hard bounce (550 5.1.1) suppresses the recipient: the next request is
// refused at enqueue.
func TestHardBounceSuppresses(t *testing.T) {
	e := newGuardedEnv(t, withGuard("{}", guard.Config{}))
	r := e.enqueue(t, resetEmail("permfail+gone@example.com"))
	if seq := e.waitOutcome(t, r.ID); seq[len(seq)-1] != queue.Failed {
		t.Fatalf("outcomes %v", seq)
	}
	rc, err := e.client.Enqueue(context.Background(), queue.Email{Kind: queue.KindVerifyEmail, To: "permfail+gone@example.com",
		Data: map[string]string{"verify_url": "https://app.example/v"}})
	if err != nil {
		t.Fatal(err)
	}
	if rc.Outcome != queue.Suppressed {
		t.Fatalf("after a hard bounce: %+v, want suppressed", rc)
	}
}

// When the guard's Redis cannot answer, nothing is sent unchecked; the
// emails go out once it is back.
func TestDispatchFailsClosed(t *testing.T) {
	var proxy *testutil.Proxy
	e := newGuardedEnv(t, withGuard("{}", guard.Config{}), func(w *worker.Config, _ *smtpsink.Config) {
		proxy = testutil.StartProxy(t, w.Redis.(*redis.Client).Options().Addr)
		cut := redis.NewClient(&redis.Options{Addr: proxy.Addr, ContextTimeoutEnabled: true, MaxRetries: -1,
			DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond})
		t.Cleanup(func() { cut.Close() })
		g, err := guard.New(guard.Config{Redis: cut, Policy: guard.DefaultPolicy()})
		if err != nil {
			t.Fatal(err)
		}
		// Only the dispatch guard goes through the proxy: asynq keeps
		// handing out tasks, so the guard's refusal is what is tested.
		w.Dispatcher = g
	})
	proxy.Cut()
	r := e.enqueue(t, resetEmail("closed@example.com"))
	// Wait for the worker to have tried at least once and failed closed.
	for {
		seq := e.waitNext(t, r.ID, 0)
		if len(seq) > 0 {
			break
		}
	}
	if e.sends.Load() != 0 {
		t.Fatal("an email was sent while the guard could not answer")
	}
	proxy.Restore()
	seq := e.waitOutcome(t, r.ID)
	if seq[len(seq)-1] != queue.Sent || e.sends.Load() != 1 {
		t.Fatalf("outcomes %v, sends %d", seq, e.sends.Load())
	}
}

// A relay that refuses connections opens the relay breaker: the worker
// stops dialling it, defers emails without using their retries, and
// delivers them once the relay is back.
func TestRelayBreakerDefersThenRecovers(t *testing.T) {
	relayAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	var dials atomic.Int64
	e := newGuardedEnv(t, withGuard(`
kinds:
  password_reset:
    per_source: [1000/1h]
    breaker: { relay_failures: 3, cooldown: 1s, max_cooldown: 2s }
`, guard.Config{}), func(w *worker.Config, _ *smtpsink.Config) {
		pool, err := delivery.NewPool(delivery.PoolConfig{Addr: relayAddr, TLS: delivery.TLSNone, DialTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pool.Close() })
		w.Sender = countingSender{pool, &dials}
	})
	var ids []string
	for i := range 20 {
		ids = append(ids, e.enqueue(t, resetEmail(fmt.Sprintf("r%d@example.com", i))).ID)
	}
	// Wait until the breaker reads open for the relay.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		bs, err := e.guard.Breakers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if b := breakerOf(bs, queue.KindPasswordReset); b.State == "open" && b.Reason == "relay" {
			break
		}
		select {
		case <-e.changed:
		case <-ctx.Done():
			t.Fatalf("relay breaker never opened: %+v", bs)
		}
	}
	open := dials.Load()
	// The relay comes back on the same address.
	sink, err := smtpsink.New(smtpsink.Config{SMTPAddr: relayAddr, HTTPAddr: "-", MaxMessages: 100})
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Shutdown(context.Background()) })
	if _, err := sink.Wait(ctx, len(ids), smtpsink.Query{}); err != nil {
		t.Fatalf("relay back: sink has %d of %d: %v", sink.Stats().Received, len(ids), err)
	}
	for _, id := range ids {
		seq := e.waitOutcome(t, id)
		if seq[len(seq)-1] != queue.Sent {
			t.Fatalf("%s: outcomes %v", id, seq)
		}
	}
	// While open, the worker stopped hammering the relay: 20 emails saw
	// far fewer attempts than one per email per retry.
	t.Logf("send attempts before the breaker opened: %d; total %d", open, dials.Load())
	if open > 10 {
		t.Errorf("%d send attempts before the breaker opened, want about relay_failures (3) plus those in flight", open)
	}
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	info, err := insp.GetQueueInfo(queue.ClassSecurity.QueueName())
	if err != nil {
		t.Fatal(err)
	}
	if info.Archived != 0 {
		t.Errorf("%d emails archived: deferral used up retries", info.Archived)
	}
}

func breakerOf(bs []guard.BreakerState, kind string) guard.BreakerState {
	for _, b := range bs {
		if b.Kind == kind {
			return b
		}
	}
	return guard.BreakerState{}
}
