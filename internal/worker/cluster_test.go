package worker_test

import (
	"context"
	"fmt"
	"net/mail"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/delivery"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/internal/worker"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
	"github.com/floodgate-dev/floodgate/templates"
)

// TestRedisCluster runs the whole path on a 3-master Redis Cluster: the
// guard's scripts, asynq's queues (through a cluster client, as
// asynq.RedisClusterClientOpt would build) and the worker.
func TestRedisCluster(t *testing.T) {
	cl := testutil.StartCluster(t)
	cc := cl.Client(t)
	pol, err := guard.ParsePolicy([]byte("kinds: { password_reset: { per_recipient: [2/1h], dedup_window: 0 } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := guard.New(guard.Config{Redis: cc, Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	sink := testutil.StartSink(t, smtpsink.Config{})
	pool, err := delivery.NewPool(delivery.PoolConfig{Addr: sink.SMTPAddr(), TLS: delivery.TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	tmpl, err := templates.New("")
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Redis: cc, Sender: pool, Templates: tmpl, Dispatcher: g, Suppressor: g, Kinds: pol.Kinds(),
		From: mail.Address{Address: "no-reply@example.test"}, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Shutdown(context.Background()) })
	client, err := queue.NewClient(queue.Config{Redis: cc, Admitter: g, Kinds: pol.Kinds()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	ctx := context.Background()
	var outcomes []queue.Outcome
	for i := range 3 {
		r, err := client.Enqueue(ctx, resetEmail("alice@example.com"))
		if err != nil {
			t.Fatalf("enqueue %d: %v", i, err)
		}
		outcomes = append(outcomes, r.Outcome)
	}
	for i := range 5 {
		if _, err := client.Enqueue(ctx, queue.Email{Kind: queue.KindNotification, To: fmt.Sprintf("n%d@example.com", i),
			Data: map[string]string{"subject": "s", "body": "b"}}); err != nil {
			t.Fatal(err)
		}
	}
	if outcomes[0] != queue.Queued || outcomes[1] != queue.Queued || outcomes[2] != queue.Capped {
		t.Fatalf("outcomes %v, want queued, queued, capped", outcomes)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := sink.Wait(wctx, 7, smtpsink.Query{}); err != nil {
		t.Fatalf("sink has %d of 7: %v", sink.Stats().Received, err)
	}
	st, err := g.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pr, n := st.Kinds[queue.KindPasswordReset], st.Kinds[queue.KindNotification]
	if pr.Requested != 3 || pr.Outcomes[queue.Capped] != 1 || n.Requested != 5 {
		t.Errorf("stats on the cluster: reset %+v, notification %+v", pr, n)
	}
}
