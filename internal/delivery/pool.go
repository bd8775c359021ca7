package delivery

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

var errNoSMTPUTF8 = errors.New("delivery: non-ASCII envelope address and the relay does not offer SMTPUTF8")

// TLSMode selects how a [Pool] protects its connections.
type TLSMode string

// TLS modes.
const (
	// TLSStartTLS connects in plain text and requires STARTTLS (RFC 3207)
	// before anything else; a relay that does not offer it is an error.
	TLSStartTLS TLSMode = "starttls"
	// TLSImplicit speaks TLS from the first byte (RFC 8314, port 465).
	TLSImplicit TLSMode = "tls"
	// TLSNone sends in plain text. It is refused unless the relay is on a
	// loopback address or PoolConfig.AllowInsecure is set.
	TLSNone TLSMode = "none"
)

// PoolConfig configures a [Pool]. Zero fields take the defaults noted.
type PoolConfig struct {
	// Addr is the relay's host:port. Required.
	Addr string
	// TLS is the protection mode; default TLSStartTLS.
	TLS TLSMode
	// TLSConfig is cloned; nil means a default config. An empty ServerName
	// is set to the host of Addr, and a zero MinVersion to TLS 1.2.
	TLSConfig *tls.Config
	// AllowInsecure permits TLS none to a relay that is not on loopback: an
	// explicit opt-in for a private network such as a compose stack.
	// Credentials are still never sent in clear text.
	AllowInsecure bool
	// Username and Password enable AUTH PLAIN, which is only ever sent over
	// TLS: with TLS none they are a configuration error.
	Username, Password string
	// HelloName is the EHLO name; default the host name of this machine.
	// (go-smtp sends "localhost" in the EHLO before STARTTLS.)
	HelloName string
	// MaxConns bounds open connections and concurrent sends; default 4.
	MaxConns int
	// IdleTimeout closes connections idle for longer; default 30s.
	IdleTimeout time.Duration
	// DialTimeout bounds setting a connection up: TCP connect, greeting,
	// EHLO, TLS and AUTH; default 30s.
	DialTimeout time.Duration
	// CommandTimeout bounds each command's reply, the body transfer and the
	// reply to the final dot; default 5m (RFC 5321 section 4.5.3.2). The
	// context passed to Send caps all of them.
	CommandTimeout time.Duration
	// Logger receives connection events at debug level; nil discards.
	// Recipients are never logged.
	Logger *slog.Logger
}

// Pool delivers messages over a bounded set of reused SMTP connections to one
// relay. It is safe for concurrent use. A connection is reused after an RSET;
// one that failed at the network level, or got 421, is discarded.
type Pool struct {
	cfg       PoolConfig
	tlsConfig *tls.Config
	log       *slog.Logger
	dialer    net.Dialer
	slots     chan struct{} // one token per Send holding a connection
	nextID    atomic.Uint64
	open      atomic.Int64 // connections set up and not yet closed

	mu     sync.Mutex
	idle   []*poolConn // most recently used last
	closed bool

	reapStop chan struct{}
	reapDone chan struct{}
}

type poolConn struct {
	id        uint64
	c         *smtp.Client
	raw       *trackedConn
	idleSince time.Time
	// helloPending is set after RSET: go-smtp's Client.Reset makes the next
	// command start with EHLO.
	helloPending bool
}

// NewPool validates cfg and returns a Pool. No connection is opened until
// the first Send.
func NewPool(cfg PoolConfig) (*Pool, error) {
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("delivery: smtp relay address %q: want host:port", cfg.Addr)
	}
	switch cfg.TLS {
	case "":
		cfg.TLS = TLSStartTLS
	case TLSStartTLS, TLSImplicit:
	case TLSNone:
		if !isLoopback(host) && !cfg.AllowInsecure {
			return nil, fmt.Errorf("delivery: smtp relay %s: TLS none is only allowed for a loopback relay (or with AllowInsecure)", cfg.Addr)
		}
	default:
		return nil, fmt.Errorf("delivery: smtp TLS mode %q: want starttls, tls or none", cfg.TLS)
	}
	if cfg.Username != "" || cfg.Password != "" {
		if cfg.TLS == TLSNone {
			return nil, errors.New("delivery: smtp credentials configured with TLS none: refusing to send them in clear text")
		}
		if cfg.Username == "" {
			return nil, errors.New("delivery: smtp password configured without a username")
		}
	}
	if cfg.HelloName == "" {
		cfg.HelloName = defaultHelloName()
	}
	if cfg.HelloName == "" || strings.ContainsAny(cfg.HelloName, " \t\r\n\x00") {
		return nil, fmt.Errorf("delivery: smtp hello name %q: want a host name", cfg.HelloName)
	}
	if cfg.MaxConns < 0 || cfg.IdleTimeout < 0 || cfg.DialTimeout < 0 || cfg.CommandTimeout < 0 {
		return nil, errors.New("delivery: smtp pool: negative limit")
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 4
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 30 * time.Second
	}
	if cfg.CommandTimeout == 0 {
		cfg.CommandTimeout = 5 * time.Minute
	}
	var tc *tls.Config
	if cfg.TLSConfig != nil {
		tc = cfg.TLSConfig.Clone()
	} else {
		tc = &tls.Config{}
	}
	if tc.ServerName == "" {
		tc.ServerName = host
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pool{
		cfg:       cfg,
		tlsConfig: tc,
		log:       log.With("relay", cfg.Addr),
		slots:     make(chan struct{}, cfg.MaxConns),
		reapStop:  make(chan struct{}),
		reapDone:  make(chan struct{}),
	}
	go p.reapLoop()
	return p, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func defaultHelloName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// Send delivers msg to the relay in one transaction: MAIL FROM from, RCPT
// TO each of to, DATA msg. Any refused recipient aborts the transaction. The
// context's deadline caps every network operation and cancelling it closes
// the connection in use. Errors are *[SendError].
func (p *Pool) Send(ctx context.Context, from string, to []string, msg []byte) error {
	if hasCtl(from) {
		return &SendError{Stage: StageMail, Err: fmt.Errorf("%w: envelope sender contains CR, LF or NUL", ErrInvalidAddress)}
	}
	if len(to) == 0 {
		return &SendError{Stage: StageRcpt, Err: fmt.Errorf("%w: no recipients", ErrInvalidAddress)}
	}
	for _, rcpt := range to {
		if rcpt == "" || hasCtl(rcpt) {
			return &SendError{Stage: StageRcpt, Err: fmt.Errorf("%w: empty envelope recipient or one with CR, LF or NUL", ErrInvalidAddress)}
		}
	}

	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return classify(ctx, StageDial, ctx.Err(), false)
	}
	defer func() { <-p.slots }()

	pc, serr := p.get(ctx)
	if serr != nil {
		return serr
	}
	unbind := pc.raw.bind(ctx)
	serr = p.transact(ctx, pc, from, to, msg)
	open := unbind()
	keep := open && contextErr(ctx) == nil && (serr == nil || reusable(serr.Err) || errors.Is(serr.Err, errNoSMTPUTF8))
	if keep && serr != nil {
		// End the refused transaction now (go-smtp's SendMail would not),
		// so the connection goes back to the pool clean and known alive.
		keep = p.reset(ctx, pc) == nil
	}
	p.put(pc, keep)
	if serr != nil {
		return serr
	}
	return nil
}

// transact runs one mail transaction on pc.
func (p *Pool) transact(ctx context.Context, pc *poolConn, from string, to []string, msg []byte) *SendError {
	pc.helloPending = false // the first command below sends any owed EHLO
	opts := &smtp.MailOptions{Size: int64(len(msg))}
	if !isASCII(from) || !allASCII(to) {
		// Noop runs a pending EHLO and reports its error, which Extension
		// would swallow.
		if err := pc.c.Noop(); err != nil {
			return classify(ctx, StageMail, err, false)
		}
		if ok, _ := pc.c.Extension("SMTPUTF8"); !ok {
			return &SendError{Stage: StageMail, Err: errNoSMTPUTF8}
		}
		opts.UTF8 = true
	}
	if err := pc.c.Mail(from, opts); err != nil {
		return classify(ctx, StageMail, err, false)
	}
	for _, rcpt := range to {
		if err := pc.c.Rcpt(rcpt, nil); err != nil {
			return classify(ctx, StageRcpt, err, false)
		}
	}
	w, err := pc.c.Data()
	if err != nil {
		return classify(ctx, StageData, err, false)
	}
	// go-smtp leaves the connection without a deadline while the body is
	// written; set one (capped by ctx).
	_ = pc.raw.SetDeadline(time.Now().Add(p.cfg.CommandTimeout))
	if _, err := w.Write(msg); err != nil {
		return classify(ctx, StageData, err, false)
	}
	pc.raw.resetWriteErr()
	if err := w.Close(); err != nil {
		// Close flushes the rest of the body and the final dot, then reads
		// the reply. A failed write means the dot never fully left; a
		// failed read after a complete write means the relay may have
		// accepted the message without us hearing about it.
		var smtpErr *smtp.SMTPError
		afterDot := !errors.As(err, &smtpErr) && !pc.raw.wroteErr()
		return classify(ctx, StageData, err, afterDot)
	}
	return nil
}

// get returns a ready connection: a pooled one that answers RSET, or a new
// one. A pooled connection the relay has closed while idle is replaced by a
// fresh dial, once, before MAIL is sent.
func (p *Pool) get(ctx context.Context) (*poolConn, *SendError) {
	if pc, err := p.take(); err != nil {
		return nil, err
	} else if pc != nil {
		err := p.probe(ctx, pc)
		if err == nil {
			return pc, nil
		}
		p.discard(pc)
		if contextErr(ctx) != nil {
			return nil, classify(ctx, StageDial, err, false)
		}
		p.log.Debug("smtp pooled connection is stale, redialling", "conn", pc.id, "error", err)
	}
	return p.dial(ctx)
}

// take pops the most recently used idle connection, or returns nil.
func (p *Pool) take() (*poolConn, *SendError) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, &SendError{Stage: StageDial, Temporary: true, Err: ErrPoolClosed}
	}
	if n := len(p.idle); n > 0 {
		pc := p.idle[n-1]
		p.idle = p.idle[:n-1]
		return pc, nil
	}
	return nil, nil
}

// put returns pc to the pool, or closes it when keep is false or the pool is
// closed.
func (p *Pool) put(pc *poolConn, keep bool) {
	if keep {
		p.mu.Lock()
		if !p.closed {
			pc.idleSince = time.Now()
			p.idle = append(p.idle, pc)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		p.quit(pc)
		return
	}
	p.log.Debug("smtp connection discarded", "conn", pc.id)
	p.discard(pc)
}

// discard closes pc without a QUIT.
func (p *Pool) discard(pc *poolConn) {
	_ = pc.c.Close()
	p.open.Add(-1)
}

// reset sends RSET, ending the current transaction.
func (p *Pool) reset(ctx context.Context, pc *poolConn) error {
	return p.run(ctx, pc, func() error {
		err := pc.c.Reset()
		pc.helloPending = err == nil
		return err
	})
}

// probe checks that a pooled connection is alive and resets its state before
// reuse: RSET, or EHLO when an RSET already ran and go-smtp owes an EHLO
// anyway (EHLO resets the state like RSET, RFC 5321 section 4.1.4), which
// saves two round trips after a refused transaction.
func (p *Pool) probe(ctx context.Context, pc *poolConn) error {
	if !pc.helloPending {
		return p.reset(ctx, pc)
	}
	return p.run(ctx, pc, func() error {
		err := pc.c.Hello(p.cfg.HelloName)
		pc.helloPending = false
		return err
	})
}

// run calls f with pc bound to ctx.
func (p *Pool) run(ctx context.Context, pc *poolConn, f func() error) error {
	unbind := pc.raw.bind(ctx)
	err := f()
	if !unbind() && err == nil {
		err = contextErr(ctx)
	}
	return err
}

// dial opens and sets up a connection within DialTimeout.
func (p *Pool) dial(ctx context.Context) (*poolConn, *SendError) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()

	nc, err := p.dialer.DialContext(ctx, "tcp", p.cfg.Addr)
	if err != nil {
		return nil, classify(ctx, StageDial, err, false)
	}
	raw := &trackedConn{Conn: nc}
	unbind := raw.bind(ctx)
	c, stage, err := p.setup(ctx, raw)
	open := unbind()
	if err == nil && !open {
		err = contextErr(ctx)
	}
	if err != nil {
		_ = raw.Close()
		return nil, classify(ctx, stage, err, false)
	}
	c.CommandTimeout = p.cfg.CommandTimeout
	c.SubmissionTimeout = p.cfg.CommandTimeout
	pc := &poolConn{id: p.nextID.Add(1), c: c, raw: raw}
	p.open.Add(1)
	p.log.Debug("smtp connection opened", "conn", pc.id, "tls", string(p.cfg.TLS))
	return pc, nil
}

// setup runs greeting, TLS, EHLO and AUTH on raw and returns the stage that
// failed with the error.
func (p *Pool) setup(ctx context.Context, raw *trackedConn) (*smtp.Client, string, error) {
	var (
		c   *smtp.Client
		err error
	)
	helloStage := StageDial
	switch p.cfg.TLS {
	case TLSImplicit:
		tc := tls.Client(raw, p.tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, StageTLS, err
		}
		c = smtp.NewClient(tc)
	case TLSStartTLS:
		// Greeting, EHLO, STARTTLS; the handshake itself runs with the
		// EHLO that follows, so that EHLO belongs to the tls stage.
		c, err = smtp.NewClientStartTLS(raw, p.tlsConfig)
		if err != nil {
			return nil, StageTLS, err
		}
		helloStage = StageTLS
	default:
		c = smtp.NewClient(raw)
	}
	c.CommandTimeout = p.cfg.CommandTimeout
	if err := c.Hello(p.cfg.HelloName); err != nil {
		return nil, helloStage, err
	}
	if p.cfg.TLS != TLSNone {
		if _, ok := c.TLSConnectionState(); !ok {
			return nil, StageTLS, errors.New("delivery: connection is not encrypted")
		}
	}
	if p.cfg.Username != "" {
		if !c.SupportsAuth(sasl.Plain) {
			return nil, StageAuth, errors.New("delivery: relay does not offer AUTH PLAIN")
		}
		if err := c.Auth(sasl.NewPlainClient("", p.cfg.Username, p.cfg.Password)); err != nil {
			return nil, StageAuth, err
		}
	}
	return c, "", nil
}

// quit ends pc politely, bounded by a short timeout.
func (p *Pool) quit(pc *poolConn) {
	ctx, cancel := context.WithTimeout(context.Background(), min(p.cfg.CommandTimeout, 5*time.Second))
	defer cancel()
	unbind := pc.raw.bind(ctx)
	_ = pc.c.Quit()
	unbind()
	p.discard(pc)
	p.log.Debug("smtp connection closed", "conn", pc.id)
}

// reapLoop closes connections idle for longer than IdleTimeout.
func (p *Pool) reapLoop() {
	defer close(p.reapDone)
	t := time.NewTicker(max(p.cfg.IdleTimeout/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.reapStop:
			return
		case now := <-t.C:
			for _, pc := range p.expired(now) {
				p.quit(pc)
			}
		}
	}
}

func (p *Pool) expired(now time.Time) []*poolConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	var old []*poolConn
	keep := p.idle[:0]
	for _, pc := range p.idle {
		if now.Sub(pc.idleSince) >= p.cfg.IdleTimeout {
			old = append(old, pc)
		} else {
			keep = append(keep, pc)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	return old
}

// Close sends QUIT on idle connections and makes later Sends fail with
// [ErrPoolClosed]. Sends in progress finish, then close their connections.
// Close is idempotent.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()

	close(p.reapStop)
	<-p.reapDone
	for _, pc := range idle {
		p.quit(pc)
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] > 127 {
			return false
		}
	}
	return true
}

func allASCII(ss []string) bool {
	for _, s := range ss {
		if !isASCII(s) {
			return false
		}
	}
	return true
}
