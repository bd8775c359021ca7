package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// Tasks pushed into Redis without queue.Client: the worker validates them
// again and archives what the producer would have refused, and tasks of a
// type it does not know, without sending anything.
func TestRawTasksRevalidated(t *testing.T) {
	e := newEnv(t)
	ac := asynq.NewClientFromRedisClient(e.rdb)
	defer ac.Close()
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	defer insp.Close()
	payload := func(id, kind string, data map[string]string) []byte {
		p := &queue.Payload{ID: id, Kind: kind, To: "victim@example.com", Data: data,
			EnqueuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
		b, err := p.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	q := queue.ClassSecurity.QueueName()
	tasks := []struct {
		id, typ string
		body    []byte
		lastErr string
	}{
		{"js-url", queue.TypeEmail, payload("js-url", queue.KindPasswordReset, map[string]string{"reset_url": "javascript:alert(document.cookie)"}),
			"malformed payload"},
		{"data-url", queue.TypeEmail, payload("data-url", queue.KindNotification, map[string]string{
			"subject": "Hi", "body": "b", "action_url": "data:text/html,<script>alert(1)</script>"}), "malformed payload"},
		{"enc-subject", queue.TypeEmail, payload("enc-subject", queue.KindNotification, map[string]string{
			"subject": "=?utf-8?q?Hi=0D=0ABcc:_evil@attacker.example?=", "body": "b"}), "malformed payload"},
		// A well-formed email under a type the worker does not handle.
		{"other-type", "floodgate:email:v2", payload("other-type", queue.KindPasswordReset, map[string]string{"reset_url": "https://app.example/r"}),
			"unknown task type"},
		{"no-type", "send", []byte(`{}`), "unknown task type"},
	}
	for _, tk := range tasks {
		if _, err := ac.Enqueue(asynq.NewTask(tk.typ, tk.body), asynq.Queue(q), asynq.TaskID(tk.id), asynq.MaxRetry(5)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tk := range tasks {
		info := waitTaskState(t, insp, q, tk.id, asynq.TaskStateArchived)
		if !strings.Contains(info.LastErr, tk.lastErr) || info.Retried != 0 {
			t.Errorf("task %s archived after %d retries with %q, want no retry and %q", tk.id, info.Retried, info.LastErr, tk.lastErr)
		}
	}
	// Each was counted as failed (a task the worker cannot read has no id).
	e.mu.Lock()
	failed := 0
	for _, o := range e.outcomes["?"] {
		if o == queue.Failed {
			failed++
		}
	}
	e.mu.Unlock()
	if failed != len(tasks) {
		t.Errorf("%d failures recorded, want %d", failed, len(tasks))
	}

	good := e.enqueue(t, resetEmail("fine@example.com"))
	if seq := e.waitOutcome(t, good.ID); seq[len(seq)-1] != queue.Sent {
		t.Fatalf("good email outcomes %v", seq)
	}
	if got := len(e.sink.Messages(smtpsink.Query{To: "victim@example.com"})); got != 0 || e.sends.Load() != 1 {
		t.Errorf("%d messages reached the victim, %d send attempts; want 0 and 1 (the good email)", got, e.sends.Load())
	}
}
