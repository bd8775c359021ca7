package smtpsink

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Replies. The sink always answers with *smtp.SMTPError: go-smtp turns any
// other error from a session into a permanent 554.
var (
	errTempFail    = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Requested action aborted: tempfail+ recipient"}
	errPermFail    = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user: permfail+ recipient"}
	errRandom      = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Requested action aborted: random rejection"}
	errRate        = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Message rate limit exceeded, closing connection"}
	errClosing     = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down"}
	errRead        = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error reading message"}
	errLineTooLong = &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Line too long: RFC 5321 allows 998 octets plus CRLF"}
	errDropped     = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Connection dropped"}
)

// Faults, chosen by a recipient's local part.
const (
	faultNone     = ""
	faultTempFail = "tempfail"
	faultPermFail = "permfail"
	faultSlow     = "slow"
	faultDrop     = "drop"
	faultBounce   = "bounce"
	faultComplain = "complain"
)

// faultOf returns the fault named by addr's local part up to the first '+',
// compared case-insensitively: "Slow+x@example.com" is slow.
func faultOf(addr string) string {
	local := addr
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		local = addr[:i]
	}
	if i := strings.IndexByte(local, '+'); i >= 0 {
		local = local[:i]
	}
	for _, f := range [...]string{faultTempFail, faultPermFail, faultSlow, faultDrop, faultBounce, faultComplain} {
		if strings.EqualFold(local, f) {
			return f
		}
	}
	return faultNone
}

type backend struct{ s *Server }

var _ smtp.Backend = backend{}

// NewSession runs at the first EHLO/HELO of a connection.
func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	if b.s.closing() {
		return nil, errClosing
	}
	b.s.store.countSession()
	tc, _ := c.Conn().(*trackedConn)
	return &session{s: b.s, conn: c.Conn(), tc: tc}, nil
}

// session is one SMTP connection. go-smtp calls it from the connection's
// goroutine, except Data under BDAT which runs on its own; mu covers that.
type session struct {
	s    *Server
	conn net.Conn
	tc   *trackedConn

	mu         sync.Mutex
	from       string
	rcpts      []string
	slow       bool
	drop       bool
	bounces    []string // bounce+ recipients
	complaints []string // complain+ recipients
}

var _ smtp.Session = (*session)(nil)

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	s := ss.s
	if !s.conns.setBusy(ss.tc, true) {
		s.store.countRejected()
		return ss.refuse(errClosing)
	}
	if s.limiter != nil && !s.limiter.Allow() {
		s.store.countRejected()
		s.log.Debug("smtpsink: rate limited", "reply", errRate.Code)
		return ss.refuse(errRate)
	}
	ss.mu.Lock()
	ss.from = from
	ss.rcpts, ss.bounces, ss.complaints = nil, nil, nil
	ss.slow, ss.drop = false, false
	ss.mu.Unlock()
	return nil
}

// refuse sends a 421 reply itself and closes the connection, as RFC 5321
// section 3.8 expects of a 421; go-smtp would keep the connection open. Its
// own attempt to send the returned reply then fails on the closed
// connection, which it ignores.
func (ss *session) refuse(e *smtp.SMTPError) error {
	ss.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(ss.conn, "%d %d.%d.%d %s\r\n", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
	ss.conn.Close()
	return e
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s := ss.s
	fault := faultOf(to)
	var reject *smtp.SMTPError
	switch {
	case fault == faultTempFail:
		reject = errTempFail
	case fault == faultPermFail:
		reject = errPermFail
	case s.cfg.RejectRatio > 0 && rand.Float64() < s.cfg.RejectRatio:
		reject = errRandom
	}
	if reject != nil {
		s.store.countRejected()
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("smtpsink: recipient rejected", "rcpt_hash", rcptHash(to), "reply", reject.Code)
		}
		return reject
	}
	ss.mu.Lock()
	ss.rcpts = append(ss.rcpts, to)
	ss.slow = ss.slow || fault == faultSlow
	ss.drop = ss.drop || fault == faultDrop
	switch fault {
	case faultBounce:
		ss.bounces = append(ss.bounces, to)
	case faultComplain:
		ss.complaints = append(ss.complaints, to)
	}
	ss.mu.Unlock()
	return nil
}

// maxPooledBuffer is the largest read buffer kept for reuse.
const maxPooledBuffer = 1 << 20

func (ss *session) Data(r io.Reader) error {
	s := ss.s
	ss.mu.Lock()
	from, rcpts, slow, drop := ss.from, ss.rcpts, ss.slow, ss.drop
	bounces, complaints := ss.bounces, ss.complaints
	ss.mu.Unlock()

	buf, _ := s.bufs.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	buf.Reset()
	defer func() {
		if buf.Cap() <= maxPooledBuffer {
			s.bufs.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(r); err != nil {
		if errors.Is(err, smtp.ErrTooLongLine) {
			s.store.countRejected()
			return errLineTooLong
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			if se.Code/100 == 5 {
				s.store.countRejected()
			}
			return se
		}
		return errRead
	}

	m := s.record(from, rcpts, bytes.Clone(buf.Bytes()), drop)
	if len(bounces) > 0 {
		s.report(ReportBounce, m, bounces)
	}
	if len(complaints) > 0 {
		s.report(ReportComplaint, m, complaints)
	}
	if drop {
		// The sender has sent the final dot but will never see a reply:
		// the ambiguous case a client must retry without duplicating.
		ss.conn.Close()
		return errDropped
	}
	if slow {
		t := time.NewTimer(s.cfg.SlowDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.done:
		}
	}
	// A 250 SMTPError is how go-smtp lets a session choose its reply text.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK: queued as " + m.ID}
}

func (ss *session) Reset() {
	ss.mu.Lock()
	ss.from, ss.rcpts, ss.bounces, ss.complaints = "", nil, nil, nil
	ss.slow, ss.drop = false, false
	ss.mu.Unlock()
	ss.s.conns.setBusy(ss.tc, false)
}

func (ss *session) Logout() error { return nil }

// record parses, verifies and stores one message.
func (s *Server) record(from string, rcpts []string, raw []byte, dropped bool) *Message {
	h := scanHeader(raw)
	m := &Message{
		ID:         newID(),
		ReceivedAt: time.Now().UTC(),
		MailFrom:   from,
		RcptTo:     rcpts,
		Subject:    h.subject,
		MessageID:  h.messageID,
		Kind:       h.kind,
		Size:       len(raw),
		Dropped:    dropped,
		DKIM:       s.verifier.verify(raw, h.dkim),
		Raw:        raw,
	}
	s.store.add(m)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		hashes := make([]string, len(rcpts))
		for i, r := range rcpts {
			hashes[i] = rcptHash(r)
		}
		results := make([]string, len(m.DKIM))
		for i, d := range m.DKIM {
			results[i] = d.Result
		}
		s.log.Debug("smtpsink: message stored", "id", m.ID, "rcpt_hash", hashes, "size", m.Size, "dkim", results, "dropped", dropped)
	}
	return m
}

func newID() string {
	var b [8]byte
	crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// rcptHash identifies a recipient in logs without revealing it.
func rcptHash(addr string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(addr)))
	return hex.EncodeToString(sum[:6])
}
