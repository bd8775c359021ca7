package delivery

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// received is one message accepted by a testServer.
type received struct {
	From string
	To   []string
	Data []byte
	TLS  bool // the session ran over TLS
}

// testServer is a real go-smtp server on 127.0.0.1:0 with a recording
// backend. Hooks, set before the first connection, choose each reply.
type testServer struct {
	Addr string
	// Release is closed at cleanup, before the server shuts down; hooks
	// that stall wait on it.
	Release chan struct{}

	opts serverOpts

	mu       sync.Mutex
	sessions int
	conns    []net.Conn
	wire     []*bytes.Buffer // what each client sent, by connection
	msgs     []received
	logouts  chan struct{}
	mailSeen chan struct{}
}

// serverOpts configures a testServer. Hooks (nil accepts) choose replies;
// they run on server goroutines.
type serverOpts struct {
	tls        *tls.Config // enables STARTTLS
	implicit   bool        // with tls: TLS from the first byte instead
	user, pass string      // enables AUTH PLAIN (over TLS only) and requires it

	onMail func(ts *testServer, from string) error
	onRcpt func(ts *testServer, to string) error
	// onData runs after the body was read; conn is the server side.
	onData func(ts *testServer, conn net.Conn, data []byte) error
}

func startServer(t testing.TB, opts serverOpts) *testServer {
	t.Helper()
	ts := &testServer{
		Release:  make(chan struct{}),
		opts:     opts,
		logouts:  make(chan struct{}, 1000),
		mailSeen: make(chan struct{}, 1000),
	}
	srv := smtp.NewServer(smtp.BackendFunc(ts.newSession))
	srv.Domain = "localhost"
	if !opts.implicit {
		srv.TLSConfig = opts.tls
	}
	srv.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.Addr = l.Addr().String()
	var sl net.Listener = &trackingListener{Listener: l, ts: ts}
	if opts.implicit {
		sl = tls.NewListener(sl, opts.tls)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(sl)
	}()
	t.Cleanup(func() {
		close(ts.Release)
		ts.closeConns()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("smtp server shutdown: %v", err)
		}
		// Serve registers its listener only once it runs; close it here
		// too in case Shutdown came first.
		_ = l.Close()
		<-served
	})
	return ts
}

// trackingListener records accepted connections so cleanup can close them
// (and tests can drop them to simulate a relay closing idle connections).
type trackingListener struct {
	net.Listener
	ts *testServer
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.ts.mu.Lock()
	defer l.ts.mu.Unlock()
	rc := &recordingConn{Conn: c, ts: l.ts, buf: new(bytes.Buffer)}
	l.ts.conns = append(l.ts.conns, c)
	l.ts.wire = append(l.ts.wire, rc.buf)
	return rc, nil
}

// recordingConn keeps a copy of what the client sends.
type recordingConn struct {
	net.Conn
	ts  *testServer
	buf *bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.ts.mu.Lock()
	c.buf.Write(p[:n])
	c.ts.mu.Unlock()
	return n, err
}

// Commands returns the SMTP verbs the client sent on connection i (plain
// text connections only), leaving out message content.
func (ts *testServer) Commands(i int) []string {
	ts.mu.Lock()
	wire := ts.wire[i].String()
	ts.mu.Unlock()
	var verbs []string
	inData := false
	for _, line := range strings.Split(wire, "\r\n") {
		switch {
		case inData:
			inData = line != "."
		case line == "":
		default:
			verb, _, _ := strings.Cut(line, " ")
			verbs = append(verbs, strings.ToUpper(verb))
			inData = strings.EqualFold(verb, "DATA")
		}
	}
	return verbs
}

// closeConns closes every connection the server accepted.
func (ts *testServer) closeConns() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, c := range ts.conns {
		_ = c.Close()
	}
}

func (ts *testServer) Sessions() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.sessions
}

// Conns returns how many TCP connections the server accepted.
func (ts *testServer) Conns() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.conns)
}

func (ts *testServer) Messages() []received {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]received(nil), ts.msgs...)
}

func (ts *testServer) newSession(c *smtp.Conn) (smtp.Session, error) {
	ts.mu.Lock()
	ts.sessions++
	ts.mu.Unlock()
	return &testSession{ts: ts, conn: c.Conn()}, nil
}

type testSession struct {
	ts     *testServer
	conn   net.Conn
	authed bool
	from   string
	to     []string
}

var _ smtp.AuthSession = (*testSession)(nil)

func (s *testSession) AuthMechanisms() []string {
	if s.ts.opts.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *testSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != s.ts.opts.user || password != s.ts.opts.pass {
			return smtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}), nil
}

func (s *testSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.ts.opts.user != "" && !s.authed {
		return smtp.ErrAuthRequired
	}
	notify(s.ts.mailSeen)
	if s.ts.opts.onMail != nil {
		if err := s.ts.opts.onMail(s.ts, from); err != nil {
			return err
		}
	}
	s.from = from
	return nil
}

func (s *testSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.ts.opts.onRcpt != nil {
		if err := s.ts.opts.onRcpt(s.ts, to); err != nil {
			return err
		}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *testSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.ts.opts.onData != nil {
		if err := s.ts.opts.onData(s.ts, s.conn, data); err != nil {
			return err
		}
	}
	s.ts.mu.Lock()
	_, isTLS := s.conn.(*tls.Conn)
	s.ts.msgs = append(s.ts.msgs, received{From: s.from, To: s.to, Data: data, TLS: isTLS})
	s.ts.mu.Unlock()
	return nil
}

func (s *testSession) Reset() { s.from, s.to = "", nil }

func (s *testSession) Logout() error {
	notify(s.ts.logouts)
	return nil
}

// notify records an event without ever blocking the server.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// selfSigned returns a server TLS config for 127.0.0.1 and a client config
// trusting it.
func selfSigned(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "floodgate test relay"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	client = &tls.Config{RootCAs: pool}
	return server, client
}
