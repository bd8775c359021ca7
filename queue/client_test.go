package queue_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
)

func newClient(t *testing.T, cfg queue.Config) (*queue.Client, *testutil.Redis) {
	t.Helper()
	r := testutil.StartRedis(t)
	if cfg.Redis == nil {
		cfg.Redis = redis.NewClient(&redis.Options{Addr: r.Addr, ContextTimeoutEnabled: true})
	}
	c, err := queue.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, r
}

func reset(to string) queue.Email {
	return queue.Email{Kind: queue.KindPasswordReset, To: to, Data: map[string]string{"reset_url": "https://app.example/r/abc"}}
}

func TestEnqueueStoresTask(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	c, r := newClient(t, queue.Config{Unguarded: true, Now: func() time.Time { return now }})
	e := reset("Alice@Example.COM")
	e.Name = "Alice"
	rc, err := c.Enqueue(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Outcome != queue.Queued || !rc.Accepted() || rc.Kind != queue.KindPasswordReset || len(rc.ID) != 32 {
		t.Fatalf("receipt = %+v", rc)
	}
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: r.Addr})
	defer insp.Close()
	info, err := insp.GetTaskInfo(queue.ClassSecurity.QueueName(), rc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != queue.TypeEmail || info.MaxRetry != queue.DefaultMaxRetry+1 || info.Timeout != 2*time.Minute {
		t.Errorf("task = type %q maxretry %d timeout %v", info.Type, info.MaxRetry, info.Timeout)
	}
	p, err := queue.DecodePayload(info.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if !p.ExpiresAt.Equal(now.Add(30 * time.Minute)) {
		t.Errorf("expires_at = %v, want TTL 30m after %v", p.ExpiresAt, now)
	}
	if p.To != "Alice@example.com" || p.Name != "Alice" || p.ID != rc.ID || p.Data["reset_url"] == "" {
		t.Errorf("payload = %+v", p)
	}
	if strings.Contains(string(info.Payload), "source") {
		t.Errorf("payload carries the source: %s", info.Payload)
	}
}

func TestEnqueueNotificationQueue(t *testing.T) {
	c, r := newClient(t, queue.Config{Unguarded: true})
	rc, err := c.Enqueue(context.Background(), queue.Email{Kind: queue.KindNotification, To: "a@example.com",
		Data: map[string]string{"subject": "Hi", "body": "Text"}})
	if err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: r.Addr})
	defer insp.Close()
	if _, err := insp.GetTaskInfo(queue.ClassNotify.QueueName(), rc.ID); err != nil {
		t.Fatalf("notification not in the notify queue: %v", err)
	}
}

func TestEnqueueInvalid(t *testing.T) {
	c, _ := newClient(t, queue.Config{Unguarded: true})
	ok := func() queue.Email { return reset("a@example.com") }
	tests := []struct {
		name  string
		email func() queue.Email
		field string
	}{
		{"bad to", func() queue.Email { e := ok(); e.To = "a@example.com\r\nBcc: b@example.com"; return e }, "to"},
		{"encoded name", func() queue.Email { e := ok(); e.Name = "=?utf-8?q?x=0D=0ABcc:_y?="; return e }, "name"},
		{"missing url", func() queue.Email { e := ok(); e.Data = nil; return e }, "data.reset_url"},
		{"javascript url", func() queue.Email { e := ok(); e.Data["reset_url"] = "javascript:alert(1)"; return e }, "data.reset_url"},
		{"url with newline", func() queue.Email { e := ok(); e.Data["reset_url"] = "https://a.example/\r\nx"; return e }, "data.reset_url"},
		{"bad data key", func() queue.Email { e := ok(); e.Data["Bad-Key"] = "x"; return e }, "data"},
		{"nul in data", func() queue.Email { e := ok(); e.Data["note"] = "a\x00b"; return e }, "data.note"},
		{"big data", func() queue.Email { e := ok(); e.Data["body"] = strings.Repeat("x", 70<<10); return e }, "data"},
		{"control in source", func() queue.Email { e := ok(); e.Source = "1.2.3.4\n"; return e }, "source"},
	}
	for _, tt := range tests {
		_, err := c.Enqueue(context.Background(), tt.email())
		var ie *queue.InvalidError
		if !errors.As(err, &ie) || ie.Field != tt.field || !errors.Is(err, queue.ErrInvalid) {
			t.Errorf("%s: Enqueue error = %v, want invalid field %q", tt.name, err, tt.field)
		}
	}
	if _, err := c.Enqueue(context.Background(), queue.Email{Kind: "nope", To: "a@example.com"}); !errors.Is(err, queue.ErrUnknownKind) {
		t.Errorf("unknown kind: err = %v, want ErrUnknownKind", err)
	}
}

func TestEnqueueIdempotencyKey(t *testing.T) {
	c, _ := newClient(t, queue.Config{Unguarded: true})
	e := reset("a@example.com")
	e.IdempotencyKey = "req-42"
	first, err := c.Enqueue(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.Enqueue(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	if first.Outcome != queue.Queued || second.Outcome != queue.Duplicate || first.ID != second.ID {
		t.Fatalf("first %+v, second %+v: want queued then duplicate with one id", first, second)
	}
}

func TestEnqueueRedisDown(t *testing.T) {
	c, r := newClient(t, queue.Config{Unguarded: true, Timeout: 500 * time.Millisecond})
	r.Stop()
	start := time.Now()
	_, err := c.Enqueue(context.Background(), reset("a@example.com"))
	if !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "a@example.com") {
		t.Errorf("error leaks the address: %v", err)
	}
	t.Logf("failed after %v", time.Since(start))
}

// admitter refuses every other email, standing in for the guard.
type admitter struct {
	mu   sync.Mutex
	seen []*queue.Admission
}

func (a *admitter) Admit(_ context.Context, ad *queue.Admission) (queue.Verdict, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen = append(a.seen, ad)
	if len(a.seen)%2 == 0 {
		return queue.Verdict{Outcome: queue.Capped, Reason: "recipient"}, nil
	}
	return queue.Verdict{Allow: true}, nil
}

func TestEnqueueAdmission(t *testing.T) {
	a := &admitter{}
	c, r := newClient(t, queue.Config{Admitter: a})
	e := reset("A@Example.com")
	e.Source = "203.0.113.9"
	r1, err := c.Enqueue(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := c.Enqueue(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Outcome != queue.Queued || r2.Outcome != queue.Capped || r2.Reason != "recipient" {
		t.Fatalf("receipts %+v %+v", r1, r2)
	}
	ad := a.seen[0]
	if ad.To != "A@example.com" || ad.Source != "203.0.113.9" || ad.Spec.TTL != 30*time.Minute || len(ad.Payload) == 0 {
		t.Errorf("admission = %+v", ad)
	}
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: r.Addr})
	defer insp.Close()
	if _, err := insp.GetTaskInfo(queue.ClassSecurity.QueueName(), r2.ID); err == nil {
		t.Error("a capped email was stored")
	}
}

func TestNewClientNeedsAGuard(t *testing.T) {
	r := testutil.StartRedis(t)
	_, err := queue.NewClient(queue.Config{Redis: r.Client(t)})
	if err == nil || !strings.Contains(err.Error(), "Admitter") {
		t.Fatalf("NewClient without Admitter: %v, want an error naming Admitter", err)
	}
}

// A subject is header text: what a mail reader would decode to a line break,
// and invisible format characters, are refused at enqueue rather than at
// build in the worker.
func TestEnqueueRefusesHostileSubject(t *testing.T) {
	c, _ := newClient(t, queue.Config{Unguarded: true})
	for _, subject := range []string{
		"=?utf-8?q?Hello=0D=0ABcc:_evil@attacker.example?=",
		"=?utf-8?b?SGVsbG8NCkJjYzogZXZpbEBhdHRhY2tlci5leGFtcGxl?=",
		"Invoice \u202efdp.exe",
	} {
		_, err := c.Enqueue(context.Background(), queue.Email{Kind: queue.KindNotification, To: "a@example.com",
			Data: map[string]string{"subject": subject, "body": "b"}})
		var ie *queue.InvalidError
		if !errors.As(err, &ie) || ie.Field != "data.subject" {
			t.Errorf("Enqueue(subject %q) = %v, want an *InvalidError for data.subject", subject, err)
		}
	}
	for _, to := range []string{"user@127.0.0.1", "user@192.168.0.1."} {
		_, err := c.Enqueue(context.Background(), reset(to))
		var ie *queue.InvalidError
		if !errors.As(err, &ie) || ie.Field != "to" {
			t.Errorf("Enqueue(to %q) = %v, want an *InvalidError for to", to, err)
		}
	}
}

func TestEnqueueUnknownKindSuggests(t *testing.T) {
	c, _ := newClient(t, queue.Config{Unguarded: true})
	_, err := c.Enqueue(context.Background(), queue.Email{Kind: "pasword_reset", To: "a@example.com"})
	if !errors.Is(err, queue.ErrUnknownKind) || !strings.Contains(err.Error(), `did you mean "password_reset"?`) {
		t.Errorf("Enqueue(pasword_reset) = %v, want ErrUnknownKind with a did-you-mean", err)
	}
	_, err = c.Enqueue(context.Background(), queue.Email{Kind: "invoice", To: "a@example.com"})
	if !errors.Is(err, queue.ErrUnknownKind) || strings.Contains(err.Error(), "did you mean") {
		t.Errorf("Enqueue(invoice) = %v, want ErrUnknownKind without a suggestion", err)
	}
}
