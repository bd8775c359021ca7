package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	ptestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/delivery"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/internal/worker"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// The queue collector reads every state of floodgate's queues from Redis at
// scrape time, as asynq's Inspector sees them, and the age of the oldest
// pending task; queues no task has used show zeros.
func TestQueueCollector(t *testing.T) {
	srv := testutil.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	c := worker.QueueCollector(rdb, nil)

	// Before any task: zeros for every queue.
	if n := ptestutil.CollectAndCount(c, "floodgate_queue_tasks"); n != 3*6 {
		t.Errorf("%d floodgate_queue_tasks series, want 18", n)
	}

	client, err := queue.NewClient(queue.Config{Redis: rdb, Unguarded: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	before := time.Now()
	var ids []string
	for i := range 3 {
		r, err := client.Enqueue(context.Background(), resetEmail(fmt.Sprintf("user%d@example.com", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	sec := queue.ClassSecurity.QueueName()
	if err := insp.ArchiveTask(sec, ids[0]); err != nil {
		t.Fatal(err)
	}
	ac := asynq.NewClientFromRedisClient(rdb)
	if _, err := ac.Enqueue(asynq.NewTask(queue.TypeEmail, []byte("{}")), asynq.Queue(queue.ClassNotify.QueueName()), asynq.ProcessIn(time.Hour)); err != nil {
		t.Fatal(err)
	}

	var want strings.Builder
	want.WriteString("# HELP floodgate_queue_tasks Tasks in each floodgate queue by state (pending, active, scheduled, retry, archived, completed), read from Redis at scrape time.\n# TYPE floodgate_queue_tasks gauge\n")
	counts := map[string]map[string]int{sec: {"pending": 2, "archived": 1}, queue.ClassNotify.QueueName(): {"scheduled": 1}}
	for _, q := range []string{queue.ClassNotify.QueueName(), queue.ReleaseQueue, sec} { // sorted, as gathered
		for _, st := range []string{"active", "archived", "completed", "pending", "retry", "scheduled"} {
			fmt.Fprintf(&want, "floodgate_queue_tasks{queue=%q,state=%q} %d\n", q, st, counts[q][st])
		}
	}
	if err := ptestutil.CollectAndCompare(c, strings.NewReader(want.String()), "floodgate_queue_tasks"); err != nil {
		t.Error(err)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "floodgate_queue_oldest_pending_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			q, age := m.GetLabel()[0].GetValue(), m.GetGauge().GetValue()
			// The oldest pending email waited since its enqueue, no longer
			// than the test has run; the other queues have none.
			if q == sec && (age <= 0 || age > time.Since(before).Seconds()) || q != sec && age != 0 {
				t.Errorf("oldest pending of %s: %vs", q, age)
			}
		}
	}
	problems, err := ptestutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// Through the real worker and sink, one delivered email is one SMTP send
// timed as sent, the pool shows its one connection open and idle, and the
// registry of the worker, guard, pool and queue collectors lints clean.
func TestOperatorMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	e := newGuardedEnv(t, withGuard(`{}`, guard.Config{Registerer: reg}), func(c *worker.Config, _ *smtpsink.Config) {
		c.Registerer = reg
	})
	pool := e.wcfg.Sender.(countingSender).Sender.(*delivery.Pool)
	reg.MustRegister(pool.Collector(), e.guard.HeldCollector(), worker.QueueCollector(e.rdb, nil))
	r := e.enqueue(t, resetEmail("frank@example.com"))
	if seq := e.waitOutcome(t, r.ID); seq[len(seq)-1] != queue.Sent {
		t.Fatalf("outcomes %v, want sent", seq)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, lp := range m.GetLabel() {
				key += "," + lp.GetName() + "=" + lp.GetValue()
			}
			switch {
			case m.GetHistogram() != nil:
				got[key] = float64(m.GetHistogram().GetSampleCount())
			case m.GetGauge() != nil:
				got[key] = m.GetGauge().GetValue()
			}
		}
	}
	for key, want := range map[string]float64{
		"floodgate_smtp_send_seconds,result=sent":                                           1,
		"floodgate_smtp_connections,state=open":                                             1,
		"floodgate_smtp_connections,state=idle":                                             1,
		"floodgate_guard_redis_seconds,op=admit":                                            1,
		"floodgate_guard_redis_seconds,op=dispatch":                                         1,
		"floodgate_guard_redis_seconds,op=settle":                                           1,
		"floodgate_held_emails,kind=password_reset":                                         0,
		"floodgate_queue_tasks,queue=" + queue.ClassSecurity.QueueName() + ",state=pending": 0,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
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
