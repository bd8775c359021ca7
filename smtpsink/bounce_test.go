package smtpsink

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"
)

// relayed is one message the test relay accepted.
type relayed struct {
	from string
	to   []string
	data []byte
}

// relay is a real go-smtp server standing in for floodgate's bounce
// receiver. refuse, if set, chooses a reply to RCPT for attempt n (1-based).
type relay struct {
	addr   string
	got    chan relayed
	mu     sync.Mutex
	tries  int
	refuse func(n int) *smtp.SMTPError
}

func startRelay(t *testing.T, refuse func(n int) *smtp.SMTPError) *relay {
	t.Helper()
	r := &relay{got: make(chan relayed, 16), refuse: refuse}
	srv := smtp.NewServer(relayBackend{r})
	srv.Domain = "relay.test"
	srv.AllowInsecureAuth = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return r
}

type relayBackend struct{ r *relay }

func (b relayBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &relaySession{r: b.r}, nil
}

type relaySession struct {
	r    *relay
	from string
	to   []string
}

func (s *relaySession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *relaySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.r.mu.Lock()
	s.r.tries++
	n := s.r.tries
	s.r.mu.Unlock()
	if s.r.refuse != nil {
		if e := s.r.refuse(n); e != nil {
			return e
		}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *relaySession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.r.got <- relayed{from: s.from, to: s.to, data: b}
	return nil
}

func (s *relaySession) Reset()        { s.from, s.to = "", nil }
func (s *relaySession) Logout() error { return nil }

func (r *relay) next(t *testing.T) relayed {
	t.Helper()
	select {
	case m := <-r.got:
		return m
	case <-testContext(t).Done():
		t.Fatal("no report reached the relay")
		return relayed{}
	}
}

// reportParts parses a multipart/report and returns its report-type and
// its parts' media types and bodies.
func reportParts(t *testing.T, raw []byte) (message.Header, string, []string, [][]byte) {
	t.Helper()
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("read report: %v\n%s", err, raw)
	}
	mt, params, err := e.Header.ContentType()
	if err != nil || mt != "multipart/report" {
		t.Fatalf("Content-Type = %q, %v; want multipart/report", mt, err)
	}
	mr := e.MultipartReader()
	var types []string
	var bodies [][]byte
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("next part: %v", err)
		}
		pt, _, _ := p.Header.ContentType()
		b, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, pt)
		bodies = append(bodies, b)
	}
	return e.Header, params["report-type"], types, bodies
}

// fieldBlocks parses the header blocks of a message/delivery-status or
// message/feedback-report body.
func fieldBlocks(t *testing.T, body []byte) []textproto.Header {
	t.Helper()
	var out []textproto.Header
	br := bufio.NewReader(bytes.NewReader(append(bytes.Clone(body), "\r\n"...)))
	for {
		if _, err := br.Peek(1); err != nil {
			return out
		}
		h, err := textproto.ReadHeader(br)
		if err != nil {
			t.Fatalf("read fields: %v\n%s", err, body)
		}
		if h.Len() > 0 {
			out = append(out, h)
		}
	}
}

const verpSender = "bounces+tok3n@bounce.example.org"

func TestBounceDeliversDSN(t *testing.T) {
	rl := startRelay(t, nil)
	s := startSink(t, Config{BounceRelay: rl.addr})
	orig := newMessage("Reset your password", "<orig@example.org>", "the body")
	if err := send(t, s, verpSender, []string{"ok@example.com", "Bounce+ada@example.com"}, orig); err != nil {
		t.Fatalf("send: %v, want 250 (bounce+ accepts, then reports)", err)
	}
	if m := s.Messages(Query{})[0]; len(m.RcptTo) != 2 {
		t.Errorf("stored recipients = %v, want both", m.RcptTo)
	}

	got := rl.next(t)
	if got.from != "" || len(got.to) != 1 || got.to[0] != verpSender {
		t.Errorf("relay envelope = MAIL FROM:<%s> RCPT TO:%v, want <> and %s", got.from, got.to, verpSender)
	}
	h, reportType, types, bodies := reportParts(t, got.data)
	if reportType != "delivery-status" || strings.Join(types, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Fatalf("report-type %q, parts %v", reportType, types)
	}
	if to := h.Get("To"); to != "<"+verpSender+">" {
		t.Errorf("To = %q", to)
	}
	if from := h.Get("From"); !strings.Contains(from, "MAILER-DAEMON@smtpsink.local") || h.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("From = %q, Auto-Submitted = %q", from, h.Get("Auto-Submitted"))
	}
	blocks := fieldBlocks(t, bodies[1])
	if len(blocks) != 2 {
		t.Fatalf("delivery-status has %d blocks, want per-message and one recipient:\n%s", len(blocks), bodies[1])
	}
	if v := blocks[0].Get("Reporting-MTA"); v != "dns; smtpsink.local" || blocks[0].Get("Arrival-Date") == "" {
		t.Errorf("per-message fields: Reporting-MTA %q, Arrival-Date %q", v, blocks[0].Get("Arrival-Date"))
	}
	rb := blocks[1]
	for name, want := range map[string]string{
		"Final-Recipient": "rfc822; Bounce+ada@example.com",
		"Action":          "failed",
		"Status":          "5.1.1",
	} {
		if v := rb.Get(name); v != want {
			t.Errorf("%s = %q, want %q", name, v, want)
		}
	}
	if v := rb.Get("Diagnostic-Code"); !strings.HasPrefix(v, "smtp; 550 5.1.1 ") {
		t.Errorf("Diagnostic-Code = %q", v)
	}
	if !bytes.Contains(bodies[2], []byte("Message-ID: <orig@example.org>\r\n")) || bytes.Contains(bodies[2], []byte("the body")) {
		t.Errorf("rfc822-headers part = %q, want the original header only", bodies[2])
	}

	waitStats(t, s, func(st Stats) bool { return st.ReportsDelivered == 1 })
	if st := s.Stats(); st.BouncesGenerated != 1 || st.ComplaintsGenerated != 0 || st.ReportsFailed != 0 || st.ReportRetries != 0 {
		t.Errorf("stats = %+v", st)
	}
	rs := s.Reports()
	if len(rs) != 1 || rs[0].Status != ReportDelivered || rs[0].Attempts != 1 || rs[0].Type != ReportBounce ||
		rs[0].To != verpSender || rs[0].OriginalID != s.Messages(Query{})[0].ID || !bytes.Equal(rs[0].Raw, got.data) {
		t.Errorf("reports = %+v", rs)
	}
}

func TestComplaintDeliversARF(t *testing.T) {
	rl := startRelay(t, nil)
	s := startSink(t, Config{BounceRelay: rl.addr})
	orig := newMessage("Weekly digest", "<digest@example.org>", "news")
	if err := send(t, s, verpSender, []string{"complain+bob@example.com"}, orig); err != nil {
		t.Fatalf("send: %v", err)
	}
	got := rl.next(t)
	if got.from != "" || got.to[0] != verpSender {
		t.Errorf("relay envelope = <%s> %v", got.from, got.to)
	}
	_, reportType, types, bodies := reportParts(t, got.data)
	if reportType != "feedback-report" || strings.Join(types, ",") != "text/plain,message/feedback-report,message/rfc822" {
		t.Fatalf("report-type %q, parts %v", reportType, types)
	}
	blocks := fieldBlocks(t, bodies[1])
	if len(blocks) != 1 {
		t.Fatalf("feedback-report has %d blocks:\n%s", len(blocks), bodies[1])
	}
	for name, want := range map[string]string{
		"Feedback-Type":      "abuse",
		"User-Agent":         "smtpsink/1.0",
		"Version":            "1",
		"Original-Mail-From": "<" + verpSender + ">",
		"Original-Rcpt-To":   "<complain+bob@example.com>",
	} {
		if v := blocks[0].Get(name); v != want {
			t.Errorf("%s = %q, want %q", name, v, want)
		}
	}
	if blocks[0].Get("Arrival-Date") == "" {
		t.Error("no Arrival-Date")
	}
	if !bytes.Equal(bodies[2], orig) {
		t.Errorf("message/rfc822 part = %q, want the original message", bodies[2])
	}
	waitStats(t, s, func(st Stats) bool { return st.ReportsDelivered == 1 })
	if st := s.Stats(); st.ComplaintsGenerated != 1 || st.BouncesGenerated != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestBounceWithoutRelayIsRecorded(t *testing.T) {
	s := startSink(t, Config{})
	if err := send(t, s, verpSender, []string{"bounce+x@example.com"}, newMessage("s", "", "b")); err != nil {
		t.Fatal(err)
	}
	rs := s.Reports()
	if len(rs) != 1 || rs[0].Status != ReportRecorded || rs[0].Attempts != 0 {
		t.Fatalf("reports = %+v, want one recorded", rs)
	}
	if st := s.Stats(); st.BouncesGenerated != 1 || st.ReportsDelivered != 0 || st.ReportsFailed != 0 {
		t.Errorf("stats = %+v, want generated, not delivered", st)
	}
	_, body := get(t, s, "GET", "/api/reports")
	if !strings.Contains(string(body), `"status":"recorded"`) || !strings.Contains(string(body), `"type":"bounce"`) {
		t.Errorf("GET /api/reports = %s", body)
	}
	resp, raw := get(t, s, "GET", "/api/reports/"+rs[0].ID+"/raw")
	if resp.StatusCode != 200 {
		t.Fatalf("GET report raw = %d", resp.StatusCode)
	}
	if _, rt, _, _ := reportParts(t, raw); rt != "delivery-status" {
		t.Errorf("raw report-type = %q", rt)
	}
	_, body = get(t, s, "GET", "/api/stats")
	if !strings.Contains(string(body), `"bounces_generated":1`) {
		t.Errorf("GET /api/stats = %s", body)
	}
	s.Reset()
	if rs := s.Reports(); len(rs) != 0 {
		t.Errorf("reports after Reset = %d", len(rs))
	}
}

func TestBounceRetriesTemporaryFailures(t *testing.T) {
	rl := startRelay(t, func(n int) *smtp.SMTPError {
		if n <= 2 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	})
	s := startSink(t, Config{BounceRelay: rl.addr})
	if err := send(t, s, verpSender, []string{"bounce+x@example.com"}, newMessage("s", "", "b")); err != nil {
		t.Fatal(err)
	}
	rl.next(t)
	waitStats(t, s, func(st Stats) bool { return st.ReportsDelivered == 1 })
	if st := s.Stats(); st.ReportRetries != 2 || st.ReportsFailed != 0 {
		t.Errorf("stats = %+v, want 2 retries", st)
	}
	if r := s.Reports()[0]; r.Attempts != 3 || r.Status != ReportDelivered || r.Error != "" {
		t.Errorf("report = %+v", r)
	}
}

func TestBouncePermanentRefusalIsNotRetried(t *testing.T) {
	rl := startRelay(t, func(int) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "unknown token"}
	})
	s := startSink(t, Config{BounceRelay: rl.addr})
	if err := send(t, s, verpSender, []string{"bounce+x@example.com"}, newMessage("s", "", "b")); err != nil {
		t.Fatal(err)
	}
	waitStats(t, s, func(st Stats) bool { return st.ReportsFailed == 1 })
	r := s.Reports()[0]
	if st := s.Stats(); st.ReportRetries != 0 || st.ReportsDelivered != 0 || r.Attempts != 1 || r.Status != ReportFailed || !strings.Contains(r.Error, "unknown token") {
		t.Errorf("stats %+v, report %+v; want one failed attempt", st, r)
	}
}

func TestNoReportForNullSender(t *testing.T) {
	rl := startRelay(t, nil)
	s := startSink(t, Config{BounceRelay: rl.addr})
	if err := send(t, s, "", []string{"bounce+x@example.com", "complain+y@example.com"}, newMessage("s", "", "b")); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Received != 1 || st.BouncesGenerated != 0 || st.ComplaintsGenerated != 0 || len(s.Reports()) != 0 {
		t.Errorf("stats = %+v, reports %d; want the message stored and no report", st, len(s.Reports()))
	}
}

// A relay that never answers holds up neither the session nor a graceful
// shutdown beyond its context.
func TestBounceDeliveryDoesNotBlockTheSession(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c // never greets
		}
	}()
	s, err := New(Config{SMTPAddr: "127.0.0.1:0", HTTPAddr: "-", BounceRelay: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := send(t, s, verpSender, []string{"bounce+x@example.com"}, newMessage("s", "", "b")); err != nil {
		t.Fatalf("send with a hung relay: %v", err)
	}
	var relayConn net.Conn
	select {
	case relayConn = <-accepted:
		defer relayConn.Close()
	case <-testContext(t).Done():
		t.Fatal("the sink did not connect to the relay")
	}
	// The session got its 250 while the delivery waits for a greeting.
	if r := s.Reports()[0]; r.Status != ReportQueued {
		t.Errorf("report while the relay hangs = %+v, want queued", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want the deadline: a delivery was in flight", err)
	}
	if st := s.Stats(); st.ReportsFailed != 1 || s.Reports()[0].Status != ReportFailed {
		t.Errorf("after forced shutdown: stats %+v, report %+v; want failed", st, s.Reports()[0])
	}
}

func TestReportsRefuseControlCharacters(t *testing.T) {
	m := &Message{ID: "1", MailFrom: "a@example.org", ReceivedAt: time.Now(), Raw: newMessage("s", "", "b")}
	in := reportInput{domain: "smtpsink.local", id: "r1", now: time.Now(), msg: m, recipients: []string{"bounce+x@example.com\r\nX-Injected: 1"}}
	if _, err := buildDSN(in); !errors.Is(err, errHeaderValue) {
		t.Errorf("buildDSN with CRLF in a recipient = %v, want errHeaderValue", err)
	}
	if _, err := buildARF(in); !errors.Is(err, errHeaderValue) {
		t.Errorf("buildARF with CRLF in a recipient = %v, want errHeaderValue", err)
	}
	m.MailFrom = "a@example.org\nBcc: x@example.net"
	in.recipients = []string{"bounce+x@example.com"}
	if _, err := buildDSN(in); !errors.Is(err, errHeaderValue) {
		t.Errorf("buildDSN with LF in the sender = %v, want errHeaderValue", err)
	}
}

// waitStats waits for the sink's counters to satisfy ok, on each change of
// the report they are about.
func waitStats(t *testing.T, s *Server, ok func(Stats) bool) {
	t.Helper()
	ctx := testContext(t)
	for !ok(s.Stats()) {
		s.store.mu.Lock()
		ch := s.store.watchLocked()
		s.store.mu.Unlock()
		if ok(s.Stats()) {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("stats = %+v, condition not met", s.Stats())
		}
	}
}

// A relay named after Start gets the reports generated from then on; the
// ones before it stay recorded.
func TestSetBounceRelayAfterStart(t *testing.T) {
	s := startSink(t, Config{})
	if err := send(t, s, verpSender, []string{"bounce+before@example.com"}, newMessage("s", "", "b")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetBounceRelay("no-port"); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("SetBounceRelay(no-port) = %v, want ErrInvalidConfig", err)
	}
	rl := startRelay(t, nil)
	if err := s.SetBounceRelay(rl.addr); err != nil {
		t.Fatal(err)
	}
	if err := send(t, s, verpSender, []string{"bounce+after@example.com"}, newMessage("s", "", "b")); err != nil {
		t.Fatal(err)
	}
	rs, err := s.WaitReports(testContext(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Status != ReportDelivered || rs[0].Recipients[0] != "bounce+after@example.com" || rs[1].Status != ReportRecorded {
		t.Errorf("reports %+v, want the later delivered and the earlier recorded", rs)
	}
	if got := rl.next(t); len(got.to) != 1 || got.to[0] != verpSender {
		t.Errorf("relay envelope RCPT TO:%v, want %s", got.to, verpSender)
	}
}

// WaitReports returns once reports are done, failed ones included, and
// ends with its context.
func TestWaitReports(t *testing.T) {
	rl := startRelay(t, func(int) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "unknown token"}
	})
	s := startSink(t, Config{BounceRelay: rl.addr})
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	if _, err := s.WaitReports(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitReports with nothing sent = %v, want context.Canceled", err)
	}
	if err := send(t, s, verpSender, []string{"bounce+x@example.com"}, newMessage("s", "", "b")); err != nil {
		t.Fatal(err)
	}
	rs, err := s.WaitReports(testContext(t), 1)
	if err != nil || len(rs) != 1 || rs[0].Status != ReportFailed {
		t.Errorf("WaitReports = %+v, %v; want one failed report", rs, err)
	}
}
