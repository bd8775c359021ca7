package smtpsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/time/rate"
)

// Defaults applied by [New] to zero [Config] fields.
const (
	DefaultSMTPAddr        = "127.0.0.1:2525"
	DefaultHTTPAddr        = "127.0.0.1:8025"
	DefaultMaxMessages     = 10000
	DefaultSlowDelay       = 2 * time.Second
	DefaultDomain          = "smtpsink.local"
	DefaultMaxMessageBytes = 10 << 20
	DefaultMaxRecipients   = 100
	DefaultMaxSessions     = 1000
)

// Connection timeouts: long enough for any test, short enough that a client
// that vanished does not hold a session slot for ever.
const (
	maxLineLength = 1000
	readTimeout   = 5 * time.Minute
	writeTimeout  = time.Minute
)

// ErrServerClosed is returned by [Server.Start] and [Server.Wait] once
// [Server.Shutdown] has been called.
var ErrServerClosed = errors.New("smtpsink: server closed")

// ErrInvalidConfig is wrapped by [New] when a [Config] field is out of range.
var ErrInvalidConfig = errors.New("smtpsink: invalid config")

// Config configures a [Server]. The zero value is a working loopback sink.
type Config struct {
	// SMTPAddr is the SMTP listen address; default "127.0.0.1:2525".
	// Use "127.0.0.1:0" for a free port and read [Server.SMTPAddr].
	SMTPAddr string
	// HTTPAddr is the API and web page listen address; default
	// "127.0.0.1:8025"; "-" disables the HTTP listener ([Server.Handler]
	// still serves the API).
	HTTPAddr string
	// Keys holds the DKIM public keys; nil means none, so every signature is
	// a permerror for want of a key.
	Keys *Keys
	// MaxMessages is the number of messages kept; the oldest is dropped to
	// make room. Default 10000.
	MaxMessages int
	// RejectRatio is the share of recipients, in [0, 1], answered with a
	// random 451 at RCPT. 0 disables it.
	RejectRatio float64
	// MaxRate is the number of messages per second accepted at MAIL across
	// all sessions; beyond it the sink answers 421 and closes the
	// connection. The burst is one second's worth. 0 means unlimited.
	MaxRate float64
	// SlowDelay is how long the reply to DATA is held for a slow+ recipient;
	// default 2s.
	SlowDelay time.Duration
	// Domain is the name in the greeting; default "smtpsink.local".
	Domain string
	// MaxMessageBytes caps a message's size; larger ones get 552 5.3.4.
	// Default 10 MiB.
	MaxMessageBytes int64
	// MaxRecipients caps recipients per message; more get 452 4.5.3.
	// Default 100.
	MaxRecipients int
	// MaxSessions caps concurrent SMTP connections; more are answered
	// 421 4.3.2 and closed. Default 1000.
	MaxSessions int
	// BounceRelay is the HOST:PORT of the SMTP server that receives the
	// reports of bounce+ and complain+ recipients, such as floodgate's
	// bounce receiver. They are sent from the null reverse path to the
	// original envelope sender, in plain SMTP without AUTH, in the
	// background. Empty keeps them in the API only ([Server.Reports]) until
	// [Server.SetBounceRelay] names one.
	BounceRelay string
	// Logger receives the sink's logs; nil discards them. Recipients are
	// logged only as a hash (rcpt_hash).
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.SMTPAddr == "" {
		c.SMTPAddr = DefaultSMTPAddr
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.MaxMessages == 0 {
		c.MaxMessages = DefaultMaxMessages
	}
	if c.SlowDelay == 0 {
		c.SlowDelay = DefaultSlowDelay
	}
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxRecipients == 0 {
		c.MaxRecipients = DefaultMaxRecipients
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.MaxMessages < 0:
		return c, fmt.Errorf("%w: MaxMessages %d is negative", ErrInvalidConfig, c.MaxMessages)
	case math.IsNaN(c.RejectRatio) || c.RejectRatio < 0 || c.RejectRatio > 1:
		return c, fmt.Errorf("%w: RejectRatio %v is outside [0, 1]", ErrInvalidConfig, c.RejectRatio)
	case math.IsNaN(c.MaxRate) || math.IsInf(c.MaxRate, 0) || c.MaxRate < 0:
		return c, fmt.Errorf("%w: MaxRate %v is not a non-negative number", ErrInvalidConfig, c.MaxRate)
	case c.SlowDelay < 0:
		return c, fmt.Errorf("%w: SlowDelay %v is negative", ErrInvalidConfig, c.SlowDelay)
	case c.MaxMessageBytes < 0:
		return c, fmt.Errorf("%w: MaxMessageBytes %d is negative", ErrInvalidConfig, c.MaxMessageBytes)
	case c.MaxRecipients < 0:
		return c, fmt.Errorf("%w: MaxRecipients %d is negative", ErrInvalidConfig, c.MaxRecipients)
	case c.MaxSessions < 0:
		return c, fmt.Errorf("%w: MaxSessions %d is negative", ErrInvalidConfig, c.MaxSessions)
	}
	if c.BounceRelay != "" {
		if _, _, err := net.SplitHostPort(c.BounceRelay); err != nil {
			return c, fmt.Errorf("%w: BounceRelay %q is not HOST:PORT: %v", ErrInvalidConfig, c.BounceRelay, err)
		}
	}
	return c, nil
}

// Server is an SMTP sink with an HTTP API. Create it with [New], then
// [Server.Start] it; its methods are safe for concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	store    *store
	verifier *verifier
	conns    *connTracker
	limiter  *rate.Limiter // nil when MaxRate is 0
	smtp     *smtp.Server
	handler  http.Handler
	bufs     sync.Pool // *bytes.Buffer to read messages into; the stored copy is exactly sized

	reports     *reportStore
	relay       atomic.Pointer[string] // the bounce relay; "" records reports only
	reportQ     chan *Report
	abort       context.Context    // ends report delivery when shutdown is forced
	abortCancel context.CancelFunc // cancels abort
	delivering  sync.WaitGroup     // the report delivery goroutine

	mu      sync.Mutex // guards the lifecycle fields below
	started bool
	smtpLn  net.Listener
	httpLn  net.Listener
	httpSrv *http.Server

	serving sync.WaitGroup // the Serve goroutines
	bg      sync.WaitGroup // short-lived helpers, such as refusing a connection

	done         chan struct{} // closed when shutdown begins
	shutdownOnce sync.Once
	drained      chan struct{} // closed when shutdown has finished
	drainErr     error
}

// New checks cfg, applies its defaults and returns a server that is not yet
// listening.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		store:    newStore(cfg.MaxMessages, max(10*cfg.MaxMessages, 1024)),
		verifier: &verifier{keys: cfg.Keys},
		conns:    &connTracker{conns: make(map[*trackedConn]struct{}), max: cfg.MaxSessions},
		reports:  &reportStore{},
		done:     make(chan struct{}),
		drained:  make(chan struct{}),
	}
	s.abort, s.abortCancel = context.WithCancel(context.Background())
	s.relay.Store(&cfg.BounceRelay)
	s.reportQ = make(chan *Report, reportQueueSize)
	if cfg.MaxRate > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(cfg.MaxRate), max(1, int(math.Ceil(cfg.MaxRate))))
	}

	srv := smtp.NewServer(backend{s})
	srv.Domain = cfg.Domain
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = cfg.MaxRecipients
	// RFC 5321 section 4.5.3.1.6, strictly (go-smtp allows twice as much):
	// a sender whose lines exceed it has a bug real relays may punish.
	srv.MaxLineLength = maxLineLength
	srv.ReadTimeout = readTimeout
	srv.WriteTimeout = writeTimeout
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = smtpLogger{s.log}
	s.smtp = srv
	s.handler = s.newHandler()
	return s, nil
}

// Start binds the SMTP listener and, unless disabled, the HTTP listener,
// then serves both in the background. It logs a warning when a listener is
// not on loopback: the sink accepts mail from, and shows it to, anyone who
// can reach it.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
		return ErrServerClosed
	default:
	}
	if s.started {
		return errors.New("smtpsink: server already started")
	}

	// No TCP keep-alive on SMTP connections: the read timeout already ends
	// dead sessions, and enabling it costs four system calls per connection.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", s.cfg.SMTPAddr)
	if err != nil {
		return fmt.Errorf("smtpsink: listen SMTP: %w", err)
	}
	var hln net.Listener
	if s.cfg.HTTPAddr != "-" {
		hln, err = net.Listen("tcp", s.cfg.HTTPAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("smtpsink: listen HTTP: %w", err)
		}
	}
	s.started = true
	s.smtpLn = ln
	s.verifier.start(runtime.GOMAXPROCS(0))
	if relay := s.bounceRelay(); relay != "" {
		s.warnIfRelayExposed(relay)
	}
	s.delivering.Go(s.deliverReports)
	s.warnIfExposed("smtp", ln.Addr())
	s.serving.Go(func() {
		// Shutdown closes the listener itself, which Serve may see first.
		err := s.smtp.Serve(&trackingListener{Listener: ln, s: s})
		if err != nil && !(s.closing() && errors.Is(err, net.ErrClosed)) {
			s.log.Error("smtpsink: SMTP server stopped", "err", err)
		}
	})
	if hln != nil {
		s.httpLn = hln
		s.httpSrv = &http.Server{
			Handler:           s.handler,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		}
		s.warnIfExposed("http", hln.Addr())
		srv := s.httpSrv
		s.serving.Go(func() {
			if err := srv.Serve(hln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("smtpsink: HTTP server stopped", "err", err)
			}
		})
	}
	s.log.Info("smtpsink: listening", "smtp", ln.Addr().String(), "http", s.httpAddrLocked())
	return nil
}

// SetBounceRelay sets [Config].BounceRelay, for a relay that starts after
// the sink (it sends to the sink, and the sink's reports go back to it).
// Reports generated from then on are delivered to addr; "" records them
// only. It returns an error wrapping [ErrInvalidConfig] when addr is not
// HOST:PORT.
func (s *Server) SetBounceRelay(addr string) error {
	if addr != "" {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%w: BounceRelay %q is not HOST:PORT: %v", ErrInvalidConfig, addr, err)
		}
		s.warnIfRelayExposed(addr)
	}
	s.relay.Store(&addr)
	return nil
}

// bounceRelay returns the relay reports are delivered to, "" for none.
func (s *Server) bounceRelay() string { return *s.relay.Load() }

func (s *Server) warnIfRelayExposed(relay string) {
	host, _, _ := net.SplitHostPort(relay)
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		s.log.Warn("smtpsink: the bounce relay is not on loopback; reports go to it in plain SMTP", "relay", relay)
	}
}

func (s *Server) warnIfExposed(what string, a net.Addr) {
	if ta, ok := a.(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		s.log.Warn("smtpsink: listening on a non-loopback address; anyone who can reach it can send mail and read every stored message",
			"listener", what, "addr", a.String())
	}
}

// SMTPAddr returns the address the SMTP listener is bound to, or "" before
// [Server.Start].
func (s *Server) SMTPAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.smtpLn == nil {
		return ""
	}
	return s.smtpLn.Addr().String()
}

// HTTPAddr returns the address the HTTP listener is bound to, or "" before
// [Server.Start] or when HTTP is disabled.
func (s *Server) HTTPAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.httpAddrLocked()
}

func (s *Server) httpAddrLocked() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// Handler returns the HTTP API and web page, for mounting on another server
// when [Config].HTTPAddr is "-".
func (s *Server) Handler() http.Handler { return s.handler }

// Shutdown stops the server gracefully, in this order:
//
//  1. New SMTP connections and new transactions are refused with 421, and
//     [Server.Wait] calls return [ErrServerClosed]; live page updates end.
//  2. Idle SMTP connections are closed. A connection inside a transaction
//     is closed right after the reply to its current message; a reply held
//     by the slow+ fault is sent at once.
//  3. The HTTP server stops, letting requests in flight finish.
//  4. Reports already queued for the bounce relay are delivered, with
//     their retries.
//
// If ctx ends first, every remaining connection is closed, reports not yet
// delivered fail, and Shutdown returns ctx.Err(). Stored messages stay readable through the methods.
// Shutdown is idempotent: later calls wait for the first to finish and
// return its result. It works whether or not the server was started.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		close(s.done)
		go s.drain()
	})
	select {
	case <-s.drained:
		return s.drainErr
	case <-ctx.Done():
		s.forceClose()
		<-s.drained
		return ctx.Err()
	}
}

func (s *Server) drain() {
	defer close(s.drained)
	s.mu.Lock()
	smtpLn, httpSrv := s.smtpLn, s.httpSrv
	s.mu.Unlock()

	s.conns.beginClose()
	if smtpLn != nil {
		smtpLn.Close()
		// Serve may not have registered the listener yet; go-smtp then
		// returns as soon as Accept fails on the closed listener.
		if err := s.smtp.Shutdown(context.Background()); err != nil && !errors.Is(err, net.ErrClosed) {
			s.drainErr = fmt.Errorf("smtpsink: shutdown SMTP: %w", err)
		}
	}
	if httpSrv != nil {
		if err := httpSrv.Shutdown(context.Background()); err != nil && !errors.Is(err, http.ErrServerClosed) && s.drainErr == nil {
			s.drainErr = fmt.Errorf("smtpsink: shutdown HTTP: %w", err)
		}
	}
	s.serving.Wait()
	s.bg.Wait()
	// No session runs any more, so nothing can ask for a verification or
	// queue a report.
	s.verifier.stop()
	close(s.reportQ)
	s.delivering.Wait()
	s.abortCancel()
}

func (s *Server) forceClose() {
	s.abortCancel()
	s.conns.closeAll()
	s.mu.Lock()
	httpSrv := s.httpSrv
	s.mu.Unlock()
	if httpSrv != nil {
		httpSrv.Close()
	}
}

func (s *Server) closing() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Messages returns the stored messages matching q, newest first.
func (s *Server) Messages(q Query) []Message { return s.store.query(q) }

// Message returns the stored message with the given ID and reports whether
// it is still held.
func (s *Server) Message(id string) (Message, bool) { return s.store.get(id) }

// Detail returns the stored message with the given ID with its decoded
// content, and reports whether it is still held.
func (s *Server) Detail(id string) (Detail, bool) {
	m, ok := s.store.get(id)
	if !ok {
		return Detail{}, false
	}
	return Detail{Message: m, Content: Decode(m.Raw)}, true
}

// Delete deletes the stored message with the given ID and reports whether
// it was held. Counters are kept.
func (s *Server) Delete(id string) bool { return s.store.remove(id) }

// Stats returns the counters.
func (s *Server) Stats() Stats { return s.store.snapshot() }

// Reset deletes every stored message and report and zeroes the counters,
// including the memory of Message-IDs seen, so a test or drill starts from a
// clean slate.
func (s *Server) Reset() {
	s.reports.reset()
	s.store.reset()
}

// Wait blocks until at least n stored messages match q (its Limit is not
// counted against n), then returns Messages(q). It wakes on each change
// rather than polling, and returns early with ctx.Err() when ctx ends or
// [ErrServerClosed] when the server shuts down.
func (s *Server) Wait(ctx context.Context, n int, q Query) ([]Message, error) {
	var msgs []Message
	err := s.waitChange(ctx, func() bool {
		s.store.mu.Lock()
		defer s.store.mu.Unlock()
		if s.store.countLocked(q) < n {
			return false
		}
		msgs = s.store.queryLocked(q)
		return true
	})
	if err != nil {
		return nil, err
	}
	return msgs, nil
}

// waitChange calls ready until it reports true, waking on each change to
// the store (a message stored, a report's result) rather than polling. The
// watch is taken before ready runs, so a change in between is not missed.
// It returns ctx.Err() when ctx ends and [ErrServerClosed] at shutdown.
func (s *Server) waitChange(ctx context.Context, ready func() bool) error {
	for {
		s.store.mu.Lock()
		changed := s.store.watchLocked()
		s.store.mu.Unlock()
		if ready() {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return ErrServerClosed
		}
	}
}

// connTracker knows every open SMTP connection, so shutdown can close idle
// ones at once, busy ones after their reply, and all of them on timeout.
type connTracker struct {
	mu      sync.Mutex
	conns   map[*trackedConn]struct{}
	max     int
	closing bool // no new connections; idle ones are closed
	forced  bool // every connection is closed
}

type trackedConn struct {
	net.Conn
	t    *connTracker
	busy bool // inside a transaction; guarded by t.mu
	once sync.Once

	wmu     sync.Mutex
	pending []byte // continuation lines of a multi-line reply not yet sent

	// The deadlines last set, in Unix nanoseconds; 0 for none.
	readDeadline, writeDeadline atomic.Int64
}

// deadlineSlack is how far a deadline may lag behind the one asked for.
// go-smtp moves the read deadline before every command line and the write
// deadline before every reply, each time re-arming a runtime timer; moving
// them only when they would move by more than this saves that work on all
// but about one command a second, and a timeout of minutes ends at most a
// second early.
const deadlineSlack = time.Second

// SetReadDeadline moves the read deadline unless it would move later by
// less than deadlineSlack.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	return setLazily(&c.readDeadline, t, c.Conn.SetReadDeadline)
}

// SetWriteDeadline moves the write deadline unless it would move later by
// less than deadlineSlack.
func (c *trackedConn) SetWriteDeadline(t time.Time) error {
	return setLazily(&c.writeDeadline, t, c.Conn.SetWriteDeadline)
}

// SetDeadline moves both deadlines.
func (c *trackedConn) SetDeadline(t time.Time) error {
	n := t.UnixNano()
	if t.IsZero() {
		n = 0
	}
	c.readDeadline.Store(n)
	c.writeDeadline.Store(n)
	return c.Conn.SetDeadline(t)
}

func setLazily(cur *atomic.Int64, t time.Time, set func(time.Time) error) error {
	var n int64
	if !t.IsZero() {
		n = t.UnixNano()
		if old := cur.Load(); old != 0 && n >= old && n-old < int64(deadlineSlack) {
			return nil
		}
	}
	cur.Store(n)
	return set(t)
}

// maxPending bounds the continuation lines held back by Write.
const maxPending = 4096

// Write sends a reply line. go-smtp flushes every line it writes, which
// costs the nine-line EHLO reply nine system calls and nine TCP segments;
// continuation lines ("250-…", RFC 5321 section 4.2.1) are therefore held
// and sent together with the final line of their reply in one write.
func (c *trackedConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if isContinuationLine(p) && len(c.pending)+len(p) <= maxPending {
		c.pending = append(c.pending, p...) // p is go-smtp's buffer: copy it
		return len(p), nil
	}
	if len(c.pending) == 0 {
		return c.Conn.Write(p)
	}
	bufs := net.Buffers{c.pending, p}
	_, err := bufs.WriteTo(c.Conn)
	c.pending = c.pending[:0]
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func isContinuationLine(p []byte) bool {
	return len(p) >= 6 && p[3] == '-' && p[len(p)-2] == '\r' && p[len(p)-1] == '\n' &&
		'2' <= p[0] && p[0] <= '5' && isDigit(p[1]) && isDigit(p[2])
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}

// admit registers c, or returns a refusal reply when the sink is full or
// shutting down.
func (t *connTracker) admit(c net.Conn) (*trackedConn, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closing || t.forced:
		return nil, "421 4.3.2 Service shutting down\r\n"
	case len(t.conns) >= t.max:
		return nil, "421 4.3.2 Too many sessions, try again later\r\n"
	}
	tc := &trackedConn{Conn: c, t: t}
	t.conns[tc] = struct{}{}
	return tc, ""
}

// setBusy marks c in or out of a transaction and reports whether the sink
// still takes transactions. Entering one while shutting down is refused
// (c stays idle); leaving one then closes c.
func (t *connTracker) setBusy(c *trackedConn, busy bool) (ok bool) {
	if c == nil {
		return true
	}
	t.mu.Lock()
	stop := t.closing || t.forced
	if !stop || !busy {
		c.busy = busy
	}
	t.mu.Unlock()
	if stop && !busy {
		c.Close()
	}
	return !stop
}

func (t *connTracker) beginClose() {
	t.mu.Lock()
	t.closing = true
	var idle []*trackedConn
	for c := range t.conns {
		if !c.busy || t.forced {
			idle = append(idle, c)
		}
	}
	t.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

func (t *connTracker) closeAll() {
	t.mu.Lock()
	t.forced = true
	all := make([]*trackedConn, 0, len(t.conns))
	for c := range t.conns {
		all = append(all, c)
	}
	t.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
}

// trackingListener registers accepted connections and refuses those beyond
// the session cap with a 421 greeting, as RFC 5321 section 3.1 allows.
type trackingListener struct {
	net.Listener
	s *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc, refusal := l.s.conns.admit(c)
		if tc != nil {
			return tc, nil
		}
		l.s.store.countRejected()
		l.s.bg.Go(func() {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte(refusal))
			c.Close()
		})
	}
}

// smtpLogger feeds go-smtp's internal error log into slog. Connection
// errors are routine for a sink (clients vanish); panics are not.
type smtpLogger struct{ l *slog.Logger }

func (g smtpLogger) Printf(format string, v ...any) { g.log(fmt.Sprintf(format, v...)) }
func (g smtpLogger) Println(v ...any)               { g.log(strings.TrimSuffix(fmt.Sprintln(v...), "\n")) }

func (g smtpLogger) log(msg string) {
	if strings.HasPrefix(msg, "panic") {
		g.l.Error("smtpsink: go-smtp: " + msg)
		return
	}
	g.l.Debug("smtpsink: go-smtp: " + msg)
}

var _ smtp.Logger = smtpLogger{}
