package worker

import (
	"log/slog"
	"slices"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/queue"
)

// QueueCollector returns a collector of floodgate's queues as asynq's
// Inspector sees them in Redis at scrape time (every process's tasks):
// floodgate_queue_tasks{queue,state} for the states pending, active,
// scheduled, retry, archived and completed, and
// floodgate_queue_oldest_pending_seconds{queue}, the age of the oldest
// task waiting to be taken (0 when none waits). Each queue costs a few
// constant-time commands, whatever its length. A queue no task has used
// yet shows zeros; when Redis does not answer the scrape has none of
// these series. log, if not nil, receives that failure.
func QueueCollector(rdb redis.UniversalClient, log *slog.Logger) prometheus.Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &queueCollector{
		insp: asynq.NewInspectorFromRedisClient(rdb),
		log:  log,
		tasks: prometheus.NewDesc("floodgate_queue_tasks",
			"Tasks in each floodgate queue by state (pending, active, scheduled, retry, archived, completed), read from Redis at scrape time.",
			[]string{"queue", "state"}, nil),
		oldest: prometheus.NewDesc("floodgate_queue_oldest_pending_seconds",
			"Age of the oldest pending task of each floodgate queue: how long the next email taken has waited (0 when none waits).",
			[]string{"queue"}, nil),
	}
}

// queues are floodgate's asynq queues, in the worker's priority order.
var queues = []string{queue.ClassSecurity.QueueName(), queue.ClassNotify.QueueName(), queue.ReleaseQueue}

type queueCollector struct {
	insp          *asynq.Inspector
	log           *slog.Logger
	tasks, oldest *prometheus.Desc
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.tasks
	ch <- c.oldest
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	known, err := c.insp.Queues()
	if err != nil {
		c.log.Warn("queue metrics", "err", err)
		return
	}
	// Sent only once every queue was read: a scrape shows all or none.
	var out []prometheus.Metric
	for _, q := range queues {
		// asynq knows a queue once a task has been put on it.
		info := &asynq.QueueInfo{}
		if slices.Contains(known, q) {
			if info, err = c.insp.GetQueueInfo(q); err != nil {
				c.log.Warn("queue metrics", "queue", q, "err", err)
				return
			}
		}
		for _, s := range []struct {
			state string
			n     int
		}{
			{"pending", info.Pending}, {"active", info.Active}, {"scheduled", info.Scheduled},
			{"retry", info.Retry}, {"archived", info.Archived}, {"completed", info.Completed},
		} {
			out = append(out, prometheus.MustNewConstMetric(c.tasks, prometheus.GaugeValue, float64(s.n), q, s.state))
		}
		out = append(out, prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, max(info.Latency.Seconds(), 0), q))
	}
	for _, m := range out {
		ch <- m
	}
}
