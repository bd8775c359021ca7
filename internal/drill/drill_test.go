package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/adminapi"
	"github.com/floodgate-dev/floodgate/internal/delivery"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/internal/worker"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
	"github.com/floodgate-dev/floodgate/templates"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-redis's and net/http's connections may still be parking in
		// the poller just after Close.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

func TestComputeBound(t *testing.T) {
	cfg := DefaultConfig()
	b := computeBound(guard.DefaultPolicy(), &cfg, 100*time.Second)
	// 1,000,000 requests over 200,000 recipients is 5 each, but the 2m
	// dedup window admits one per recipient in 100 s; 1,000 sources at
	// 20/1h admit 20,000; the default 600/1m domain rate sends its burst of
	// 600 plus 1,000 in 100 s.
	want := Bound{WindowSeconds: 100, PerRecipient: 1, Recipients: 200_000, Sources: 20_000, Admission: 20_000,
		DomainRate: 1_600, GlobalRate: 400 + 20_000, Delivery: 1_600}
	if b != want {
		t.Errorf("computeBound(default, 100s) = %+v, want %+v", b, want)
	}

	pol, err := guard.ParsePolicy([]byte("domains: { attacked.example: 1000000/1s }\nglobal: { rate: 1000000/1s }\n" +
		"kinds: { password_reset: { dedup_window: 0, per_recipient: [2/1h], per_source: [] } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Attack, cfg.Recipients, cfg.Sources = 10, 4, 2
	b = computeBound(pol, &cfg, time.Minute)
	// Up to 3 requests for a recipient, capped at 2 each: 8; no source cap.
	if b.PerRecipient != 2 || b.Recipients != 8 || b.Sources != 10 || b.Admission != 8 || b.Delivery != 8 {
		t.Errorf("computeBound(loose policy) = %+v, want 2 per recipient, 8 in all", b)
	}
}

func TestLatencyOf(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var out []time.Duration
		for _, v := range n {
			out = append(out, time.Duration(v)*time.Millisecond)
		}
		return out
	}
	val := func(p *float64) string {
		if p == nil {
			return "nil"
		}
		return fmt.Sprintf("%gms", *p)
	}
	for _, tc := range []struct {
		admitted      int64
		lat           []time.Duration
		p50, p99, max string
	}{
		{0, nil, "nil", "nil", "nil"},
		{3, ms(30, 10, 20), "20ms", "30ms", "30ms"},
		// One of four never arrived: it is the slowest, so p99 is unknown.
		{4, ms(10, 20, 30), "20ms", "nil", "nil"},
		{100, ms(make([]int, 100)...), "0ms", "0ms", "0ms"},
	} {
		l := latencyOf(tc.admitted, tc.lat)
		if got := [3]string{val(l.P50Ms), val(l.P99Ms), val(l.MaxMs)}; got != [3]string{tc.p50, tc.p99, tc.max} {
			t.Errorf("latencyOf(%d, %v) = p50 %s p99 %s max %s, want %s %s %s", tc.admitted, tc.lat, got[0], got[1], got[2], tc.p50, tc.p99, tc.max)
		}
	}
}

func TestEmailID(t *testing.T) {
	for in, want := range map[string]string{
		"<0123abcd@drill.example>": "0123abcd",
		" <x@y> ":                  "x",
		"":                         "",
	} {
		if got := emailID(in); got != want {
			t.Errorf("emailID(%q) = %q, want %q", in, got, want)
		}
	}
}

// fakeBreakerAPI serves GET /v1/breakers from a breaker the test sets.
type fakeBreakerAPI struct {
	mu sync.Mutex
	b  *adminapi.Breaker // nil: 404, as a worker without breakers
}

func (f *fakeBreakerAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.b == nil || r.URL.Path != "/v1/breakers" {
		http.NotFound(w, r)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"breakers": []adminapi.Breaker{*f.b}})
}

func (f *fakeBreakerAPI) set(b *adminapi.Breaker) {
	f.mu.Lock()
	f.b = b
	f.mu.Unlock()
}

func TestBreakerWatch(t *testing.T) {
	fake := &fakeBreakerAPI{}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	admin, err := adminapi.New(adminapi.Config{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.CloseIdleConnections()
	ctx := context.Background()

	// No breaker API: reported, and polling stops.
	bw := &breakerWatch{admin: admin, kind: queue.KindPasswordReset}
	if bw.poll(ctx) {
		t.Error("poll went on after a 404")
	}
	var r Report
	r.fillBreaker(bw, time.Now())
	if r.Breaker.Available || !strings.Contains(r.Breaker.Note, "404") {
		t.Errorf("without breakers: %+v", r.Breaker)
	}
	r.fillTargets()
	if r.Targets[0].Status != NA || r.Targets[0].Value != "breaker not available" {
		t.Errorf("breaker target without breakers = %+v", r.Targets[0])
	}

	fake.set(&adminapi.Breaker{Kind: queue.KindPasswordReset, State: adminapi.StateClosed, Mode: "hold"})
	bw = &breakerWatch{admin: admin, kind: queue.KindPasswordReset}
	if !bw.poll(ctx) {
		t.Fatal("poll stopped")
	}
	start := time.Now()
	bw.markAttack(start)
	bw.poll(ctx)
	opened := time.Now()
	fake.set(&adminapi.Breaker{Kind: queue.KindPasswordReset, State: adminapi.StateOpen, Mode: "hold", Reason: "surge",
		Rate: 900, Baseline: 1, Held: 10, OpenedAt: opened, Since: opened})
	bw.poll(ctx)
	fake.set(&adminapi.Breaker{Kind: queue.KindPasswordReset, State: adminapi.StateOpen, Mode: "hold", Reason: "surge",
		Held: 99, OpenedAt: opened, Since: opened})
	bw.poll(ctx)

	r = Report{}
	r.fillBreaker(bw, start)
	b := r.Breaker
	if !b.Available || b.StateAtAttackStart != adminapi.StateClosed || !b.Opened || b.Polls != 4 {
		t.Fatalf("breaker report = %+v", b)
	}
	if b.PolledOpenSeconds == nil || b.OpenedAtSeconds == nil || b.OpenSeconds == nil || *b.OpenSeconds != *b.OpenedAtSeconds ||
		*b.OpenedAtSeconds < 0 || *b.PolledOpenSeconds < *b.OpenedAtSeconds {
		t.Errorf("times to open: polled %v, opened_at %v, used %v", b.PolledOpenSeconds, b.OpenedAtSeconds, b.OpenSeconds)
	}
	if b.AtOpen == nil || b.AtOpen.Held != 10 || b.Final == nil || b.Final.Held != 99 {
		t.Errorf("at open %+v, final %+v", b.AtOpen, b.Final)
	}
	if len(b.Transitions) != 2 || b.Transitions[0].State != adminapi.StateClosed || b.Transitions[1].State != adminapi.StateOpen ||
		b.Transitions[1].Reason != "surge" {
		t.Errorf("transitions = %+v, want closed then open(surge)", b.Transitions)
	}

	// Already open when the attack starts: no time to open.
	bw = &breakerWatch{admin: admin, kind: queue.KindPasswordReset}
	bw.poll(ctx)
	bw.markAttack(time.Now())
	bw.poll(ctx)
	r = Report{}
	r.fillBreaker(bw, time.Now())
	r.fillTargets()
	if r.Breaker.Opened || r.Targets[0].Status != NA || !strings.Contains(r.Targets[0].Value, "already open") {
		t.Errorf("already open: %+v, target %+v", r.Breaker, r.Targets[0])
	}
}

// deployment is a running stack for deployment mode: a private
// redis-server, a worker with its guard, the admin API behind a token,
// and a sink reached over HTTP.
type deployment struct {
	redisURL, apiURL, sinkURL string
}

func startDeployment(t *testing.T, token string) deployment {
	t.Helper()
	rs := testutil.StartRedis(t)
	rdb := rs.Client(t)
	sink, err := smtpsink.New(smtpsink.Config{SMTPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", MaxMessages: 10000})
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Shutdown(context.Background()) })
	pol, err := guard.ParsePolicy([]byte("domains: { default: 6000/1m }\n"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := guard.New(guard.Config{Redis: rdb, Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := delivery.NewPool(delivery.PoolConfig{Addr: sink.SMTPAddr(), TLS: delivery.TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	tmpl, err := templates.New("")
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Redis: rdb, Sender: pool, Templates: tmpl, Dispatcher: g, Suppressor: g,
		Kinds: pol.Kinds(), Concurrency: 4, From: mail.Address{Address: "no-reply@app.example"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Shutdown(context.Background()) })
	api := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(rw, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		g.Handler().ServeHTTP(rw, r)
	}))
	t.Cleanup(api.Close)
	return deployment{redisURL: rs.URL(), apiURL: api.URL, sinkURL: "http://" + sink.HTTPAddr()}
}

// TestDeployment runs a small drill against a stack reached only through
// its Redis URL, admin API and sink API.
func TestDeployment(t *testing.T) {
	d := startDeployment(t, "t0ken")
	pol, err := guard.ParsePolicy([]byte("domains: { default: 6000/1m }\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := QuickConfig()
	cfg.RedisURL, cfg.APIURL, cfg.SinkURL, cfg.Token = d.redisURL, d.apiURL, d.sinkURL, "t0ken"
	cfg.Policy, cfg.PolicyName = pol, "test"
	cfg.Attack, cfg.Recipients, cfg.Sources, cfg.Parallel = 400, 200, 20, 4
	cfg.NotifyRate, cfg.LegitResetRate = 20, 2
	cfg.Quiet, cfg.Drain = time.Second, 1500*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "deployment" || !strings.Contains(rep.Stack, d.apiURL) || rep.Setup.Workers != 0 {
		t.Errorf("mode %q, stack %q, workers %d", rep.Mode, rep.Stack, rep.Setup.Workers)
	}
	if rep.Attack.Requested != 400 || !rep.Conservation.OK {
		t.Errorf("attack requested %d; conservation problems %q", rep.Attack.Requested, rep.Conservation.Problems)
	}
	kc := rep.Conservation.Kinds[queue.KindPasswordReset]
	if kc.Requested != kc.DrillRequested || kc.Accounted != kc.Requested {
		t.Errorf("password_reset accounting %+v", kc)
	}
	dl := rep.Delivered
	if dl.SinkMessages < dl.SinkReceived || dl.SinkReceived == 0 || dl.LegitNotifications == 0 || dl.Foreign != 0 || dl.Unsigned != dl.SinkMessages {
		t.Errorf("delivered %+v", dl)
	}

	cfg.Token = "wrong"
	if _, err := Run(ctx, cfg); err == nil || !strings.Contains(err.Error(), "unauthorized") {
		t.Errorf("Run with a wrong token: %v, want unauthorized", err)
	}
	cfg.Token, cfg.SinkURL = "t0ken", "http://"+strings.TrimPrefix(d.apiURL, "http://")+"/nosink"
	if _, err := Run(ctx, cfg); err == nil || !strings.Contains(err.Error(), "-sink") {
		t.Errorf("Run with a wrong sink: %v, want a -sink error", err)
	}
}

func TestEmbeddedNeedsRedisServer(t *testing.T) {
	cfg := QuickConfig()
	cfg.RedisServer = "/nonexistent/redis-server"
	_, err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "redis-server") {
		t.Errorf("Run without redis-server: %v", err)
	}
	cfg = QuickConfig()
	cfg.Attack = 0
	if _, err := Run(context.Background(), cfg); err == nil || errors.Is(err, ErrNoRedisServer) {
		t.Errorf("Run with -attack 0: %v, want a config error", err)
	}
}

// fakeSink is a sink store with a small capacity: newest first, the oldest
// evicted, as smtpsink's.
type fakeSink struct {
	capacity int
	msgs     []smtpsink.Message // oldest first
	received int64
}

func (f *fakeSink) deliver(to string, n int) {
	for range n {
		f.received++
		f.msgs = append(f.msgs, smtpsink.Message{ID: fmt.Sprint("m", f.received), RcptTo: []string{to},
			MessageID: fmt.Sprintf("<id%d@drill.example>", f.received), ReceivedAt: time.Now()})
		if len(f.msgs) > f.capacity {
			f.msgs = f.msgs[1:]
		}
	}
}

func (f *fakeSink) Messages(_ context.Context, q smtpsink.Query) ([]smtpsink.Message, error) {
	var out []smtpsink.Message
	for i := len(f.msgs) - 1; i >= 0 && (q.Limit <= 0 || len(out) < q.Limit); i-- {
		out = append(out, f.msgs[i])
	}
	return out, nil
}

func (f *fakeSink) Stats(context.Context) (smtpsink.Stats, error) {
	return smtpsink.Stats{Received: f.received, Stored: len(f.msgs)}, nil
}

// TestSinkWatch checks that reading new messages between deliveries counts
// every one, whether fewer or more arrived than one read fetches, and even
// when the sink keeps fewer than were delivered.
func TestSinkWatch(t *testing.T) {
	ctx := context.Background()
	f := &fakeSink{capacity: 1000}
	f.deliver("someone@elsewhere.example", 5) // before the drill: not counted
	w := newSinkWatch(f, "Attacked.Example")
	if err := w.start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 3, 255, 256, 257, 900, 1, 0, 999} {
		f.deliver("victim1@attacked.example", n)
		f.deliver("user@example.com", 1)
		if err := w.poll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c, err := w.counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const attack = 3 + 255 + 256 + 257 + 900 + 1 + 999
	if c.attack != attack || c.total != attack+9 || c.received != c.total || len(c.other) != 9 || c.victims != 1 || c.maxPerVictim != attack {
		t.Errorf("counts = attack %d, total %d, received %d, other %d, victims %d, max %d; want %d, %d, %d, 9, 1, %d",
			c.attack, c.total, c.received, len(c.other), c.victims, c.maxPerVictim, attack, attack+9, attack+9, attack)
	}

	// More delivered between two reads than the sink keeps: the shortfall
	// shows as received > read.
	f.deliver("user@example.com", 1500)
	c, _ = w.counts(ctx)
	if c.received-c.total != 500 {
		t.Errorf("after an overflow: received %d, read %d; want 500 unread", c.received, c.total)
	}
}
