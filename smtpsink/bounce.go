package smtpsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Report delivery: a bounded queue drained by one goroutine, so that a slow
// or absent relay never holds up an SMTP session.
const (
	maxReports        = 1000 // reports kept for the API
	reportQueueSize   = 256  // reports waiting for delivery; beyond, they fail at once
	reportAttempts    = 4    // the first attempt and three retries
	reportDialTimeout = 10 * time.Second
	reportTimeout     = 30 * time.Second // per SMTP command
)

// reportBackoff is the wait before retry n (1-based).
func reportBackoff(n int) time.Duration {
	return []time.Duration{250 * time.Millisecond, time.Second, 4 * time.Second}[min(n, 3)-1]
}

// reportStore keeps the most recent reports, oldest first.
type reportStore struct {
	mu   sync.Mutex
	list []*Report
}

func (rs *reportStore) add(r *Report) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.list) == maxReports {
		rs.list = slices.Delete(rs.list, 0, 1)
	}
	rs.list = append(rs.list, r)
}

// update changes r under the store's lock and returns a copy.
func (rs *reportStore) update(r *Report, f func(*Report)) Report {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	f(r)
	return r.clone()
}

func (rs *reportStore) all() []Report {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make([]Report, 0, len(rs.list))
	for i := len(rs.list) - 1; i >= 0; i-- {
		out = append(out, rs.list[i].clone())
	}
	return out
}

func (rs *reportStore) get(id string) (Report, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, r := range rs.list {
		if r.ID == id {
			return r.clone(), true
		}
	}
	return Report{}, false
}

func (rs *reportStore) reset() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	clear(rs.list)
	rs.list = rs.list[:0]
}

func (r *Report) clone() Report {
	c := *r
	c.Recipients = slices.Clone(r.Recipients)
	return c
}

// Reports returns the reports generated for bounce+ and complain+
// recipients, newest first; the last 1000 are kept.
func (s *Server) Reports() []Report { return s.reports.all() }

// WaitReports blocks until at least n reports are done (delivered to the
// bounce relay, or failed), then returns [Server.Reports]. It wakes on each
// delivery result rather than polling, and returns early with ctx.Err()
// when ctx ends or [ErrServerClosed] when the server shuts down. Reports
// kept without a relay are never done.
func (s *Server) WaitReports(ctx context.Context, n int) ([]Report, error) {
	var rs []Report
	err := s.waitChange(ctx, func() bool {
		rs = s.reports.all()
		done := 0
		for _, r := range rs {
			if r.Status == ReportDelivered || r.Status == ReportFailed {
				done++
			}
		}
		return done >= n
	})
	if err != nil {
		return nil, err
	}
	return rs, nil
}

// report builds a bounce or complaint report on m for rcpts and queues it
// for delivery. A message from the null reverse path gets none (RFC 3464
// section 2: a DSN is never sent for a DSN).
func (s *Server) report(typ string, m *Message, rcpts []string) {
	if m.MailFrom == "" {
		s.log.Debug("smtpsink: no report for a message from the null reverse path", "id", m.ID, "type", typ)
		return
	}
	in := reportInput{domain: s.cfg.Domain, id: newID(), now: time.Now().UTC(), msg: m, recipients: rcpts}
	build := buildDSN
	if typ == ReportComplaint {
		build = buildARF
	}
	raw, err := build(in)
	relay := s.bounceRelay()
	r := &Report{ID: in.id, Type: typ, OriginalID: m.ID, To: m.MailFrom, Recipients: slices.Clone(rcpts),
		CreatedAt: in.now, Status: ReportRecorded, Raw: raw, relay: relay}
	s.store.countReport(typ)
	switch {
	case err != nil:
		// Only an address with a control character gets here.
		r.Status, r.Error = ReportFailed, err.Error()
	case relay != "":
		r.Status = ReportQueued
	}
	status := r.Status
	// Added before it is queued: once queued, r is the deliverer's to change.
	// Counted done after it is added, so that WaitReports sees it.
	s.reports.add(r)
	if status == ReportFailed {
		s.store.countReportDone(false)
	}
	if status == ReportQueued {
		select {
		case s.reportQ <- r:
		default:
			s.reports.update(r, func(r *Report) {
				r.Status, r.Error = ReportFailed, fmt.Sprintf("delivery queue full (%d reports)", reportQueueSize)
			})
			s.store.countReportDone(false)
			status = ReportFailed
		}
	}
	s.log.Debug("smtpsink: report generated", "id", in.id, "type", typ, "original", m.ID, "rcpt_hash", rcptHash(m.MailFrom), "status", status)
}

// deliverReports sends queued reports until the queue is closed.
func (s *Server) deliverReports() {
	for r := range s.reportQ {
		s.deliverReport(r)
	}
}

func (s *Server) deliverReport(r *Report) {
	for attempt := 1; ; attempt++ {
		err := s.abort.Err()
		if err == nil {
			err = s.sendReport(s.abort, r)
		}
		var se *smtp.SMTPError
		permanent := errors.As(err, &se) && se.Code >= 500
		done := err == nil || permanent || attempt == reportAttempts || s.abort.Err() != nil
		got := s.reports.update(r, func(r *Report) {
			r.Attempts = attempt
			switch {
			case err == nil:
				r.Status, r.Error = ReportDelivered, ""
			case done:
				r.Status, r.Error = ReportFailed, err.Error()
			default:
				r.Error = err.Error()
			}
		})
		if done {
			s.store.countReportDone(err == nil)
			lvl := slog.LevelDebug
			if err != nil {
				lvl = slog.LevelWarn
			}
			s.log.Log(context.Background(), lvl, "smtpsink: report delivery", "id", got.ID, "type", got.Type,
				"status", got.Status, "attempts", got.Attempts, "err", got.Error)
			return
		}
		s.store.countReportRetry()
		t := time.NewTimer(reportBackoff(attempt))
		select {
		case <-t.C:
		case <-s.abort.Done():
			t.Stop()
		}
	}
}

// sendReport delivers r to the relay from the null reverse path.
func (s *Server) sendReport(ctx context.Context, r *Report) error {
	d := net.Dialer{Timeout: reportDialTimeout}
	conn, err := d.DialContext(ctx, "tcp", r.relay)
	if err != nil {
		return fmt.Errorf("dial relay: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c := smtp.NewClient(conn)
	defer c.Close()
	c.CommandTimeout = reportTimeout
	c.SubmissionTimeout = reportTimeout
	if err := c.Hello(s.cfg.Domain); err != nil {
		return fmt.Errorf("relay EHLO: %w", err)
	}
	if err := c.Mail("", nil); err != nil {
		return fmt.Errorf("relay MAIL: %w", err)
	}
	if err := c.Rcpt(r.To, nil); err != nil {
		return fmt.Errorf("relay RCPT: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("relay DATA: %w", err)
	}
	if _, err := w.Write(r.Raw); err != nil {
		w.Close()
		return fmt.Errorf("relay DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("relay DATA: %w", err)
	}
	// The report is delivered once the final dot is answered; QUIT's reply
	// does not change that.
	_ = c.Quit()
	return nil
}
