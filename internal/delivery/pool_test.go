package delivery

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"
)

func newTestPool(t testing.TB, cfg PoolConfig) *Pool {
	t.Helper()
	if cfg.TLS == "" {
		cfg.TLS = TLSNone
	}
	if cfg.HelloName == "" {
		cfg.HelloName = "client.test"
	}
	p, err := NewPool(cfg)
	if err != nil {
		t.Fatalf("NewPool: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Pool.Close: %v", err)
		}
	})
	return p
}

func testMsg(t testing.TB, n int) []byte {
	t.Helper()
	m := baseMessage()
	m.MessageID = fmt.Sprintf("msg%d@example.com", n)
	raw, err := Build(&m)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func mustSend(t *testing.T, p *Pool, to string, msg []byte) {
	t.Helper()
	if err := p.Send(context.Background(), "bounce@example.com", []string{to}, msg); err != nil {
		t.Fatalf("Send: %v", err)
	}
}

func asSendError(t *testing.T, err error) *SendError {
	t.Helper()
	var se *SendError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *SendError", err, err)
	}
	return se
}

func TestPoolReusesOneConnection(t *testing.T) {
	ts := startServer(t, serverOpts{})
	p := newTestPool(t, PoolConfig{Addr: ts.Addr, MaxConns: 1})
	const n = 10
	for i := range n {
		mustSend(t, p, fmt.Sprintf("user%d@example.org", i), testMsg(t, i))
	}
	if got := ts.Sessions(); got != 1 {
		t.Errorf("server sessions = %d, want 1", got)
	}
	if got := ts.Conns(); got != 1 {
		t.Errorf("server connections = %d, want 1", got)
	}
	// Each reuse starts with RSET (go-smtp follows it with EHLO).
	want := "EHLO MAIL RCPT DATA" + strings.Repeat(" RSET EHLO MAIL RCPT DATA", n-1)
	if got := strings.Join(ts.Commands(0), " "); got != want {
		t.Errorf("client commands:\n got %s\nwant %s", got, want)
	}
	msgs := ts.Messages()
	if len(msgs) != n {
		t.Fatalf("server got %d messages, want %d", len(msgs), n)
	}
	for i, m := range msgs {
		if m.From != "bounce@example.com" || len(m.To) != 1 || m.To[0] != fmt.Sprintf("user%d@example.org", i) {
			t.Errorf("message %d: from %q to %q", i, m.From, m.To)
		}
		if !bytes.Equal(m.Data, testMsg(t, i)) {
			t.Errorf("message %d: data differs from what was sent", i)
		}
	}
}

func TestPoolConcurrentSendsRespectMaxConns(t *testing.T) {
	ts := startServer(t, serverOpts{})
	p := newTestPool(t, PoolConfig{Addr: ts.Addr, MaxConns: 2})
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- p.Send(context.Background(), "bounce@example.com", []string{"u@example.org"}, testMsg(t, i))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := ts.Conns(); got > 2 {
		t.Errorf("server connections = %d, want <= MaxConns 2", got)
	}
	if got := len(ts.Messages()); got != n {
		t.Errorf("server got %d messages, want %d", got, n)
	}
}

func TestPoolRSETAfterRefusedRecipient(t *testing.T) {
	ts := startServer(t, serverOpts{onRcpt: func(_ *testServer, to string) error {
		if strings.HasPrefix(to, "nobody@") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + to + ">: no such user"}
		}
		return nil
	}})
	p := newTestPool(t, PoolConfig{Addr: ts.Addr, MaxConns: 1})

	err := p.Send(context.Background(), "bounce@example.com", []string{"first@example.org", "nobody@example.org"}, testMsg(t, 1))
	se := asSendError(t, err)
	if se.Stage != StageRcpt || se.Code != 550 || se.Enhanced != "5.1.1" {
		t.Errorf("SendError = %+v, want rcpt 550 5.1.1", se)
	}
	if !IsPermanent(err) || IsTemporary(err) || !IsHardBounce(err) {
		t.Errorf("IsPermanent=%v IsTemporary=%v IsHardBounce=%v, want true false true", IsPermanent(err), IsTemporary(err), IsHardBounce(err))
	}
	if strings.Contains(err.Error(), "nobody@") {
		t.Errorf("Error() = %q leaks the recipient", err)
	}

	// The same connection carries the next message, and the recipient
	// accepted in the aborted transaction is gone.
	mustSend(t, p, "second@example.org", testMsg(t, 2))
	if got := ts.Conns(); got != 1 {
		t.Errorf("server connections = %d, want 1 (connection reused after RSET)", got)
	}
	// RSET right after the refusal; on reuse the EHLO go-smtp owes after an
	// RSET doubles as the liveness check.
	want := "EHLO MAIL RCPT RCPT RSET EHLO MAIL RCPT DATA"
	if got := strings.Join(ts.Commands(0), " "); got != want {
		t.Errorf("client commands:\n got %s\nwant %s", got, want)
	}
	msgs := ts.Messages()
	if len(msgs) != 1 || len(msgs[0].To) != 1 || msgs[0].To[0] != "second@example.org" {
		t.Fatalf("server messages = %+v, want one to second@example.org", msgs)
	}
}

func TestPoolReplyClassification(t *testing.T) {
	reply := func(code int, ec smtp.EnhancedCode) error {
		return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: "test reply"}
	}
	tests := []struct {
		name      string
		opts      serverOpts
		stage     string
		code      int
		enhanced  string
		temporary bool
		bounce    bool
		reused    bool // the next send runs on the same connection
	}{
		{"rcpt 451", serverOpts{onRcpt: func(*testServer, string) error { return reply(451, smtp.EnhancedCode{4, 3, 0}) }},
			StageRcpt, 451, "4.3.0", true, false, true},
		{"rcpt 550 5.1.1", serverOpts{onRcpt: func(*testServer, string) error { return reply(550, smtp.EnhancedCode{5, 1, 1}) }},
			StageRcpt, 550, "5.1.1", false, true, true},
		{"rcpt 550 without enhanced code", serverOpts{onRcpt: func(*testServer, string) error { return reply(550, smtp.NoEnhancedCode) }},
			StageRcpt, 550, "", false, false, true},
		{"rcpt 421", serverOpts{onRcpt: func(*testServer, string) error { return reply(421, smtp.EnhancedCode{4, 3, 2}) }},
			StageRcpt, 421, "4.3.2", true, false, false},
		{"mail 550 5.1.8 is not a bounce", serverOpts{onMail: func(*testServer, string) error { return reply(550, smtp.EnhancedCode{5, 1, 8}) }},
			StageMail, 550, "5.1.8", false, false, true},
		{"mail 421", serverOpts{onMail: func(*testServer, string) error { return reply(421, smtp.EnhancedCode{4, 4, 5}) }},
			StageMail, 421, "4.4.5", true, false, false},
		{"data 554", serverOpts{onData: func(*testServer, net.Conn, []byte) error { return reply(554, smtp.EnhancedCode{5, 7, 1}) }},
			StageData, 554, "5.7.1", false, false, true},
		{"data 452", serverOpts{onData: func(*testServer, net.Conn, []byte) error { return reply(452, smtp.EnhancedCode{4, 3, 1}) }},
			StageData, 452, "4.3.1", true, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fail sync.Once
			failFirst := func(f func() error) func() error {
				return func() error {
					var err error
					fail.Do(func() { err = f() })
					return err
				}
			}
			opts := tt.opts
			if h := opts.onMail; h != nil {
				opts.onMail = func(ts *testServer, from string) error { return failFirst(func() error { return h(ts, from) })() }
			}
			if h := opts.onRcpt; h != nil {
				opts.onRcpt = func(ts *testServer, to string) error { return failFirst(func() error { return h(ts, to) })() }
			}
			if h := opts.onData; h != nil {
				opts.onData = func(ts *testServer, c net.Conn, d []byte) error {
					return failFirst(func() error { return h(ts, c, d) })()
				}
			}
			ts := startServer(t, opts)
			p := newTestPool(t, PoolConfig{Addr: ts.Addr, MaxConns: 1})

			err := p.Send(context.Background(), "bounce@example.com", []string{"u@example.org"}, testMsg(t, 1))
			se := asSendError(t, err)
			if se.Stage != tt.stage || se.Code != tt.code || se.Enhanced != tt.enhanced || se.Ambiguous {
				t.Errorf("SendError = %+v, want stage %s code %d enhanced %q", se, tt.stage, tt.code, tt.enhanced)
			}
			if IsTemporary(err) != tt.temporary || IsPermanent(err) == tt.temporary || IsHardBounce(err) != tt.bounce {
				t.Errorf("IsTemporary=%v IsPermanent=%v IsHardBounce=%v, want temporary=%v bounce=%v",
					IsTemporary(err), IsPermanent(err), IsHardBounce(err), tt.temporary, tt.bounce)
			}
			var smtpErr *smtp.SMTPError
			if !errors.As(err, &smtpErr) || smtpErr.Code != tt.code {
				t.Errorf("errors.As(*smtp.SMTPError) = %v", smtpErr)
			}

			mustSend(t, p, "u@example.org", testMsg(t, 2))
			wantConns := 2
			if tt.reused {
				wantConns = 1
			}
			if got := ts.Conns(); got != wantConns {
				t.Errorf("server connections after a second send = %d, want %d", got, wantConns)
			}
		})
	}
}

func TestPoolConnectionLostAfterDataIsAmbiguous(t *testing.T) {
	var once sync.Once
	ts := startServer(t, serverOpts{onData: func(_ *testServer, c net.Conn, _ []byte) error {
		var drop bool
		once.Do(func() { drop = true })
		if drop {
			// The whole message and the dot arrived; the reply never
			// leaves.
			_ = c.Close()
			return errors.New("dropped")
		}
		return nil
	}})
	p := newTestPool(t, PoolConfig{Addr: ts.Addr, MaxConns: 1})

	err := p.Send(context.Background(), "bounce@example.com", []string{"u@example.org"}, testMsg(t, 1))
	se := asSendError(t, err)
	if !se.Ambiguous || !se.Temporary || se.Stage != StageAmbiguous || se.Code != 0 {
		t.Fatalf("SendError = %+v, want ambiguous, temporary, stage ambiguous", se)
	}
	if !IsTemporary(err) || IsPermanent(err) {
		t.Error("ambiguous error is not classified temporary")
	}
	// The broken connection was discarded: the next send dials again.
	mustSend(t, p, "u@example.org", testMsg(t, 2))
	if got := ts.Conns(); got != 2 {
		t.Errorf("server connections = %d, want 2", got)
	}
}

func TestPoolContextDeadlineOnStalledServer(t *testing.T) {
	stall := func(ts *testServer) error {
		<-ts.Release
		return nil
	}
	tests := []struct {
		name      string
		opts      serverOpts
		stage     string
		ambiguous bool
	}{
		{"stall on MAIL", serverOpts{onMail: func(ts *testServer, _ string) error { return stall(ts) }}, StageMail, false},
		{"stall after the final dot", serverOpts{onData: func(ts *testServer, _ net.Conn, _ []byte) error { return stall(ts) }}, StageAmbiguous, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, tt.opts)
			// CommandTimeout is far longer than the test may run: only the
			// context can end the send.
			p := newTestPool(t, PoolConfig{Addr: ts.Addr, MaxConns: 1, CommandTimeout: time.Hour})
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			err := p.Send(ctx, "bounce@example.com", []string{"u@example.org"}, testMsg(t, 1))
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Send = %v, want context.DeadlineExceeded", err)
			}
			se := asSendError(t, err)
			if !se.Temporary || se.Stage != tt.stage || se.Ambiguous != tt.ambiguous {
				t.Errorf("SendError = %+v, want temporary, stage %s, ambiguous %v", se, tt.stage, tt.ambiguous)
			}
		})
	}
}

func TestPoolContextCancelClosesConnection(t *testing.T) {
	ts := startServer(t, serverOpts{onMail: func(ts *testServer, _ string) error {
		<-ts.Release
		return nil
	}})
	p := newTestPool(t, PoolConfig{Addr: ts.Addr, MaxConns: 1, CommandTimeout: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-ts.mailSeen // the server is now stalling inside MAIL
		cancel()
	}()
	err := p.Send(ctx, "bounce@example.com", []string{"u@example.org"}, testMsg(t, 1))
	if !errors.Is(err, context.Canceled) || !IsTemporary(err) {
		t.Fatalf("Send = %v, want a temporary context.Canceled", err)
	}
	// A context already done does not even wait for a connection.
	if err := p.Send(ctx, "bounce@example.com", []string{"u@example.org"}, testMsg(t, 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Send with a cancelled context = %v", err)
	}
}

func TestPoolRedialsStaleConnection(t *testing.T) {
	ts := startServer(t, serverOpts{})
	p := newTestPool(t, PoolConfig{Addr: ts.Addr, MaxConns: 1})
	mustSend(t, p, "u@example.org", testMsg(t, 1))
	// The relay closes the idle connection (its own idle timeout, a
	// restart): the pool notices on RSET and redials without an error.
	ts.closeConns()
	<-ts.logouts
	mustSend(t, p, "u@example.org", testMsg(t, 2))
	if got := ts.Conns(); got != 2 {
		t.Errorf("server connections = %d, want 2", got)
	}
	if got := len(ts.Messages()); got != 2 {
		t.Errorf("server got %d messages, want 2", got)
	}
}

func TestPoolClosesIdleConnections(t *testing.T) {
	ts := startServer(t, serverOpts{})
	p := newTestPool(t, PoolConfig{Addr: ts.Addr, MaxConns: 1, IdleTimeout: 20 * time.Millisecond})
	mustSend(t, p, "u@example.org", testMsg(t, 1))
	<-ts.logouts // the reaper sent QUIT
	mustSend(t, p, "u@example.org", testMsg(t, 2))
	if got := ts.Conns(); got != 2 {
		t.Errorf("server connections = %d, want 2", got)
	}
}

func TestPoolStartTLSWithAuth(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	ts := startServer(t, serverOpts{tls: serverTLS, user: "app", pass: "s3cret"})
	p := newTestPool(t, PoolConfig{
		Addr: ts.Addr, TLS: TLSStartTLS, TLSConfig: clientTLS, Username: "app", Password: "s3cret", MaxConns: 1,
	})
	mustSend(t, p, "u@example.org", testMsg(t, 1))
	mustSend(t, p, "u@example.org", testMsg(t, 2))
	msgs := ts.Messages()
	if len(msgs) != 2 || !msgs[0].TLS || !msgs[1].TLS {
		t.Fatalf("server messages = %d, TLS = %v; want 2 over TLS", len(msgs), msgs)
	}
	if got := ts.Conns(); got != 1 {
		t.Errorf("server connections = %d, want 1", got)
	}

	bad := newTestPool(t, PoolConfig{
		Addr: ts.Addr, TLS: TLSStartTLS, TLSConfig: clientTLS, Username: "app", Password: "wrong",
	})
	err := bad.Send(context.Background(), "bounce@example.com", []string{"u@example.org"}, testMsg(t, 3))
	se := asSendError(t, err)
	if se.Stage != StageAuth || se.Code != 535 || !se.Temporary {
		t.Errorf("wrong password: SendError = %+v, want temporary auth 535", se)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("Error() = %q contains the password", err)
	}
}

func TestPoolStartTLSRequired(t *testing.T) {
	ts := startServer(t, serverOpts{}) // no STARTTLS offered
	p := newTestPool(t, PoolConfig{Addr: ts.Addr, TLS: TLSStartTLS})
	err := p.Send(context.Background(), "bounce@example.com", []string{"u@example.org"}, testMsg(t, 1))
	se := asSendError(t, err)
	if se.Stage != StageTLS || !se.Temporary {
		t.Fatalf("SendError = %+v, want temporary tls", se)
	}
	if len(ts.Messages()) != 0 {
		t.Error("a message was sent without TLS")
	}
}

func TestPoolImplicitTLS(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	ts := startServer(t, serverOpts{tls: serverTLS, implicit: true})
	p := newTestPool(t, PoolConfig{Addr: ts.Addr, TLS: TLSImplicit, TLSConfig: clientTLS})
	mustSend(t, p, "u@example.org", testMsg(t, 1))
	if msgs := ts.Messages(); len(msgs) != 1 || !msgs[0].TLS {
		t.Fatalf("server messages = %+v, want one over TLS", msgs)
	}

	// Without the self-signed root the certificate is refused.
	untrusting := newTestPool(t, PoolConfig{Addr: ts.Addr, TLS: TLSImplicit})
	err := untrusting.Send(context.Background(), "bounce@example.com", []string{"u@example.org"}, testMsg(t, 2))
	var certErr *tls.CertificateVerificationError
	if se := asSendError(t, err); se.Stage != StageTLS || !se.Temporary || !errors.As(err, &certErr) {
		t.Errorf("SendError = %+v, want temporary tls with a certificate error", se)
	}
}

func TestNewPoolConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  PoolConfig
		ok   bool
	}{
		{"none to loopback IPv4", PoolConfig{Addr: "127.0.0.1:25", TLS: TLSNone}, true},
		{"none to loopback IPv6", PoolConfig{Addr: "[::1]:25", TLS: TLSNone}, true},
		{"none to localhost", PoolConfig{Addr: "localhost:2525", TLS: TLSNone}, true},
		{"none to remote IP", PoolConfig{Addr: "192.0.2.1:25", TLS: TLSNone}, false},
		{"none to remote name", PoolConfig{Addr: "smtp.example.com:25", TLS: TLSNone}, false},
		{"none to remote, explicitly allowed", PoolConfig{Addr: "smtpsink:2525", TLS: TLSNone, AllowInsecure: true}, true},
		{"auth in clear text, even allowed", PoolConfig{Addr: "smtpsink:2525", TLS: TLSNone, AllowInsecure: true, Username: "u", Password: "p"}, false},
		{"default mode is starttls", PoolConfig{Addr: "smtp.example.com:587"}, true},
		{"auth over starttls", PoolConfig{Addr: "smtp.example.com:587", TLS: TLSStartTLS, Username: "u", Password: "p"}, true},
		{"auth in clear text", PoolConfig{Addr: "127.0.0.1:25", TLS: TLSNone, Username: "u", Password: "p"}, false},
		{"password without user", PoolConfig{Addr: "smtp.example.com:587", Password: "p"}, false},
		{"unknown mode", PoolConfig{Addr: "smtp.example.com:587", TLS: "ssl"}, false},
		{"no port", PoolConfig{Addr: "smtp.example.com"}, false},
		{"bad hello", PoolConfig{Addr: "smtp.example.com:587", HelloName: "a b"}, false},
		{"negative conns", PoolConfig{Addr: "smtp.example.com:587", MaxConns: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPool(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("NewPool(%+v) error = %v, want ok=%v", tt.cfg, err, tt.ok)
			}
			if p != nil {
				_ = p.Close()
			}
		})
	}
}

func TestPoolClose(t *testing.T) {
	ts := startServer(t, serverOpts{})
	p := newTestPool(t, PoolConfig{Addr: ts.Addr})
	mustSend(t, p, "u@example.org", testMsg(t, 1))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	<-ts.logouts // the idle connection got QUIT
	err := p.Send(context.Background(), "bounce@example.com", []string{"u@example.org"}, testMsg(t, 2))
	if !errors.Is(err, ErrPoolClosed) || !IsTemporary(err) {
		t.Errorf("Send after Close = %v, want temporary ErrPoolClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestPoolRefusesBadEnvelope(t *testing.T) {
	ts := startServer(t, serverOpts{})
	p := newTestPool(t, PoolConfig{Addr: ts.Addr})
	for _, tt := range []struct {
		from string
		to   []string
	}{
		{"bounce@example.com", nil},
		{"bounce@example.com", []string{""}},
		{"bounce@example.com", []string{"u@example.org\r\nRCPT TO:<x@y>"}},
		{"bounce@example.com\r\nRSET", []string{"u@example.org"}},
	} {
		err := p.Send(context.Background(), tt.from, tt.to, testMsg(t, 1))
		if !IsPermanent(err) || !errors.Is(err, ErrInvalidAddress) {
			t.Errorf("Send(%q, %q) = %v, want permanent ErrInvalidAddress", tt.from, tt.to, err)
		}
	}
	if ts.Conns() != 0 {
		t.Error("a bad envelope reached the relay")
	}
}

// TestPoolDeliversTrickyBodies sends bodies that stress dot-stuffing and
// line handling through a real server, and checks each arrives as exactly
// one message whose decoded parts equal the input with line breaks written
// as CRLF, and whose DKIM signatures still verify.
func TestPoolDeliversTrickyBodies(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	signer, err := NewSigner(testDomain, []Key{rsaKey, edKey})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, serverOpts{})
	p := newTestPool(t, PoolConfig{Addr: ts.Addr, MaxConns: 1})
	bodies := map[string]string{
		"LF dot CRLF":        "a\n.\r\nb",
		"CRLF dot LF":        "a\r\n.\nb",
		"LF dot LF":          "a\n.\nb",
		"dot at start":       ".\r\nstill here",
		"dot at end":         "the end\r\n.",
		"bare CR":            "a\rb\r\rc",
		"leading dots":       "..double\r\n...triple\r\n.single\n. space",
		"long line":          strings.Repeat("0123456789", 250),
		"long line with dot": "." + strings.Repeat("x", 2000) + "\n.",
		"trailing spaces":    "keep me   \r\n\ttabs\t",
		"empty":              "",
		"CRLF dot CRLF":      "x\r\n.\r\ny",
	}
	i := 0
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			i++
			m := baseMessage()
			m.MessageID = fmt.Sprintf("tricky%d@example.com", i)
			m.Text, m.HTML = body, "<pre>"+body+"</pre>"
			for _, textOnly := range []bool{false, true} {
				if textOnly {
					m.HTML = ""
				}
				raw, err := Build(&m)
				if err != nil {
					t.Fatal(err)
				}
				checkWire(t, raw)
				signed, err := signer.Sign(raw)
				if err != nil {
					t.Fatal(err)
				}
				before := len(ts.Messages())
				mustSend(t, p, "u@example.org", signed)
				msgs := ts.Messages()
				if len(msgs) != before+1 {
					t.Fatalf("server got %d messages, want exactly one more", len(msgs)-before)
				}
				got := msgs[len(msgs)-1].Data
				if !bytes.Equal(got, signed) {
					t.Fatalf("received bytes differ from sent bytes")
				}
				checkRoundTrip(t, &m, got)
				vs, err := dkim.VerifyWithOptions(bytes.NewReader(got), &dkim.VerifyOptions{LookupTXT: lookupFor(rsaKey, edKey)})
				if err != nil || len(vs) != 2 {
					t.Fatalf("verify: %d results, %v", len(vs), err)
				}
				for _, v := range vs {
					if v.Err != nil {
						t.Errorf("DKIM %s: %v", v.Domain, v.Err)
					}
				}
			}
		})
	}
}

func TestSendErrorString(t *testing.T) {
	err := &SendError{Code: 550, Enhanced: "5.1.1", Message: "<ada@example.org>: Recipient address rejected", Stage: StageRcpt}
	if got := err.Error(); strings.Contains(got, "ada@") || !strings.Contains(got, "550 5.1.1") {
		t.Errorf("Error() = %q, want the code and no address", got)
	}
	amb := &SendError{Stage: StageAmbiguous, Ambiguous: true, Temporary: true, Err: errors.New("EOF")}
	if got := amb.Error(); !strings.Contains(got, "ambiguous") {
		t.Errorf("Error() = %q", got)
	}
	if IsTemporary(errors.New("x")) || IsPermanent(errors.New("x")) || IsHardBounce(nil) {
		t.Error("a plain error is classified")
	}
}

// BenchmarkPoolSend measures one pooled delivery over loopback: RSET (and
// the EHLO go-smtp sends after it), MAIL, RCPT, DATA.
func BenchmarkPoolSend(b *testing.B) {
	ts := startServer(b, serverOpts{})
	p := newTestPool(b, PoolConfig{Addr: ts.Addr, MaxConns: 1})
	msg := testMsg(b, 1)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Send(context.Background(), "bounce@example.com", []string{"u@example.org"}, msg); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPoolDialTimeoutOnSilentRelay covers a relay that accepts TCP but never
// greets: DialTimeout bounds connection set-up.
func TestPoolDialTimeoutOnSilentRelay(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	t.Cleanup(func() {
		_ = l.Close()
		for c := range accepted {
			_ = c.Close()
		}
	})
	p := newTestPool(t, PoolConfig{Addr: l.Addr().String(), DialTimeout: 200 * time.Millisecond, CommandTimeout: time.Hour})
	err = p.Send(context.Background(), "bounce@example.com", []string{"u@example.org"}, testMsg(t, 1))
	se := asSendError(t, err)
	if se.Stage != StageDial || !se.Temporary || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("SendError = %+v, want a temporary dial timeout", se)
	}
}
