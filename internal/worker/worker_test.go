package worker_test

import (
	"context"
	"encoding/json"
	"mime"
	"mime/multipart"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/delivery"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/internal/worker"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
	"github.com/floodgate-dev/floodgate/templates"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-redis keeps a pool reaper per client until Close; the clients
		// are closed in cleanup, but the reaper may still be parking.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

const domain = "example.test"

var fromAddr = mail.Address{Name: "Example App", Address: "no-reply@" + domain}

// env is one real stack: a private redis-server, an smtpsink verifying
// DKIM, a DKIM signer with RSA-2048 and Ed25519 keys, and a worker.
type env struct {
	redis  *testutil.Redis
	rdb    *redis.Client
	sink   *smtpsink.Server
	client *queue.Client
	worker *worker.Worker

	mu       sync.Mutex
	outcomes map[string][]queue.Outcome // by email id
	changed  chan struct{}

	guard  *guard.Guard
	policy string // YAML; the guard is on when set (use "{}" for defaults)
	gcfg   guard.Config
	wcfg   worker.Config
	sends  atomic.Int64 // SMTP transactions attempted
	// poolConns is the SMTP pool's connection limit; 0 means 2.
	poolConns int
}

// startWorker starts another worker with the env's configuration.
func (e *env) startWorker(t *testing.T) *worker.Worker {
	t.Helper()
	w, err := worker.New(e.wcfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Shutdown(context.Background()) })
	return w
}

// countingSender counts send attempts.
type countingSender struct {
	worker.Sender
	n *atomic.Int64
}

func (c countingSender) Send(ctx context.Context, from string, to []string, msg []byte) error {
	c.n.Add(1)
	return c.Sender.Send(ctx, from, to, msg)
}

// waitNext blocks until email id has more than n recorded outcomes.
func (e *env) waitNext(t *testing.T, id string, n int) []queue.Outcome {
	t.Helper()
	return e.waitFor(t, id, func(seq []queue.Outcome) bool { return len(seq) > n })
}

type envOpt func(*worker.Config, *smtpsink.Config)

// withGuard puts the guard, with the policy in YAML, at both seams.
func withGuard(policy string, cfg guard.Config) func(*env) {
	return func(e *env) { e.policy, e.gcfg = policy, cfg }
}

func newEnv(t *testing.T, opts ...envOpt) *env {
	return newGuardedEnv(t, nil, opts...)
}

func newGuardedEnv(t *testing.T, g func(*env), opts ...envOpt) *env {
	t.Helper()
	e := &env{outcomes: map[string][]queue.Outcome{}, changed: make(chan struct{}, 1)}
	if g != nil {
		g(e)
	}
	e.redis = testutil.StartRedis(t)
	e.rdb = redis.NewClient(&redis.Options{Addr: e.redis.Addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { e.rdb.Close() })

	var keys []delivery.Key
	sinkKeys, err := smtpsink.ParseKeys(strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct{ sel, alg string }{{"s1", "rsa"}, {"s2", "ed25519"}} {
		key, err := delivery.GenerateKey(k.sel, k.alg)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
		sinkKeys.Add(k.sel+"._domainkey."+domain, key.DNSRecord())
	}
	signer, err := delivery.NewSigner(domain, keys)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := templates.New("")
	if err != nil {
		t.Fatal(err)
	}
	wcfg := worker.Config{
		Redis:        e.rdb,
		Templates:    tmpl,
		Signer:       signer,
		From:         fromAddr,
		Concurrency:  4,
		RetryBase:    10 * time.Millisecond,
		PollInterval: 20 * time.Millisecond,
		Observe:      e.observe,
	}
	scfg := smtpsink.Config{SMTPAddr: "127.0.0.1:0", HTTPAddr: "-", Keys: sinkKeys, SlowDelay: 2 * time.Second}
	if e.policy != "" {
		pol, err := guard.ParsePolicy([]byte(e.policy))
		if err != nil {
			t.Fatal(err)
		}
		e.gcfg.Redis, e.gcfg.Policy = e.rdb, pol
		if e.guard, err = guard.New(e.gcfg); err != nil {
			t.Fatal(err)
		}
		wcfg.Dispatcher, wcfg.Suppressor, wcfg.Kinds = e.guard, e.guard, pol.Kinds()
	}
	for _, o := range opts {
		o(&wcfg, &scfg)
	}
	e.sink, err = smtpsink.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.sink.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.sink.Shutdown(context.Background()) })
	if wcfg.Sender == nil {
		pool, err := delivery.NewPool(delivery.PoolConfig{Addr: e.sink.SMTPAddr(), TLS: "none", MaxConns: max(e.poolConns, 2)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pool.Close() })
		wcfg.Sender = pool
	}
	wcfg.Sender = countingSender{wcfg.Sender, &e.sends}
	e.wcfg = wcfg
	e.worker = e.startWorker(t)
	qcfg := queue.Config{Redis: e.rdb, Kinds: wcfg.Kinds, Unguarded: true, Keyring: wcfg.Keyring}
	if e.guard != nil {
		qcfg.Admitter, qcfg.Unguarded = e.guard, false
	}
	e.client, err = queue.NewClient(qcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.client.Close() })
	return e
}

func (e *env) observe(p *queue.Payload, o queue.Outcome, _ string) {
	id := "?"
	if p != nil {
		id = p.ID
	}
	e.mu.Lock()
	e.outcomes[id] = append(e.outcomes[id], o)
	e.mu.Unlock()
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

// waitOutcome blocks until email id has a terminal outcome and returns the
// whole sequence of outcomes it went through.
func (e *env) waitOutcome(t *testing.T, id string) []queue.Outcome {
	t.Helper()
	return e.waitFor(t, id, func(seq []queue.Outcome) bool { return len(seq) > 0 && seq[len(seq)-1].Terminal() })
}

// waitFor blocks until the outcomes recorded for email id satisfy done,
// woken by each new outcome, and returns them.
func (e *env) waitFor(t *testing.T, id string, done func([]queue.Outcome) bool) []queue.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		e.mu.Lock()
		seq := append([]queue.Outcome(nil), e.outcomes[id]...)
		e.mu.Unlock()
		if done(seq) {
			return seq
		}
		select {
		case <-e.changed:
		case <-ctx.Done():
			t.Fatalf("email %s: outcomes %v, still waiting", id, seq)
		}
	}
}

func (e *env) enqueue(t *testing.T, em queue.Email) queue.Receipt {
	t.Helper()
	r, err := e.client.Enqueue(context.Background(), em)
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome != queue.Queued {
		t.Fatalf("receipt %+v, want queued", r)
	}
	return r
}

func resetEmail(to string) queue.Email {
	return queue.Email{Kind: queue.KindPasswordReset, To: to, Name: "Alice",
		Data: map[string]string{"reset_url": "https://app.example/r/abc"}}
}

// parts returns the decoded text and html parts of a raw message.
func parts(t *testing.T, raw []byte) (text, html string, hdr mail.Header) {
	t.Helper()
	m, err := mail.ReadMessage(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		b := new(strings.Builder)
		if _, err := copyAll(b, p); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(p.Header.Get("Content-Type"), "text/html") {
			html = b.String()
		} else {
			text = b.String()
		}
	}
	return text, html, m.Header
}

func TestDeliversEachKindSigned(t *testing.T) {
	e := newEnv(t)
	emails := []queue.Email{
		resetEmail("alice@example.com"),
		{Kind: queue.KindVerifyEmail, To: "bob@example.com", Data: map[string]string{"verify_url": "https://app.example/v/1"}},
		{Kind: queue.KindNotification, To: "carol@example.com", Name: "Carol", Data: map[string]string{
			"subject": "Your export is ready", "body": "Download it within a day.",
			"action_url": "https://app.example/export", "unsubscribe_url": "https://app.example/u/9"}},
	}
	ids := map[string]string{}
	for _, em := range emails {
		r := e.enqueue(t, em)
		ids[em.To] = r.ID
		if seq := e.waitOutcome(t, r.ID); seq[len(seq)-1] != queue.Sent {
			t.Fatalf("%s: outcomes %v, want sent", em.Kind, seq)
		}
	}
	msgs := e.sink.Messages(smtpsink.Query{})
	if len(msgs) != 3 {
		t.Fatalf("sink has %d messages, want 3", len(msgs))
	}
	for _, m := range msgs {
		to := m.RcptTo[0]
		if m.MessageID != "<"+ids[to]+"@"+domain+">" && m.MessageID != ids[to]+"@"+domain {
			t.Errorf("%s: Message-ID %q, want the email id %s", to, m.MessageID, ids[to])
		}
		if len(m.DKIM) != 2 {
			t.Fatalf("%s: %d DKIM results, want 2 (RSA + Ed25519)", to, len(m.DKIM))
		}
		for _, d := range m.DKIM {
			if d.Result != "pass" {
				t.Errorf("%s: DKIM %s/%s = %s (%s), want pass", to, d.Selector, d.Algorithm, d.Result, d.Error)
			}
		}
		full, _ := e.sink.Message(m.ID)
		text, html, hdr := parts(t, full.Raw)
		if text == "" || html == "" {
			t.Errorf("%s: want text and html parts", to)
		}
		if hdr.Get("Auto-Submitted") != "auto-generated" {
			t.Errorf("%s: Auto-Submitted = %q", to, hdr.Get("Auto-Submitted"))
		}
		switch to {
		case "alice@example.com":
			if !strings.Contains(text, "https://app.example/r/abc") || !strings.Contains(text, "Alice") {
				t.Errorf("reset text lacks the link or the name:\n%s", text)
			}
			if hdr.Get("List-Unsubscribe") != "" {
				t.Error("a reset email carries List-Unsubscribe")
			}
		case "carol@example.com":
			if hdr.Get("List-Unsubscribe") != "<https://app.example/u/9>" || hdr.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" {
				t.Errorf("notification unsubscribe headers: %q %q", hdr.Get("List-Unsubscribe"), hdr.Get("List-Unsubscribe-Post"))
			}
			if m.Subject != "Your export is ready" {
				t.Errorf("subject %q", m.Subject)
			}
		}
	}
}

func TestHostileBodiesArriveIntact(t *testing.T) {
	e := newEnv(t)
	bodies := []string{
		"line one\n.\r\nline after a lone dot",
		"a\r\n.\nb",
		"a\n.\nb",
		"bare\rcarriage return",
		strings.Repeat("x", 3000) + " end of a long line",
		".leading dot\n..two dots\n.",
	}
	for i, body := range bodies {
		to := "user" + string(rune('a'+i)) + "@example.com"
		r := e.enqueue(t, queue.Email{Kind: queue.KindNotification, To: to,
			Data: map[string]string{"subject": "Body test", "body": body}})
		if seq := e.waitOutcome(t, r.ID); seq[len(seq)-1] != queue.Sent {
			t.Fatalf("body %d: outcomes %v", i, seq)
		}
		msgs := e.sink.Messages(smtpsink.Query{To: to})
		if len(msgs) != 1 {
			t.Fatalf("body %d: %d messages at the sink, want exactly 1", i, len(msgs))
		}
		full, _ := e.sink.Message(msgs[0].ID)
		for _, line := range strings.Split(string(full.Raw), "\r\n") {
			if len(line) > 998 {
				t.Errorf("body %d: a line of %d octets reached the wire", i, len(line))
			}
		}
		text, _, _ := parts(t, full.Raw)
		want := normalizeNewlines(body)
		if !strings.Contains(normalizeNewlines(text), want) {
			t.Errorf("body %d: text part does not contain the body intact\nwant %q\ngot  %q", i, want, text)
		}
		for _, d := range msgs[0].DKIM {
			if d.Result != "pass" {
				t.Errorf("body %d: DKIM %s = %s", i, d.Selector, d.Result)
			}
		}
	}
}

func normalizeNewlines(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}

func TestPermanentFailureNotRetried(t *testing.T) {
	e := newEnv(t)
	r := e.enqueue(t, resetEmail("permfail+x@example.com"))
	seq := e.waitOutcome(t, r.ID)
	if len(seq) != 1 || seq[0] != queue.Failed {
		t.Fatalf("outcomes %v, want exactly [failed]", seq)
	}
	if st := e.sink.Stats(); st.Rejected != 1 {
		t.Errorf("sink rejected %d, want 1 (no retry)", st.Rejected)
	}
	// Archived for inspection, with no retry.
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	if info := waitTaskState(t, insp, queue.ClassSecurity.QueueName(), r.ID, asynq.TaskStateArchived); info.Retried != 0 {
		t.Errorf("retried %d times", info.Retried)
	}
}

// resetRetries sets the retry bound of password_reset.
func resetRetries(n int) envOpt {
	return func(w *worker.Config, _ *smtpsink.Config) {
		w.Kinds = queue.DefaultKinds()
		spec := w.Kinds[queue.KindPasswordReset]
		spec.MaxRetry = n
		w.Kinds[queue.KindPasswordReset] = spec
	}
}

func TestTemporaryFailureRetriedThenFailed(t *testing.T) {
	e := newEnv(t, resetRetries(3))
	r := e.enqueue(t, resetEmail("tempfail+x@example.com"))
	seq := e.waitOutcome(t, r.ID)
	want := []queue.Outcome{"", "", "", queue.Failed}
	if len(seq) != len(want) || seq[len(seq)-1] != queue.Failed {
		t.Fatalf("outcomes %v, want %v (3 retries, then failed)", seq, want)
	}
	if st := e.sink.Stats(); st.Rejected != 4 {
		t.Errorf("sink rejected %d, want 4 attempts", st.Rejected)
	}
}

// A relay that drops the connection after the final dot may have the
// message: such an email is retried at most AmbiguousRetries times (default
// once), always with the same Message-ID, then fails with reason
// "ambiguous" although its kind allows 8 retries. The guard counts the
// ambiguous results across attempts; an unguarded worker takes every
// earlier retry for one.
func TestAmbiguousDropBounded(t *testing.T) {
	cases := []struct {
		name    string
		guarded bool
		retries int // worker.Config.AmbiguousRetries
		copies  int
	}{
		{"guarded default", true, 0, 2},
		{"guarded none", true, -1, 1},
		{"guarded 3", true, 3, 4},
		{"unguarded default", false, 0, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var g func(*env)
			if c.guarded {
				g = withGuard("{}", guard.Config{})
			}
			e := newGuardedEnv(t, g, func(w *worker.Config, _ *smtpsink.Config) { w.AmbiguousRetries = c.retries })
			r := e.enqueue(t, resetEmail("drop+x@example.com"))
			seq := e.waitOutcome(t, r.ID)
			if len(seq) != c.copies || seq[len(seq)-1] != queue.Failed {
				t.Fatalf("outcomes %v, want %d attempts, the last failed", seq, c.copies)
			}
			msgs := e.sink.Messages(smtpsink.Query{To: "drop+x@example.com"})
			if len(msgs) != c.copies {
				t.Fatalf("sink stored %d dropped copies, want %d", len(msgs), c.copies)
			}
			for _, m := range msgs {
				if m.MessageID != msgs[0].MessageID || !strings.Contains(m.MessageID, r.ID) {
					t.Errorf("Message-ID %q changed across retries (first %q)", m.MessageID, msgs[0].MessageID)
				}
			}
			insp := asynq.NewInspectorFromRedisClient(e.rdb)
			if info := waitTaskState(t, insp, queue.ClassSecurity.QueueName(), r.ID, asynq.TaskStateArchived); !strings.Contains(info.LastErr, "ambiguous") {
				t.Errorf("archived with %q, want the ambiguous result", info.LastErr)
			}
			if !c.guarded {
				return
			}
			ks, err := e.guard.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			st := ks.Kinds[queue.KindPasswordReset]
			if st.Ambiguous != int64(c.copies) || st.Reasons[queue.Failed]["ambiguous"] != 1 || st.InFlight != 0 {
				t.Errorf("stats: ambiguous %d, failed %v, in flight %d; want %d, ambiguous 1, 0", st.Ambiguous, st.Reasons[queue.Failed], st.InFlight, c.copies)
			}
		})
	}
}

func TestExpiredNotSent(t *testing.T) {
	e := newEnv(t)
	old, err := queue.NewClient(queue.Config{Redis: e.rdb, Unguarded: true, Now: func() time.Time { return time.Now().Add(-time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	r, err := old.Enqueue(context.Background(), resetEmail("late@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if seq := e.waitOutcome(t, r.ID); len(seq) != 1 || seq[0] != queue.Expired {
		t.Fatalf("outcomes %v, want [expired]", seq)
	}
	if st := e.sink.Stats(); st.Received != 0 {
		t.Errorf("sink received %d, want 0", st.Received)
	}
}

func TestMalformedPayloadArchivedOthersFlow(t *testing.T) {
	e := newEnv(t)
	ac := asynq.NewClientFromRedisClient(e.rdb)
	defer ac.Close()
	bad, err := ac.Enqueue(asynq.NewTask(queue.TypeEmail, []byte(`{"v":1,"id":"x","to":"a@b.example`)),
		asynq.Queue(queue.ClassSecurity.QueueName()), asynq.MaxRetry(5))
	if err != nil {
		t.Fatal(err)
	}
	good := e.enqueue(t, resetEmail("fine@example.com"))
	if seq := e.waitOutcome(t, good.ID); seq[len(seq)-1] != queue.Sent {
		t.Fatalf("good email outcomes %v", seq)
	}
	if seq := e.waitOutcome(t, "?"); seq[0] != queue.Failed {
		t.Fatalf("malformed outcomes %v", seq)
	}
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	info := waitTaskState(t, insp, queue.ClassSecurity.QueueName(), bad.ID, asynq.TaskStateArchived)
	if !strings.Contains(info.LastErr, "malformed payload") {
		t.Errorf("archived with reason %q, want it to say malformed payload", info.LastErr)
	}
	if info.Retried != 0 {
		t.Errorf("malformed task retried %d times", info.Retried)
	}
}

// waitTaskState polls asynq's inspector: task state changes publish no event.
func waitTaskState(t *testing.T, insp *asynq.Inspector, q, id string, want asynq.TaskState) *asynq.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := insp.GetTaskInfo(q, id)
		if err == nil && info.State == want {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s: %v, want state %v", id, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRedisOutageLosesNothing(t *testing.T) {
	var proxy *testutil.Proxy
	e := newEnv(t, func(w *worker.Config, _ *smtpsink.Config) {
		// The worker reaches Redis through a proxy the test can cut; the
		// producer talks to Redis directly.
		proxy = testutil.StartProxy(t, w.Redis.(*redis.Client).Options().Addr)
		rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr, ContextTimeoutEnabled: true,
			DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond})
		t.Cleanup(func() { rdb.Close() })
		w.Redis = rdb
	})
	proxy.Cut()
	if err := e.worker.Ready(context.Background()); err == nil {
		t.Fatal("worker ready while Redis is cut off")
	}
	var ids []string
	for i := range 5 {
		ids = append(ids, e.enqueue(t, resetEmail("out"+string(rune('a'+i))+"@example.com")).ID)
	}
	proxy.Restore()
	for _, id := range ids {
		if seq := e.waitOutcome(t, id); seq[len(seq)-1] != queue.Sent {
			t.Fatalf("email %s: outcomes %v", id, seq)
		}
	}
	if got := e.sink.Stats().Received; got != 5 {
		t.Errorf("sink received %d, want 5", got)
	}
}

// Hostile input never becomes a header: a subject value with CRLF arrives
// folded into one Subject line, and a payload that bypassed the producer's
// validation is refused by the worker.
func TestNoHeaderInjection(t *testing.T) {
	e := newEnv(t)
	r := e.enqueue(t, queue.Email{Kind: queue.KindNotification, To: "target@example.com",
		Data: map[string]string{"subject": "Hello\r\nBcc: evil@attacker.example\r\n\r\nbody", "body": "b"}})
	if seq := e.waitOutcome(t, r.ID); seq[len(seq)-1] != queue.Sent {
		t.Fatalf("outcomes %v", seq)
	}
	msgs := e.sink.Messages(smtpsink.Query{})
	full, _ := e.sink.Message(msgs[0].ID)
	_, _, hdr := parts(t, full.Raw)
	if hdr.Get("Bcc") != "" || len(msgs[0].RcptTo) != 1 || strings.Contains(hdr.Get("Subject"), "\n") {
		t.Fatalf("injected: Bcc %q, rcpt %v, subject %q", hdr.Get("Bcc"), msgs[0].RcptTo, hdr.Get("Subject"))
	}

	ac := asynq.NewClientFromRedisClient(e.rdb)
	defer ac.Close()
	for _, name := range []string{"=?utf-8?q?a=0D=0ABcc:_evil@attacker.example?=", "A\r\nBcc: evil@attacker.example"} {
		p := &queue.Payload{ID: "hostile" + string(rune('a'+len(name)%26)), Kind: queue.KindPasswordReset, To: "victim@example.com", Name: name,
			Data: map[string]string{"reset_url": "https://app.example/r"}, EnqueuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
		body, _ := p.Encode()
		if _, err := ac.Enqueue(asynq.NewTask(queue.TypeEmail, body), asynq.Queue(queue.ClassSecurity.QueueName()), asynq.TaskID(p.ID)); err != nil {
			t.Fatal(err)
		}
		insp := asynq.NewInspectorFromRedisClient(e.rdb)
		if info := waitTaskState(t, insp, queue.ClassSecurity.QueueName(), p.ID, asynq.TaskStateArchived); !strings.Contains(info.LastErr, "malformed payload") {
			t.Errorf("hostile name archived with %q", info.LastErr)
		}
	}
	if got := len(e.sink.Messages(smtpsink.Query{To: "victim@example.com"})); got != 0 {
		t.Fatalf("%d hostile messages reached the sink", got)
	}
}

// TestReportLink: with Config.ReportURL each reset carries the "I did not
// ask for this" link with its own id; a ReportURL without {id} is refused.
func TestReportLink(t *testing.T) {
	e := newEnv(t, func(c *worker.Config, _ *smtpsink.Config) { c.ReportURL = "https://app.example/not-me?id={id}" })
	r := e.enqueue(t, resetEmail("alice@example.com"))
	if seq := e.waitOutcome(t, r.ID); seq[len(seq)-1] != queue.Sent {
		t.Fatalf("outcomes %v, want sent", seq)
	}
	msgs := e.sink.Messages(smtpsink.Query{})
	full, _ := e.sink.Message(msgs[0].ID)
	text, html, _ := parts(t, full.Raw)
	want := "https://app.example/not-me?id=" + r.ID
	if !strings.Contains(text, want) || !strings.Contains(html, want) {
		t.Errorf("the reset does not carry %s:\n%s", want, text)
	}
	cfg := e.wcfg
	cfg.ReportURL = "https://app.example/not-me"
	_, err := worker.New(cfg)
	if err == nil || !strings.Contains(err.Error(), "{id}") {
		t.Errorf("ReportURL without {id}: %v", err)
	}
}

// TestPruneArchive: a failed email's archived task is kept for its kind's
// retention, then deleted.
func TestPruneArchive(t *testing.T) {
	e := newEnv(t)
	r := e.enqueue(t, resetEmail("permfail+x@example.com"))
	e.waitFor(t, r.ID, func(seq []queue.Outcome) bool { return len(seq) > 0 && seq[len(seq)-1] == queue.Failed })
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	var archived []*asynq.TaskInfo
	// asynq archives the task after the handler returns: poll for it.
	for deadline := time.Now().Add(10 * time.Second); len(archived) == 0; time.Sleep(10 * time.Millisecond) {
		var err error
		if archived, err = insp.ListArchivedTasks(queue.ClassSecurity.QueueName()); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the failed email was never archived")
		}
	}
	at := archived[0].LastFailedAt
	if n, err := e.worker.PruneArchive(context.Background(), at.Add(23*time.Hour)); err != nil || n != 0 {
		t.Errorf("PruneArchive within the day = %d, %v; want 0", n, err)
	}
	if n, err := e.worker.PruneArchive(context.Background(), at.Add(24*time.Hour)); err != nil || n != 1 {
		t.Errorf("PruneArchive after the day = %d, %v; want 1", n, err)
	}
	if left, _ := insp.ListArchivedTasks(queue.ClassSecurity.QueueName()); len(left) != 0 {
		t.Errorf("%d archived left", len(left))
	}
}

// TestKindHeader: every message names its kind in the header field the
// sink reads, so the sink's kind search (Query.Kind, GET
// /api/messages?kind=) finds each email by kind; a kind whose name could
// break a header is refused at New.
func TestKindHeader(t *testing.T) {
	e := newEnv(t)
	emails := map[string]queue.Email{
		queue.KindPasswordReset: resetEmail("alice@example.com"),
		queue.KindVerifyEmail:   {Kind: queue.KindVerifyEmail, To: "bob@example.com", Data: map[string]string{"verify_url": "https://app.example/v/1"}},
		queue.KindNotification:  {Kind: queue.KindNotification, To: "carol@example.com", Data: map[string]string{"subject": "s", "body": "b"}},
	}
	for _, em := range emails {
		r := e.enqueue(t, em)
		if seq := e.waitOutcome(t, r.ID); seq[len(seq)-1] != queue.Sent {
			t.Fatalf("%s: outcomes %v, want sent", em.Kind, seq)
		}
	}
	for kind, em := range emails {
		msgs := e.sink.Messages(smtpsink.Query{Kind: kind})
		if len(msgs) != 1 || msgs[0].RcptTo[0] != em.To || msgs[0].Kind != kind {
			t.Errorf("sink messages of kind %s: %+v, want the one to %s", kind, msgs, em.To)
			continue
		}
		full, _ := e.sink.Message(msgs[0].ID)
		if _, _, hdr := parts(t, full.Raw); hdr.Get(smtpsink.KindHeader) != kind {
			t.Errorf("%s header = %q, want %q", smtpsink.KindHeader, hdr.Get(smtpsink.KindHeader), kind)
		}
		rec := httptest.NewRecorder()
		e.sink.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/messages?kind="+kind, nil))
		var listed []smtpsink.Message
		if err := json.Unmarshal(rec.Body.Bytes(), &listed); err != nil || len(listed) != 1 || listed[0].ID != msgs[0].ID {
			t.Errorf("GET /api/messages?kind=%s = %d %s, want the one message", kind, rec.Code, rec.Body)
		}
	}

	for _, name := range []string{"reset\r\nBcc: evil@attacker.example", "Reset", "re set", ""} {
		cfg := e.wcfg
		cfg.Kinds = queue.Kinds{name: {Class: queue.ClassSecurity, TTL: time.Hour}}
		if _, err := worker.New(cfg); err == nil || !strings.Contains(err.Error(), "name must be") {
			t.Errorf("kind %q: New = %v, want the name refused", name, err)
		}
	}
}
