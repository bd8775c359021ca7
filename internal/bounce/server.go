package bounce

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/time/rate"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/verp"
	"github.com/floodgate-dev/floodgate/queue"
)

// Recorder applies and counts reports; [*guard.Guard] implements it.
type Recorder interface {
	RecordBounce(ctx context.Context, f guard.Bounce) (guard.BounceResult, error)
	RefuseBounce(ctx context.Context, source, reason string) error
}

var _ Recorder = (*guard.Guard)(nil)

// Defaults of [ServerConfig].
const (
	DefaultAddr            = "127.0.0.1:2526"
	DefaultMaxMessageBytes = 256 << 10
	DefaultMaxRecipients   = 5
	DefaultMaxConns        = 100
	DefaultRate            = 50
	DefaultClientRate      = 2
	DefaultTimeout         = 30 * time.Second
	DefaultMaxSession      = 5 * time.Minute
)

// maxClients bounds the per-client rate limiters kept; beyond it they are
// forgotten all at once, which at worst gives every client a fresh burst.
const maxClients = 4096

// ServerConfig configures a [Server]. Zero fields take the defaults.
type ServerConfig struct {
	// Addr is the SMTP listen address; default "127.0.0.1:2526". The bounce
	// domain's MX must reach it (":25" behind it, on a public host).
	Addr string
	// Codec verifies the bounce addresses; only mail to one of its tokens
	// is accepted. Required.
	Codec *verp.Codec
	// Recorder applies and counts what arrives. Required.
	Recorder Recorder
	// Policy gives the recipient rules the workers minted tokens with;
	// nil means guard.DefaultPolicy().
	Policy *guard.Policy
	// Hostname is the name in the greeting; default the codec's domain.
	Hostname string
	// MaxMessageBytes caps a message (552 5.3.4 beyond, counted
	// too_large); default 256 KiB, ample for a report with the original
	// message.
	MaxMessageBytes int64
	// MaxRecipients caps recipients per message; default 5.
	MaxRecipients int
	// MaxConns caps concurrent connections (421 beyond); default 100.
	MaxConns int
	// Rate caps messages per second over all clients (451 at MAIL beyond,
	// counted rate); default 50, burst twice that.
	Rate float64
	// ClientRate caps new connections per second per client IP (421
	// beyond, counted rate); default 2, burst 10.
	ClientRate float64
	// Timeout is the read and write timeout of each command; default 30s.
	Timeout time.Duration
	// MaxSession bounds a whole connection; default 5m.
	MaxSession time.Duration
	// Logger receives one line per report and per refusal (no address or
	// token); nil discards.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Server is the bounce receiver: an SMTP server that accepts mail only for
// valid return paths, reads the reports and records them. Its methods are
// safe for concurrent use.
type Server struct {
	cfg     ServerConfig
	smtp    *smtp.Server
	limiter *rate.Limiter

	mu      sync.Mutex
	ln      net.Listener
	clients map[string]*rate.Limiter
	conns   int
	serving sync.WaitGroup
}

// NewServer checks cfg and returns a server that is not yet listening.
func NewServer(cfg ServerConfig) (*Server, error) {
	switch {
	case cfg.Codec == nil:
		return nil, errors.New("bounce: ServerConfig.Codec is required")
	case cfg.Recorder == nil:
		return nil, errors.New("bounce: ServerConfig.Recorder is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Policy == nil {
		cfg.Policy = guard.DefaultPolicy()
	}
	if cfg.Hostname == "" {
		cfg.Hostname = cfg.Codec.Domain()
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.MaxRecipients <= 0 {
		cfg.MaxRecipients = DefaultMaxRecipients
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.ClientRate <= 0 {
		cfg.ClientRate = DefaultClientRate
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxSession <= 0 {
		cfg.MaxSession = DefaultMaxSession
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, limiter: rate.NewLimiter(rate.Limit(cfg.Rate), max(1, int(2*cfg.Rate))), clients: map[string]*rate.Limiter{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &session{s: s}, nil }))
	srv.Domain = cfg.Hostname
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = cfg.MaxRecipients
	srv.MaxLineLength = 1000
	srv.ReadTimeout = cfg.Timeout
	srv.WriteTimeout = cfg.Timeout
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = smtpLog{cfg.Logger}
	s.smtp = srv
	return s, nil
}

// Start binds the listener and serves in the background.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("bounce: listen: %w", err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.serving.Go(func() {
		if err := s.smtp.Serve(&limitListener{Listener: ln, s: s}); err != nil && !errors.Is(err, smtp.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.cfg.Logger.Error("bounce receiver stopped", "err", err)
		}
	})
	s.cfg.Logger.Info("bounce receiver listening", "addr", ln.Addr().String(), "domain", s.cfg.Codec.Domain())
	return nil
}

// Addr returns the address the listener is bound to, or "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Shutdown stops accepting connections and waits for the open ones to end
// their current command; when ctx ends first it closes them and returns
// ctx.Err(). It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.smtp.Shutdown(ctx)
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	if err != nil {
		_ = s.smtp.Close()
	}
	s.serving.Wait()
	return err
}

// refuse counts a refused report; a Redis error is only logged, the
// refusal stands.
func (s *Server) refuse(ctx context.Context, reason string) {
	s.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "bounce refused", slog.String("source", guard.SourceDSN), slog.String("reason", reason))
	if err := s.cfg.Recorder.RefuseBounce(ctx, guard.SourceDSN, reason); err != nil {
		s.cfg.Logger.Warn("bounce: count refusal", "err", err)
	}
}

// allowClient reports whether a new connection from ip is within the
// per-client rate.
func (s *Server) allowClient(ip string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.clients[ip]
	if l == nil {
		if len(s.clients) >= maxClients {
			clear(s.clients)
		}
		l = rate.NewLimiter(rate.Limit(s.cfg.ClientRate), 10)
		s.clients[ip] = l
	}
	return l.Allow()
}

// limitListener refuses connections beyond MaxConns or a client's rate
// with a 421 greeting, and ends every connection after MaxSession.
type limitListener struct {
	net.Listener
	s *Server
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		s := l.s
		s.mu.Lock()
		full := s.conns >= s.cfg.MaxConns
		if !full {
			s.conns++
		}
		s.mu.Unlock()
		reason := ""
		switch {
		case full:
			reason = "too_many_connections"
		case !s.allowClient(ip):
			reason = "rate"
			s.mu.Lock()
			s.conns--
			s.mu.Unlock()
		}
		if reason != "" {
			go func() {
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = io.WriteString(c, "421 4.7.0 Too busy, try again later\r\n")
				_ = c.Close()
				s.refuse(context.Background(), reason)
			}()
			continue
		}
		return newSessionConn(c, s), nil
	}
}

// sessionConn releases its slot once and is closed after MaxSession.
type sessionConn struct {
	net.Conn
	s     *Server
	once  sync.Once
	timer *time.Timer
}

func newSessionConn(c net.Conn, s *Server) *sessionConn {
	sc := &sessionConn{Conn: c, s: s}
	sc.timer = time.AfterFunc(s.cfg.MaxSession, func() { _ = sc.Close() })
	return sc
}

func (c *sessionConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.timer.Stop()
		c.s.mu.Lock()
		c.s.conns--
		c.s.mu.Unlock()
	})
	return err
}

// session is one SMTP connection's transaction state.
type session struct {
	s      *Server
	tokens []verp.Token
}

var _ smtp.Session = (*session)(nil)

func (ss *session) Reset()        { ss.tokens = nil }
func (ss *session) Logout() error { return nil }

func (ss *session) Mail(string, *smtp.MailOptions) error {
	if !ss.s.limiter.Allow() {
		ss.s.refuse(context.Background(), "rate")
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many messages, try again later"}
	}
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	tok, err := ss.s.cfg.Codec.Parse(to, ss.s.cfg.Now())
	if err == nil {
		ss.tokens = append(ss.tokens, tok)
		return nil
	}
	ctx := context.Background()
	if errors.Is(err, verp.ErrNotVERP) && !ss.s.ownDomain(to) {
		ss.s.refuse(ctx, "relay")
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relaying denied"}
	}
	ss.s.refuse(ctx, verp.Reason(err))
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such bounce address"}
}

// ownDomain reports whether addr is at the bounce domain.
func (s *Server) ownDomain(addr string) bool {
	addr = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(addr), "<"), ">")
	i := strings.LastIndexByte(addr, '@')
	return i >= 0 && strings.EqualFold(strings.TrimSuffix(addr[i+1:], "."), s.cfg.Codec.Domain())
}

func (ss *session) Data(r io.Reader) error {
	ctx := context.Background()
	b, err := io.ReadAll(r)
	if err != nil {
		if errors.Is(err, smtp.ErrDataTooLarge) {
			ss.s.refuse(ctx, "too_large")
		}
		return err
	}
	rep, err := Parse(bytes.NewReader(b))
	if err != nil {
		ss.s.refuse(ctx, "not_a_message")
		return nil
	}
	for _, tok := range ss.tokens {
		if err := ss.s.apply(ctx, tok, rep); err != nil {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try again later"}
		}
	}
	return nil
}

// apply records what rep says about the email of tok. Only the recipient
// the token was minted for counts: a report naming anybody else changes
// nothing.
func (s *Server) apply(ctx context.Context, tok verp.Token, rep *Report) error {
	source := guard.SourceDSN
	if rep.Format == FormatARF {
		source = guard.SourceARF
	}
	switch rep.Format {
	case FormatAutoReply:
		s.refuse(ctx, "auto_reply")
		return nil
	case FormatUnknown:
		s.refuse(ctx, "unrecognised")
		return nil
	}
	var match *Recipient
	named := false
	for i := range rep.Recipients {
		r := &rep.Recipients[i]
		named = named || r.Address != ""
		if s.matches(tok, r.Address) || s.matches(tok, r.Original) {
			match = r
			break
		}
	}
	switch {
	case match == nil && !named:
		s.refuse(ctx, "no_recipient")
		return nil
	case match == nil:
		s.refuse(ctx, "recipient_mismatch")
		return nil
	case match.Type == "":
		s.refuse(ctx, "not_a_failure")
		return nil
	}
	_, err := s.cfg.Recorder.RecordBounce(ctx, guard.Bounce{
		Type: match.Type, Source: source, Kind: tok.Kind, EmailID: tok.ID, Recipient: match.Address, Status: match.Status,
	})
	if err != nil {
		s.cfg.Logger.Warn("bounce: record", "task_id", tok.ID, "err", err)
	}
	return err
}

func (s *Server) matches(tok verp.Token, addr string) bool {
	if addr == "" {
		return false
	}
	if norm, err := queue.NormalizeAddress(addr); err == nil {
		addr = norm
	}
	return tok.MatchRecipient(guard.Canonical(addr, s.cfg.Policy.RecipientRules))
}

// smtpLog routes go-smtp's error log to slog at debug level: it reports
// every client that drops a connection.
type smtpLog struct{ l *slog.Logger }

func (l smtpLog) Printf(format string, v ...any) {
	l.l.Debug("bounce smtp: " + fmt.Sprintf(format, v...))
}
func (l smtpLog) Println(v ...any) { l.l.Debug("bounce smtp: " + fmt.Sprint(v...)) }
