package guard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/queue"
)

func trace(t testing.TB, g *Guard, addr string) *Trace {
	t.Helper()
	tr, err := g.Trace(context.Background(), addr)
	if err != nil {
		t.Fatalf("Trace(%s): %v", addr, err)
	}
	return tr
}

func kindTrace(t testing.TB, tr *Trace, kind string) KindTrace {
	t.Helper()
	for _, k := range tr.Kinds {
		if k.Kind == kind {
			return k
		}
	}
	t.Fatalf("trace has no kind %s: %+v", kind, tr.Kinds)
	return KindTrace{}
}

// eventsOf formats events as "stage outcome:reason id" for comparison.
func eventsOf(evs []TraceEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%s %s:%s %s", e.Stage, e.Outcome, e.Reason, e.ID)
	}
	return out
}

func wantEvents(t testing.TB, got []TraceEvent, want ...string) {
	t.Helper()
	g := eventsOf(got)
	if strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n  %s\nwant:\n  %s", strings.Join(g, "\n  "), strings.Join(want, "\n  "))
	}
	for i := 1; i < len(got); i++ {
		if got[i].Time.Before(got[i-1].Time.Truncate(time.Second)) {
			t.Errorf("event %d at %v is before event %d at %v", i, got[i].Time, i-1, got[i-1].Time)
		}
	}
}

// TestTraceDecisionsInOrder: queued, held, queued again, capped and
// suppressed admissions of one kind and a duplicate of another appear in
// the order they were decided, with their reasons, even within one second
// (plain admissions come from the recipient log, the rest from the trace);
// the caps show used, limit and when they free; the held email is listed.
func TestTraceDecisionsInOrder(t *testing.T) {
	g, _, _ := newTestGuard(t, `
kinds:
  password_reset: { dedup_window: 0, per_recipient: [2/1h], per_source: [] }
  verify_email: { dedup_window: 2m, per_recipient: [3/1h], per_source: [] }
`, Config{})
	ctx := context.Background()
	const to = "Alice.Trace+x@example.com"
	a := adm(queue.KindPasswordReset, to, "")
	wantVerdict(t, "a", admit(t, g, a), queue.Queued, "")
	if _, err := g.Trip(ctx, queue.KindPasswordReset, ""); err != nil {
		t.Fatal(err)
	}
	pb := payload("alice.trace@example.com", time.Hour)
	body, err := pb.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	b := &queue.Admission{ID: pb.ID, Kind: pb.Kind, To: pb.To, Payload: body}
	wantVerdict(t, "b", admit(t, g, b), queue.Held, "breaker")
	if _, err := g.Reset(ctx, queue.KindPasswordReset); err != nil {
		t.Fatal(err)
	}
	c := adm(queue.KindPasswordReset, to, "")
	wantVerdict(t, "c", admit(t, g, c), queue.Queued, "")
	d := adm(queue.KindPasswordReset, to, "")
	wantVerdict(t, "d", admit(t, g, d), queue.Capped, "recipient")
	if err := g.Suppress(ctx, to, "manual"); err != nil {
		t.Fatal(err)
	}
	e := adm(queue.KindPasswordReset, to, "")
	wantVerdict(t, "e", admit(t, g, e), queue.Suppressed, "")
	if err := g.Unsuppress(ctx, to); err != nil {
		t.Fatal(err)
	}
	f := adm(queue.KindVerifyEmail, to, "")
	wantVerdict(t, "f", admit(t, g, f), queue.Queued, "")
	h := adm(queue.KindVerifyEmail, to, "")
	wantVerdict(t, "h", admit(t, g, h), queue.Duplicate, "")
	if err := g.Suppress(ctx, to, "complaint"); err != nil {
		t.Fatal(err)
	}

	tr := trace(t, g, "alice.trace@EXAMPLE.com") // another variant of the same recipient
	if tr.RcptHash != g.HashRecipient(to) {
		t.Errorf("rcpt_hash %s, want %s", tr.RcptHash, g.HashRecipient(to))
	}
	if tr.Suppression == nil || tr.Suppression.Reason != "complaint" || tr.Suppression.Source != SourceManual {
		t.Errorf("suppression %+v, want complaint from manual", tr.Suppression)
	}
	pr := kindTrace(t, tr, queue.KindPasswordReset)
	// Plain admissions carry no id until the email reaches a later stage.
	wantEvents(t, pr.Events,
		"admit queued: ",
		"admit held:breaker "+b.ID,
		"admit queued: ",
		"admit capped:recipient "+d.ID,
		"admit suppressed: "+e.ID)
	if len(pr.Caps) != 1 {
		t.Fatalf("password_reset caps %+v, want one window", pr.Caps)
	}
	first := pr.Events[0].Time
	cp := pr.Caps[0]
	if cp.Cap != "per_recipient" || cp.Limit != 2 || cp.Used != 2 || !cp.Full || cp.Per != "1h0m0s" ||
		cp.FreesAt == nil || !cp.FreesAt.Equal(first.Add(time.Hour+time.Second)) {
		t.Errorf("cap %+v (frees %v), want per_recipient 2/1h used 2, full, frees at %v", cp, cp.FreesAt, first.Add(time.Hour+time.Second))
	}
	if len(pr.Held) != 1 || pr.Held[0].ID != b.ID || pr.Held[0].Stage != "admit" || !pr.Held[0].ExpiresAt.After(tr.At) {
		t.Errorf("held %+v, want %s held at admission", pr.Held, b.ID)
	}
	ve := kindTrace(t, tr, queue.KindVerifyEmail)
	wantEvents(t, ve.Events, "admit queued: ", "admit duplicate: "+h.ID)
	if len(ve.Caps) != 2 {
		t.Fatalf("verify_email caps %+v, want dedup and one window", ve.Caps)
	}
	dd, w := ve.Caps[0], ve.Caps[1]
	if dd.Cap != "dedup" || dd.Used != 1 || !dd.Full || dd.FreesAt == nil || !dd.FreesAt.Equal(ve.Events[0].Time.Add(2*time.Minute+time.Second)) {
		t.Errorf("dedup %+v, want used and full until 2m1s after the admission", dd)
	}
	if w.Cap != "per_recipient" || w.Used != 1 || w.Limit != 3 || w.Full {
		t.Errorf("window %+v, want 1 of 3 used", w)
	}
	// A kind the recipient never saw is not listed.
	for _, k := range tr.Kinds {
		if k.Kind == queue.KindNotification {
			t.Errorf("notification listed: %+v", k)
		}
	}
	// Released, the held email is superseded by the later admission.
	if _, err := g.Release(ctx, queue.KindPasswordReset, ReleaseOptions{All: true}); err != nil {
		t.Fatal(err)
	}
	pr = kindTrace(t, trace(t, g, to), queue.KindPasswordReset)
	if n := len(pr.Events); n != 6 || eventsOf(pr.Events)[5] != "release duplicate:superseded "+b.ID || len(pr.Held) != 0 {
		t.Errorf("after the release: %v, held %+v; want the release to find it superseded", eventsOf(pr.Events), pr.Held)
	}
}

// TestTraceSends: dispatch and settle add to the trace; each send has its
// Message-ID and result; a deferral repeated by the same email is one
// entry; confirm feedback shows.
func TestTraceSends(t *testing.T) {
	g, _, _ := newTestGuard(t, `
global: { rate: 1/1h, burst: 1 }
kinds:
  password_reset: { dedup_window: 0, per_source: [] }
`, Config{MessageIDDomain: "mail.example.test"})
	const to = "bob@example.com"
	p1, p2 := payload(to, time.Hour), payload(to, time.Hour)
	for _, p := range []*queue.Payload{p1, p2} {
		wantVerdict(t, "admit", admit(t, g, &queue.Admission{ID: p.ID, Kind: p.Kind, To: p.To}), queue.Queued, "")
	}
	wantDispatch(t, "p1", dispatch(t, g, p1, "a1"), true, "", "")
	settle(t, g, p1, "a1", "", "smtp_451")
	wantDispatch(t, "p1 again", dispatch(t, g, p1, "a2"), false, queue.Deferred, "global")
	wantDispatch(t, "p1 again", dispatch(t, g, p1, "a3"), false, queue.Deferred, "global")
	wantDispatch(t, "p2", dispatch(t, g, p2, "b1"), false, queue.Deferred, "global")
	if err := g.rdb.Del(context.Background(), rkeys.Global).Err(); err != nil {
		t.Fatal(err)
	}
	wantDispatch(t, "p1 last", dispatch(t, g, p1, "a4"), true, "", "")
	settle(t, g, p1, "a4", queue.Sent, "")
	if err := g.Confirm(context.Background(), p1.ID); err != nil {
		t.Fatal(err)
	}

	kt := kindTrace(t, trace(t, g, to), queue.KindPasswordReset)
	wantEvents(t, kt.Events,
		"admit queued: "+p1.ID,
		"admit queued: "+p2.ID,
		"dispatch dispatched: "+p1.ID,
		"settle retry:smtp_451 "+p1.ID,
		"dispatch deferred:global "+p1.ID,
		"dispatch deferred:global "+p2.ID,
		"dispatch dispatched: "+p1.ID,
		"settle sent: "+p1.ID)
	if len(kt.Sends) != 1 {
		t.Fatalf("sends %+v, want one", kt.Sends)
	}
	s := kt.Sends[0]
	if s.ID != p1.ID || s.MessageID != "<"+p1.ID+"@mail.example.test>" || s.Attempts != 2 || s.Result != "sent" ||
		s.SettledAt == nil || s.SettledAt.Before(s.Dispatched) || s.Feedback != "confirmed" {
		t.Errorf("send %+v, want %s sent after 2 attempts, confirmed", s, p1.ID)
	}
}

// TestTraceUnknownAddress: an address never seen has an empty trace; an
// invalid one is an error.
func TestTraceUnknownAddress(t *testing.T) {
	g, _, _ := newTestGuard(t, `{}`, Config{})
	tr := trace(t, g, "nobody@example.com")
	if len(tr.Kinds) != 0 || tr.Suppression != nil || tr.RcptHash != g.HashRecipient("nobody@example.com") {
		t.Errorf("trace %+v, want empty", tr)
	}
	b, _ := json.Marshal(tr)
	if !strings.Contains(string(b), `"kinds":[]`) {
		t.Errorf("JSON %s, want an empty kinds list", b)
	}
	if _, err := g.Trace(context.Background(), "not an address"); !errors.Is(err, ErrInvalidAddress) {
		t.Errorf("Trace(invalid) = %v, want ErrInvalidAddress", err)
	}
}

// TestTraceHTTP: POST /v1/trace takes the address in the body only.
func TestTraceHTTP(t *testing.T) {
	g, _, _ := newTestGuard(t, `{}`, Config{})
	admit(t, g, adm(queue.KindPasswordReset, "carol@example.com", ""))
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	post := func(path, body string) (int, string) {
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, mustRead(t, resp)
	}
	code, body := post("/v1/trace", `{"address":"carol@example.com"}`)
	var tr Trace
	if err := json.Unmarshal([]byte(body), &tr); code != 200 || err != nil || len(tr.Kinds) != 1 || len(tr.Kinds[0].Events) != 1 {
		t.Fatalf("POST /v1/trace = %d %s (%v), want one admission", code, body, err)
	}
	if strings.Contains(body, "carol") {
		t.Errorf("the answer names the address: %s", body)
	}
	if code, body := post("/v1/trace?address=carol@example.com", ""); code != 400 || !strings.Contains(body, "body") {
		t.Errorf("address in the URL = %d %s, want 400", code, body)
	}
	if code, _ := post("/v1/trace", `{"address":"carol"}`); code != 400 {
		t.Errorf("invalid address = %d, want 400", code)
	}
	resp, err := http.Get(srv.URL + "/v1/trace")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/trace = %d, want 405", resp.StatusCode)
	}
}

func mustRead(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTraceKeysBoundedAndExpire: the trace key is the keyed digest (no
// address in any key), holds at most TraceKeep bytes and one entry
// however many refusals, expires with the kind's longest window or TTL,
// and is gone once that passed.
func TestTraceKeysBoundedAndExpire(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	g, rc, _ := newTestGuard(t, `
kinds:
  password_reset: { ttl: 2s, dedup_window: 0, per_recipient: [1/1s], per_source: [], breaker: { lanes: { rerequest_after: 1s } } }
  notification: { dedup_window: 0, per_recipient: [1/1h], per_source: [] }
`, Config{HashKey: key})
	ctx := context.Background()
	const to = "dave@example.com"
	for i := range 200 {
		v := admit(t, g, adm(queue.KindNotification, to, ""))
		if i > 0 {
			wantVerdict(t, "again", v, queue.Capped, "recipient")
		}
	}
	tkey := rkeys.NewDigests(key).Trace(queue.KindNotification, to)
	v, err := rc.Get(ctx, tkey).Result()
	if err != nil {
		t.Fatalf("trace key: %v", err)
	}
	if len(v) > rkeys.TraceMax+200 {
		t.Errorf("trace holds %d bytes, bound %d + one entry", len(v), rkeys.TraceMax)
	}
	kt := kindTrace(t, trace(t, g, to), queue.KindNotification)
	if n := len(kt.Events); n < 20 || n > 60 || kt.Events[n-1].Outcome != "capped" {
		t.Errorf("%d events, the newest %+v: want the newest few dozen", n, kt.Events[n-1])
	}
	if ttl := rc.PTTL(ctx, tkey).Val(); ttl <= 23*time.Hour || ttl > 24*time.Hour {
		t.Errorf("trace TTL %v, want the kind's TTL (24h, longer than its 1h window)", ttl)
	}
	keys, err := rc.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.Contains(k, "dave") || strings.Contains(k, "example.com") {
			t.Errorf("key %q names the recipient", k)
		}
	}

	// A short kind: the trace lasts its 2s TTL (longer than its 1s
	// window), then Redis expires it (this test's own Redis reports it).
	if err := rc.ConfigSet(ctx, "notify-keyspace-events", "Ex").Err(); err != nil {
		t.Fatal(err)
	}
	sub := rc.Subscribe(ctx, "__keyevent@0__:expired")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	admit(t, g, adm(queue.KindPasswordReset, to, ""))
	admit(t, g, adm(queue.KindPasswordReset, to, ""))
	pkey := rkeys.NewDigests(key).Trace(queue.KindPasswordReset, to)
	if ttl := rc.PTTL(ctx, pkey).Val(); ttl <= 0 || ttl > 2*time.Second {
		t.Errorf("password_reset trace TTL %v, want at most 2s", ttl)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		m, err := sub.ReceiveMessage(wctx)
		if err != nil {
			t.Fatalf("the trace did not expire: %v", err)
		}
		if m.Payload == pkey {
			break
		}
	}
	tr := trace(t, g, to)
	for _, k := range tr.Kinds {
		if k.Kind == queue.KindPasswordReset {
			t.Errorf("expired kind still traced: %+v", k)
		}
	}
}

// TestTraceBoundedUnderEnumeration: refusals about recipients with no
// history begin at most Config.TraceNewPerMinute traces a minute, each
// expiring with the source windows, and the rest are counted; a recipient
// with history is traced whatever the bound.
func TestTraceBoundedUnderEnumeration(t *testing.T) {
	const budget, victims = 5, 12
	g, rc, _ := newTestGuard(t, "kinds: { password_reset: { per_source: [1/1h] } }\n", Config{TraceNewPerMinute: budget})
	ctx := context.Background()
	known := "known@example.com"
	wantVerdict(t, "known", admit(t, g, adm(queue.KindPasswordReset, known, "198.51.100.7")), queue.Queued, "")
	wantVerdict(t, "first", admit(t, g, adm(queue.KindPasswordReset, "first@example.com", "203.0.113.9")), queue.Queued, "")
	for i := range victims {
		wantVerdict(t, "victim", admit(t, g, adm(queue.KindPasswordReset, fmt.Sprintf("victim%d@example.com", i), "203.0.113.9")),
			queue.Capped, "source")
	}
	traced := 0
	for i := range victims {
		addr := fmt.Sprintf("victim%d@example.com", i)
		if len(trace(t, g, addr).Kinds) == 0 {
			continue
		}
		traced++
		ttl, err := rc.PTTL(ctx, g.dg.Trace(queue.KindPasswordReset, Canonical(addr, g.policy.RecipientRules))).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 0 || ttl > time.Hour {
			t.Errorf("%s: trace expires in %s, want within the 1h source window", addr, ttl)
		}
	}
	st, err := g.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	skipped := st.Kinds[queue.KindPasswordReset].TracesSkipped
	// The requests may straddle a minute: at most two minutes' budgets.
	if traced+int(skipped) != victims || traced < budget || traced > 2*budget || skipped == 0 {
		t.Errorf("traced %d, skipped %d of %d refusals; want at most %d a minute traced, the rest skipped", traced, skipped, victims, budget)
	}
	wantVerdict(t, "known again", admit(t, g, adm(queue.KindPasswordReset, known, "192.0.2.5")), queue.Duplicate, "")
	k := kindTrace(t, trace(t, g, known), queue.KindPasswordReset)
	if n := len(k.Events); n != 2 || k.Events[1].Outcome != string(queue.Duplicate) {
		t.Errorf("known recipient's trace %v, want its admission and the duplicate", eventsOf(k.Events))
	}
}

// TestParseTraceShowsNewestKeep: however the appended value was cut (as
// the scripts cut it past rkeys.TraceMax), the reader shows the newest
// entry and exactly the older ones that fit in rkeys.TraceKeep bytes.
func TestParseTraceShowsNewestKeep(t *testing.T) {
	r := mrand.New(mrand.NewPCG(1, 2))
	var all []string // every entry written, oldest first
	v := ""
	for i := range 2000 {
		e := "d" + strconv.Itoa(1000+i) + " deferred:global " + strings.Repeat("x", 1+r.IntN(120))
		all = append(all, e)
		// The scripts' trace statement: append, and past TraceMax keep the
		// entry and the TraceKeep bytes before it.
		if v += "\n" + e; len(v) > rkeys.TraceMax {
			v = v[len(v)-(rkeys.TraceKeep+1+len(e)):]
		}
		if len(v) > rkeys.TraceMax+1+len(e) {
			t.Fatalf("value of %d bytes", len(v))
		}
		want := []string{all[len(all)-1]}
		for j, budget := len(all)-2, rkeys.TraceKeep; j >= 0; j-- {
			if budget -= len(all[j]) + 1; budget < 0 {
				break
			}
			want = append(want, all[j])
		}
		slices.Reverse(want)
		got := parseTrace(v)
		if len(got) != len(want) {
			t.Fatalf("after %d entries: %d shown, want %d", i+1, len(got), len(want))
		}
		for j, e := range got {
			if e.id != want[j][strings.LastIndexByte(want[j], ' ')+1:] || e.ms != int64(1000+i-len(want)+1+j) {
				t.Fatalf("after %d entries: entry %d is %+v, want %q", i+1, j, e, want[j])
			}
		}
	}
}
