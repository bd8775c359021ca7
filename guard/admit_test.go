package guard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
)

// newTestGuard starts a private Redis and returns a guard on it with the
// policy doc (YAML over the defaults) and the client it uses.
func newTestGuard(t testing.TB, doc string, cfg Config) (*Guard, *redis.Client, *testutil.Redis) {
	t.Helper()
	srv := testutil.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr, DialerRetries: 1})
	t.Cleanup(func() { rc.Close() })
	return guardOn(t, rc, doc, cfg), rc, srv
}

func guardOn(t testing.TB, rc redis.UniversalClient, doc string, cfg Config) *Guard {
	t.Helper()
	pol, err := ParsePolicy([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Redis, cfg.Policy = rc, pol
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func adm(kind, to, source string) *queue.Admission {
	return &queue.Admission{ID: newID(), Kind: kind, To: to, Source: source, Payload: []byte(`{"v":1}`)}
}

func admit(t testing.TB, g *Guard, a *queue.Admission) queue.Verdict {
	t.Helper()
	v, err := g.Admit(context.Background(), a)
	if err != nil {
		t.Fatalf("Admit(%s to %s): %v", a.Kind, a.To, err)
	}
	return v
}

func wantVerdict(t testing.TB, what string, v queue.Verdict, outcome queue.Outcome, reason string) {
	t.Helper()
	if v.Outcome != outcome || v.Reason != reason || v.Allow != (outcome == queue.Queued) {
		t.Errorf("%s = %+v, want outcome %q reason %q", what, v, outcome, reason)
	}
}

func stats(t testing.TB, g *Guard, kind string) *KindStats {
	t.Helper()
	st, err := g.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Kinds[kind]
}

const capPolicy = `
kinds:
  password_reset:
    dedup_window: 0
    per_recipient: [5/1h]
    per_source: []
`

func TestAdmitRaceAtCap(t *testing.T) {
	g, _, _ := newTestGuard(t, capPolicy, Config{})
	const racers = 100
	var wg sync.WaitGroup
	verdicts := make([]queue.Verdict, racers)
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			verdicts[i], errs[i] = g.Admit(context.Background(), adm(queue.KindPasswordReset, "victim@example.com", fmt.Sprint("src", i)))
		})
	}
	wg.Wait()
	counts := map[queue.Outcome]int{}
	for i, v := range verdicts {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		counts[v.Outcome]++
		if !v.Allow && v.Reason != "recipient" {
			t.Errorf("refusal %+v, want capped recipient", v)
		}
	}
	if counts[queue.Queued] != 5 || counts[queue.Capped] != racers-5 {
		t.Errorf("outcomes %v, want exactly 5 queued and %d capped", counts, racers-5)
	}
	ks := stats(t, g, queue.KindPasswordReset)
	if ks.Requested != racers || ks.Admitted != 5 || ks.Reasons[queue.Capped]["recipient"] != racers-5 {
		t.Errorf("stats %+v", ks)
	}
}

func TestAdmitVariantsShareCap(t *testing.T) {
	g, _, _ := newTestGuard(t, capPolicy, Config{})
	variants := []string{
		"john.smith@gmail.com",
		"John.Smith+reset@gmail.com",
		"johnsmith@googlemail.com",
		"J.O.H.N.S.M.I.T.H@GMAIL.COM",
		"johnsmith+1@gmail.com",
		"jOhNsMiTh+2@GoogleMail.com",
		"johnsmith@gmail.com.",
	}
	var queued int
	for _, to := range variants {
		if admit(t, g, adm(queue.KindPasswordReset, to, "")).Allow {
			queued++
		}
	}
	if queued != 5 {
		t.Errorf("%d of the variants queued, want the cap, 5", queued)
	}
	// IDNA: the Unicode and the ASCII form of a domain are one recipient.
	idn := []string{"user@bücher.example", "User@xn--bcher-kva.example", "user+x@BÜCHER.example", "user@xn--bcher-kva.example", "USER@bücher.example"}
	queued = 0
	for _, to := range idn {
		if admit(t, g, adm(queue.KindPasswordReset, to, "")).Allow {
			queued++
		}
	}
	if v := admit(t, g, adm(queue.KindPasswordReset, "user@bücher.example", "")); queued != 5 || v.Allow {
		t.Errorf("IDNA variants: %d queued then %+v, want 5 then capped", queued, v)
	}
	// Another kind and another recipient have their own caps.
	wantVerdict(t, "other kind", admit(t, g, adm(queue.KindVerifyEmail, "john.smith@gmail.com", "x")), queue.Queued, "")
	wantVerdict(t, "other recipient", admit(t, g, adm(queue.KindPasswordReset, "jane@gmail.com", "")), queue.Queued, "")
}

func TestAdmitDedupWindow(t *testing.T) {
	g, rc, _ := newTestGuard(t, `
kinds:
  password_reset: { dedup_window: 1s, per_recipient: [], per_source: [] }
`, Config{})
	wantVerdict(t, "first", admit(t, g, adm(queue.KindPasswordReset, "a@example.com", "")), queue.Queued, "")
	wantVerdict(t, "second", admit(t, g, adm(queue.KindPasswordReset, "A+x@Example.com", "")), queue.Duplicate, "")
	wantVerdict(t, "other kind", admit(t, g, adm(queue.KindVerifyEmail, "a@example.com", "")), queue.Queued, "")
	// The recipient log lives exactly one dedup window; once Redis has
	// expired it the window is over.
	waitGone(t, rc, rkeys.Recipient(queue.KindPasswordReset, "a@example.com"))
	wantVerdict(t, "after the window", admit(t, g, adm(queue.KindPasswordReset, "a@example.com", "")), queue.Queued, "")
	ks := stats(t, g, queue.KindPasswordReset)
	if ks.Requested != 3 || ks.Admitted != 2 || ks.Outcomes[queue.Duplicate] != 1 {
		t.Errorf("stats %+v", ks)
	}
}

// waitGone waits until Redis has expired key. Expiry is the event; Redis
// offers no way to wait on it other than keyspace notifications, and polling
// EXISTS is what a notification would tell.
func waitGone(t testing.TB, rc redis.UniversalClient, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		n, err := rc.Exists(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAdmitPerSourceCap(t *testing.T) {
	g, _, _ := newTestGuard(t, `
kinds:
  password_reset: { dedup_window: 0, per_recipient: [3/1h], per_source: [10/1h, 12/24h], breaker: off }
`, Config{})
	var queued, capped []string
	for i := range 30 {
		to := fmt.Sprintf("user%d@example.com", i)
		v := admit(t, g, adm(queue.KindPasswordReset, to, "203.0.113.9"))
		switch {
		case v.Allow:
			queued = append(queued, to)
		case v.Outcome == queue.Capped && v.Reason == "source":
			capped = append(capped, to)
		default:
			t.Fatalf("verdict %+v", v)
		}
	}
	if len(queued) != 10 || len(capped) != 20 {
		t.Fatalf("%d queued, %d capped by source; want 10 and 20", len(queued), len(capped))
	}
	// Another source is not affected, and the refusals consumed none of the
	// recipients' quota: each capped recipient still has all 3.
	for _, to := range capped[:5] {
		for i := range 3 {
			wantVerdict(t, fmt.Sprintf("%s from another source #%d", to, i), admit(t, g, adm(queue.KindPasswordReset, to, fmt.Sprint("src-", to, i))), queue.Queued, "")
		}
		wantVerdict(t, to+" 4th", admit(t, g, adm(queue.KindPasswordReset, to, "fresh")), queue.Capped, "recipient")
	}
	// Emails without a source share one source.
	for i := range 10 {
		admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("anon%d@example.com", i), ""))
	}
	wantVerdict(t, "11th without source", admit(t, g, adm(queue.KindPasswordReset, "anon-last@example.com", "")), queue.Capped, "source")
}

func TestAdmitSuppression(t *testing.T) {
	g, _, _ := newTestGuard(t, "", Config{})
	ctx := context.Background()
	if err := g.Suppress(ctx, "Bounced+old@Example.com", "hard_bounce"); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{"bounced@example.com", "BOUNCED+new@example.com"} {
		wantVerdict(t, to, admit(t, g, adm(queue.KindPasswordReset, to, "s")), queue.Suppressed, "")
		wantVerdict(t, to+" notification", admit(t, g, adm(queue.KindNotification, to, "s")), queue.Suppressed, "")
	}
	ok, err := g.Suppressed(ctx, "bounced@EXAMPLE.com")
	if err != nil || !ok {
		t.Errorf("Suppressed = %v, %v, want true", ok, err)
	}
	s, ok, err := g.LookupSuppression(ctx, "bounced@example.com")
	if err != nil || !ok || s.Reason != "hard_bounce" || s.Since.IsZero() || s.Hash != g.HashRecipient("Bounced@example.com") {
		t.Errorf("LookupSuppression = %+v, %v, %v", s, ok, err)
	}
	if err := g.Unsuppress(ctx, "bounced@example.com"); err != nil {
		t.Fatal(err)
	}
	wantVerdict(t, "after unsuppress", admit(t, g, adm(queue.KindPasswordReset, "bounced@example.com", "s")), queue.Queued, "")
	if ok, _ := g.Suppressed(ctx, "bounced@example.com"); ok {
		t.Error("still suppressed")
	}
	if err := g.Suppress(ctx, "not an address", ""); !errors.Is(err, ErrInvalidAddress) {
		t.Errorf("Suppress(invalid) = %v, want ErrInvalidAddress", err)
	}
	if err := g.Suppress(ctx, "x@example.com", "Bad Reason!"); err == nil {
		t.Error("Suppress with a bad reason: no error")
	}
}

func TestAdmitReplay(t *testing.T) {
	g, _, _ := newTestGuard(t, `
kinds:
  password_reset: { per_recipient: [1/1h] }
`, Config{})
	a := adm(queue.KindPasswordReset, "replay@example.com", "s")
	first := admit(t, g, a)
	again := admit(t, g, a) // the same email: a re-sent script
	other := admit(t, g, adm(queue.KindPasswordReset, "replay@example.com", "s"))
	wantVerdict(t, "first", first, queue.Queued, "")
	wantVerdict(t, "re-run", again, queue.Queued, "replay")
	wantVerdict(t, "another email", other, queue.Duplicate, "")
	ks := stats(t, g, queue.KindPasswordReset)
	if ks.Requested != 2 || ks.Admitted != 1 {
		t.Errorf("stats %+v: a re-run must count nothing", ks)
	}
}

// TestRecipientLogEncoding checks what the memory figure rests on: a
// recipient seen once is stored as a bare integer.
func TestRecipientLogEncoding(t *testing.T) {
	g, rc, _ := newTestGuard(t, "", Config{})
	ctx := context.Background()
	admit(t, g, adm(queue.KindPasswordReset, "once@example.com", "s"))
	key := rkeys.Recipient(queue.KindPasswordReset, "once@example.com")
	if enc, err := rc.ObjectEncoding(ctx, key).Result(); err != nil || enc != "int" {
		t.Errorf("one-entry recipient log encoding = %q, %v; want int", enc, err)
	}
	if ttl := rc.PTTL(ctx, key).Val(); ttl <= 24*time.Hour || ttl > 24*time.Hour+time.Second {
		t.Errorf("recipient log TTL = %v, want the longest window (24h) plus 1s", ttl)
	}
}

func TestAdmitBreakerModes(t *testing.T) {
	g, rc, _ := newTestGuard(t, `
kinds:
  password_reset: { dedup_window: 0, per_recipient: [], per_source: [], breaker: { learn: { warmup: 0 }, open: hold, hold_max: 2 } }
  verify_email: { breaker: { learn: { warmup: 0 }, open: shed } }
  notification: { breaker: { learn: { warmup: 0 }, open: clamp, probe: 1/1h } }
`, Config{})
	ctx := context.Background()
	for _, k := range []string{queue.KindPasswordReset, queue.KindVerifyEmail, queue.KindNotification} {
		if _, err := g.Trip(ctx, k, ""); err != nil {
			t.Fatal(err)
		}
	}
	h1 := adm(queue.KindPasswordReset, "h1@example.com", "")
	wantVerdict(t, "hold 1", admit(t, g, h1), queue.Held, "breaker")
	wantVerdict(t, "hold 1 re-run", admit(t, g, h1), queue.Held, "breaker")
	wantVerdict(t, "hold 2", admit(t, g, adm(queue.KindPasswordReset, "h2@example.com", "")), queue.Held, "breaker")
	wantVerdict(t, "hold full", admit(t, g, adm(queue.KindPasswordReset, "h3@example.com", "")), queue.Shed, "hold_full")
	if n, _ := rc.HLen(ctx, rkeys.Held(queue.KindPasswordReset)).Result(); n != 2 {
		t.Errorf("held %d emails, want 2", n)
	}
	if p, _ := rc.HGet(ctx, rkeys.Held(queue.KindPasswordReset), h1.ID).Result(); p[0] != 'a' || string(heldPayload(p)) != string(h1.Payload) {
		t.Errorf("held entry %q, want \"a\", the expiry and %q", p, h1.Payload)
	}
	wantVerdict(t, "shed", admit(t, g, adm(queue.KindVerifyEmail, "s@example.com", "")), queue.Shed, "breaker")
	// Clamp lets the baseline rate through (none learned: the probe rate).
	wantVerdict(t, "clamp 1", admit(t, g, adm(queue.KindNotification, "c1@example.com", "")), queue.Queued, "clamp")
	wantVerdict(t, "clamp 2", admit(t, g, adm(queue.KindNotification, "c2@example.com", "")), queue.Shed, "clamp")
	// Caps decide before the breaker: a capped email is not parked.
	if err := g.Suppress(ctx, "sup@example.com", ""); err != nil {
		t.Fatal(err)
	}
	wantVerdict(t, "suppressed under hold", admit(t, g, adm(queue.KindPasswordReset, "sup@example.com", "")), queue.Suppressed, "")
	// Held emails consumed no quota: closing the breaker admits them.
	if _, err := g.Reset(ctx, queue.KindPasswordReset); err != nil {
		t.Fatal(err)
	}
	wantVerdict(t, "closed", admit(t, g, adm(queue.KindPasswordReset, "h3@example.com", "")), queue.Queued, "")
	ks := stats(t, g, queue.KindPasswordReset)
	if ks.Outcomes[queue.Held] != 2 || ks.Reasons[queue.Shed]["hold_full"] != 1 || ks.Requested != 5 {
		t.Errorf("stats %+v", ks)
	}
}

func TestUnknownKind(t *testing.T) {
	g, _, _ := newTestGuard(t, "", Config{})
	_, err := g.Admit(context.Background(), adm("invoice", "a@example.com", ""))
	if !errors.Is(err, ErrUnknownKind) {
		t.Errorf("Admit(unknown kind) = %v, want ErrUnknownKind", err)
	}
}

func TestRedisDownFailsClosed(t *testing.T) {
	srv := testutil.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { rc.Close() })
	g := guardOn(t, rc, "", Config{})
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := g.Admit(ctx, adm(queue.KindPasswordReset, "a@example.com", ""))
	var oe *OpError
	if !errors.Is(err, ErrUnavailable) || !errors.As(err, &oe) || oe.Op != "admit" || v.Allow {
		t.Errorf("Admit with Redis down = %+v, %v; want ErrUnavailable and no allow", v, err)
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		t.Errorf("Admit error exposes a go-redis error type: %T", rerr)
	}
	p := payload("a@example.com", time.Hour)
	if v, err := g.Dispatch(ctx, p, "a1"); !errors.Is(err, ErrUnavailable) || v.Allow {
		t.Errorf("Dispatch with Redis down = %+v, %v", v, err)
	}
	if err := g.Settle(ctx, p, "a1", queue.Sent, ""); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Settle with Redis down = %v", err)
	}
	if err := g.Suppress(ctx, "a@example.com", ""); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Suppress with Redis down = %v", err)
	}
	if _, err := g.Stats(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Stats with Redis down = %v", err)
	}
	// A cancelled context is reported as such.
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if _, err := g.Admit(cctx, adm(queue.KindPasswordReset, "a@example.com", "")); !errors.Is(err, context.Canceled) || !errors.Is(err, ErrUnavailable) {
		t.Errorf("Admit(cancelled) = %v, want context.Canceled and ErrUnavailable", err)
	}
}

// TestQueueClientWithGuard drives admission through the producer API.
func TestQueueClientWithGuard(t *testing.T) {
	g, rc, _ := newTestGuard(t, capPolicy, Config{})
	c, err := queue.NewClient(queue.Config{Redis: rc, Kinds: g.Policy().Kinds(), Admitter: g})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []queue.Outcome
	for i := range 7 {
		r, err := c.Enqueue(context.Background(), queue.Email{Kind: queue.KindPasswordReset, To: fmt.Sprintf("Carol+%d@Example.com", i), Source: "198.51.100.7",
			Data: map[string]string{"reset_url": "https://app.example/reset?t=x"}})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.Outcome)
	}
	want := []queue.Outcome{queue.Queued, queue.Queued, queue.Queued, queue.Queued, queue.Queued, queue.Capped, queue.Capped}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("receipts %v, want %v", got, want)
	}
}
