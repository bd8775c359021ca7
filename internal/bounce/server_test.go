package bounce

import (
	"bytes"
	"context"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/internal/verp"
	"github.com/floodgate-dev/floodgate/queue"
)

const bounceDomain = "bounce.example.test"

var testSecret = []byte("test-secret-0123456789abcdef")

type stack struct {
	g     *guard.Guard
	codec *verp.Codec
	srv   *Server
}

// newGuard returns a guard on a private Redis, and a codec for it.
func newGuard(t *testing.T) (*guard.Guard, *verp.Codec) {
	t.Helper()
	r := testutil.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: r.Addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rc.Close() })
	g, err := guard.New(guard.Config{Redis: rc})
	if err != nil {
		t.Fatal(err)
	}
	codec, err := verp.New(verp.Config{Domain: bounceDomain, Secrets: [][]byte{testSecret}, Kinds: slices.Collect(maps.Keys(g.Policy().KindPolicies))})
	if err != nil {
		t.Fatal(err)
	}
	return g, codec
}

func newStack(t *testing.T, cfg ServerConfig) *stack {
	t.Helper()
	g, codec := newGuard(t)
	cfg.Addr, cfg.Codec, cfg.Recorder = "127.0.0.1:0", codec, g
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return &stack{g: g, codec: codec, srv: srv}
}

// returnPath is the bounce address of a new email of kind to rcpt.
func (s *stack) returnPath(t *testing.T, kind, rcpt string, at time.Time) (string, string) {
	t.Helper()
	id := strings.Repeat("ab", 8) + strings.Repeat("0", 15) + string(rune('0'+len(rcpt)%10))
	p := &queue.Payload{ID: id, Kind: kind, To: rcpt}
	addr := ReturnPath(s.codec, s.g.Policy(), func() time.Time { return at })(p)
	if addr == "" {
		t.Fatal("no return path")
	}
	return addr, id
}

func (s *stack) suppressed(t *testing.T, addr string) (guard.Suppression, bool) {
	t.Helper()
	e, ok, err := s.g.LookupSuppression(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	return e, ok
}

func (s *stack) refused(t *testing.T) map[string]int64 {
	t.Helper()
	fs, err := s.g.BounceStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return fs.Refused[guard.SourceDSN]
}

func TestReceiverSuppresses(t *testing.T) {
	s := newStack(t, ServerConfig{})
	now := time.Now()
	ctx := context.Background()

	rp, id := s.returnPath(t, queue.KindPasswordReset, "gone@example.com", now)
	if err := testutil.SendFromNull(t, s.srv.Addr(), testutil.DSN(rp, "Gone@Example.com", "5.1.1"), rp); err != nil {
		t.Fatalf("DSN: %v", err)
	}
	e, ok := s.suppressed(t, "gone@example.com")
	if !ok || e.Reason != "hard_bounce" || e.Source != guard.SourceDSN {
		t.Fatalf("after a 5.1.1 DSN: suppression %+v, %v; want hard_bounce from dsn", e, ok)
	}
	v, err := s.g.Admit(ctx, &queue.Admission{ID: id, Kind: queue.KindPasswordReset, To: "gone@example.com", Payload: []byte("{}")})
	if err != nil || v.Outcome != queue.Suppressed {
		t.Fatalf("next enqueue: %+v, %v; want suppressed", v, err)
	}

	rp, _ = s.returnPath(t, queue.KindNotification, "full@example.com", now)
	if err := testutil.SendFromNull(t, s.srv.Addr(), testutil.DSN(rp, "full@example.com", "4.2.2"), strings.ToUpper(rp)); err != nil {
		t.Fatalf("delay DSN: %v", err)
	}
	if _, ok := s.suppressed(t, "full@example.com"); ok {
		t.Error("a 4.x.x DSN suppressed the recipient")
	}

	rp, _ = s.returnPath(t, queue.KindNotification, "angry@example.com", now)
	if err := testutil.SendFromNull(t, s.srv.Addr(), testutil.ARF(rp, "angry@example.com"), rp); err != nil {
		t.Fatalf("ARF: %v", err)
	}
	if e, ok := s.suppressed(t, "angry@example.com"); !ok || e.Reason != "complaint" || e.Source != guard.SourceARF {
		t.Errorf("after an abuse report: %+v, %v; want complaint from arf", e, ok)
	}

	fs, err := s.g.BounceStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if k := fs.Kinds[queue.KindPasswordReset]; k.Hard != 1 {
		t.Errorf("password_reset feedback %+v, want 1 hard", k)
	}
	if k := fs.Kinds[queue.KindNotification]; k.Soft != 1 || k.Complaints != 1 {
		t.Errorf("notification feedback %+v, want 1 soft, 1 complaint", k)
	}
}

func TestReceiverRefusesHostileMail(t *testing.T) {
	s := newStack(t, ServerConfig{MaxMessageBytes: 8 << 10})
	now := time.Now()
	rp, _ := s.returnPath(t, queue.KindPasswordReset, "alice@example.com", now)
	local, _, _ := strings.Cut(rp, "@")
	forged := local[:len(local)-4] + "aaaa@" + bounceDomain
	other, err := verp.New(verp.Config{Domain: bounceDomain, Secrets: [][]byte{[]byte("another-secret-0123456789")}})
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := other.Address(strings.Repeat("cd", 16), queue.KindPasswordReset, "bob@example.com", now)
	expired, _ := s.returnPath(t, queue.KindPasswordReset, "bob@example.com", now.Add(-verp.DefaultLifetime-2*time.Hour))

	tests := []struct {
		name   string
		rcpt   string
		msg    []byte
		code   int
		reason string
	}{
		{"forged token", forged, testutil.DSN(forged, "bob@example.com", "5.1.1"), 550, "forged"},
		{"token of another secret", foreign, testutil.DSN(foreign, "bob@example.com", "5.1.1"), 550, "forged"},
		{"expired token", expired, testutil.DSN(expired, "bob@example.com", "5.1.1"), 550, "expired"},
		{"no token", "postmaster@" + bounceDomain, testutil.DSN("postmaster@"+bounceDomain, "bob@example.com", "5.1.1"), 550, "not_bounce_address"},
		{"relay", "bob@example.com", testutil.DSN("bob@example.com", "bob@example.com", "5.1.1"), 550, "relay"},
		{"huge message", rp, append(testutil.DSN(rp, "alice@example.com", "5.1.1"), bytes.Repeat([]byte("x\r\n"), 8<<10)...), 552, "too_large"},
		{"another recipient", rp, testutil.DSN(rp, "bob@example.com", "5.1.1"), 0, "recipient_mismatch"},
		{"not a report", rp, []byte("Subject: hi\r\n\r\nhello\r\n"), 0, "unrecognised"},
	}
	for _, tt := range tests {
		before := s.refused(t)[tt.reason]
		err := testutil.SendFromNull(t, s.srv.Addr(), tt.msg, tt.rcpt)
		if testutil.SMTPCode(err) != tt.code || tt.code == 0 && err != nil {
			t.Errorf("%s: send = %v, want code %d", tt.name, err, tt.code)
		}
		if n := s.refused(t)[tt.reason] - before; n != 1 {
			t.Errorf("%s: refused[%s] grew by %d, want 1 (all: %v)", tt.name, tt.reason, n, s.refused(t))
		}
	}
	for _, a := range []string{"alice@example.com", "bob@example.com"} {
		if e, ok := s.suppressed(t, a); ok {
			t.Errorf("hostile mail suppressed %s: %+v", a, e)
		}
	}
	fs, _ := s.g.BounceStats(context.Background())
	if k := fs.Kinds[queue.KindPasswordReset]; k.Hard+k.Soft+k.Complaints != 0 {
		t.Errorf("hostile mail was counted as feedback: %+v", k)
	}
}

func TestReceiverLimits(t *testing.T) {
	s := newStack(t, ServerConfig{MaxRecipients: 2, Rate: 0.001, MaxConns: 2})
	now := time.Now()
	rp, _ := s.returnPath(t, queue.KindPasswordReset, "alice@example.com", now)

	c, err := smtp.Dial(s.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("", nil); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		err := c.Rcpt(rp, nil)
		if want := map[bool]int{true: 452, false: 0}[i == 2]; testutil.SMTPCode(err) != want {
			t.Errorf("RCPT %d = %v, want code %d", i+1, err, want)
		}
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	// The message rate's burst is spent by the first MAIL.
	if err := c.Mail("", nil); testutil.SMTPCode(err) != 451 {
		t.Errorf("MAIL beyond the rate = %v, want 451", err)
	}

	// One more connection fits, the one after it is refused at once.
	c2, err := smtp.Dial(s.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Noop(); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", s.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 64)
	n, _ := conn.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "421 ") {
		t.Errorf("connection beyond MaxConns greeted %q, want 421", buf[:n])
	}
}

// A report that names the token's recipient among others changes only
// that recipient; an abuse report about another recipient changes nothing.
func TestReceiverOnlyTheTokensRecipient(t *testing.T) {
	s := newStack(t, ServerConfig{})
	now := time.Now()
	rp, _ := s.returnPath(t, queue.KindPasswordReset, "alice@example.com", now)
	msg := bytes.Replace(testutil.DSN(rp, "mallory@example.com", "5.1.1"), []byte("\r\n--dsn-boundary--"),
		[]byte("\r\nFinal-Recipient: rfc822; alice@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--dsn-boundary--"), 1)
	if err := testutil.SendFromNull(t, s.srv.Addr(), msg, rp); err != nil {
		t.Fatalf("DSN: %v", err)
	}
	if _, ok := s.suppressed(t, "alice@example.com"); !ok {
		t.Error("the token's recipient, second in the DSN, was not suppressed")
	}
	if e, ok := s.suppressed(t, "mallory@example.com"); ok {
		t.Errorf("a recipient the token was not minted for was suppressed: %+v", e)
	}

	rp, _ = s.returnPath(t, queue.KindNotification, "bob@example.com", now)
	before := s.refused(t)["recipient_mismatch"]
	if err := testutil.SendFromNull(t, s.srv.Addr(), testutil.ARF(rp, "mallory@example.com"), rp); err != nil {
		t.Fatalf("ARF: %v", err)
	}
	if n := s.refused(t)["recipient_mismatch"] - before; n != 1 {
		t.Errorf("refused[recipient_mismatch] grew by %d for an abuse report about another recipient, want 1", n)
	}
	for _, a := range []string{"bob@example.com", "mallory@example.com"} {
		if e, ok := s.suppressed(t, a); ok {
			t.Errorf("an abuse report about another recipient suppressed %s: %+v", a, e)
		}
	}
}
