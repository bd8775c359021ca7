package smtpsink

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// Message is one message as the sink received it. The Raw bytes of a Message
// returned by a [Server] are shared with its store and must not be modified.
type Message struct {
	// ID identifies the message in the API; unique for the life of the server.
	ID string `json:"id"`
	// ReceivedAt is when the final dot of DATA was read.
	ReceivedAt time.Time `json:"received_at"`
	// MailFrom is the envelope sender (MAIL FROM); empty for a null sender.
	MailFrom string `json:"mail_from"`
	// RcptTo lists the envelope recipients that were accepted, in order.
	RcptTo []string `json:"rcpt_to"`
	// Subject is the Subject header field, unfolded and RFC 2047 decoded.
	Subject string `json:"subject"`
	// MessageID is the Message-ID header field as sent, angle brackets included.
	MessageID string `json:"message_id"`
	// Kind is the email kind named by the X-Floodgate-Kind header field,
	// such as "password_reset"; empty when the message has none.
	Kind string `json:"kind"`
	// Size is len(Raw).
	Size int `json:"size"`
	// Dropped reports whether the sink closed the connection instead of
	// replying (the drop+ fault): the sender cannot know it was received.
	Dropped bool `json:"dropped"`
	// DKIM holds one result per DKIM-Signature, in header order, or a single
	// result "none" for an unsigned message.
	DKIM []DKIMResult `json:"dkim"`
	// Raw is the message exactly as received after SMTP dot-unstuffing.
	Raw []byte `json:"-"`
}

// Query selects stored messages. The zero Query selects all of them.
type Query struct {
	// Limit caps the number of messages returned; 0 or less means no cap.
	Limit int
	// To keeps only messages with this envelope recipient, compared
	// case-insensitively; empty keeps all.
	To string
	// Kind keeps only messages of this kind ([Message].Kind), compared
	// case-insensitively; empty keeps all.
	Kind string
	// Search keeps only messages where it occurs, case-insensitively, in an
	// envelope recipient, the envelope sender, the Subject or the kind;
	// empty keeps all.
	Search string
}

func (q Query) all() bool { return q.To == "" && q.Kind == "" && q.Search == "" }

func (q Query) match(m *Message) bool {
	if q.Kind != "" && !strings.EqualFold(m.Kind, q.Kind) {
		return false
	}
	if q.To != "" && !slices.ContainsFunc(m.RcptTo, func(r string) bool { return strings.EqualFold(r, q.To) }) {
		return false
	}
	if q.Search != "" {
		s := strings.ToLower(q.Search)
		has := func(v string) bool { return strings.Contains(strings.ToLower(v), s) }
		if !has(m.Subject) && !has(m.MailFrom) && !has(m.Kind) && !slices.ContainsFunc(m.RcptTo, has) {
			return false
		}
	}
	return true
}

// Stats counts what the sink has seen since it started or was last [Server.Reset].
type Stats struct {
	// Received counts messages stored, dropped ones included.
	Received int64 `json:"received"`
	// Rejected counts refusals: fault and random rejections at RCPT, rate
	// limit and shutdown refusals at MAIL, oversized messages, and
	// connections turned away by the session cap.
	Rejected int64 `json:"rejected"`
	// Sessions counts SMTP sessions opened (EHLO or HELO received).
	Sessions int64 `json:"sessions"`
	// DuplicateMessageIDs counts messages whose Message-ID had been seen in
	// an earlier message.
	DuplicateMessageIDs int64 `json:"duplicate_message_ids"`
	// Dropped counts messages stored under the drop+ fault.
	Dropped int64 `json:"dropped"`
	// Stored is the number of messages currently held.
	Stored int `json:"stored"`
	// BouncesGenerated counts delivery status notifications built for
	// bounce+ recipients, one per message.
	BouncesGenerated int64 `json:"bounces_generated"`
	// ComplaintsGenerated counts abuse reports built for complain+
	// recipients, one per message.
	ComplaintsGenerated int64 `json:"complaints_generated"`
	// ReportsDelivered counts reports the bounce relay accepted.
	ReportsDelivered int64 `json:"reports_delivered"`
	// ReportsFailed counts reports given up: refused by the relay, out of
	// retries, the delivery queue full, or a forced shutdown. Without a
	// relay, generated reports are neither delivered nor failed.
	ReportsFailed int64 `json:"reports_failed"`
	// ReportRetries counts delivery attempts after a temporary failure.
	ReportRetries int64 `json:"report_retries"`
}

// store is a bounded ring of messages plus the counters. Its zero value is
// not usable; see newStore.
type store struct {
	mu    sync.Mutex
	ring  []*Message // ring[(start+i)%len(ring)] for i < n, oldest first
	start int
	n     int
	byID  map[string]*Message

	// seen remembers the Message-IDs of the last len(seenRing) messages, so
	// duplicates are found even after the messages left the ring.
	seen      map[string]int
	seenRing  []string
	seenStart int
	seenN     int

	stats Stats

	// changed is closed and cleared whenever messages are added or removed;
	// it exists only while someone waits, so an unwatched store pays nothing.
	changed chan struct{}
}

func newStore(maxMessages, maxSeen int) *store {
	return &store{
		ring:     make([]*Message, maxMessages),
		byID:     make(map[string]*Message),
		seen:     make(map[string]int),
		seenRing: make([]string, maxSeen),
	}
}

// add stores m, evicting the oldest message when full.
func (st *store) add(m *Message) {
	st.mu.Lock()
	defer st.mu.Unlock()

	if m.MessageID != "" {
		if st.seen[m.MessageID] > 0 {
			st.stats.DuplicateMessageIDs++
		}
		st.remember(m.MessageID)
	}

	if st.n == len(st.ring) {
		old := st.ring[st.start]
		delete(st.byID, old.ID)
		st.ring[st.start] = nil
		st.start = (st.start + 1) % len(st.ring)
		st.n--
	}
	st.ring[(st.start+st.n)%len(st.ring)] = m
	st.n++
	st.byID[m.ID] = m

	st.stats.Received++
	if m.Dropped {
		st.stats.Dropped++
	}
	st.notifyLocked()
}

func (st *store) remember(id string) {
	if st.seenN == len(st.seenRing) {
		old := st.seenRing[st.seenStart]
		if st.seen[old]--; st.seen[old] <= 0 {
			delete(st.seen, old)
		}
		st.seenStart = (st.seenStart + 1) % len(st.seenRing)
		st.seenN--
	}
	st.seenRing[(st.seenStart+st.seenN)%len(st.seenRing)] = id
	st.seenN++
	st.seen[id]++
}

func (st *store) notifyLocked() {
	if st.changed != nil {
		close(st.changed)
		st.changed = nil
	}
}

// watch returns a channel closed at the next change of the stored messages.
func (st *store) watchLocked() <-chan struct{} {
	if st.changed == nil {
		st.changed = make(chan struct{})
	}
	return st.changed
}

// newestFirstLocked calls f for stored messages from newest to oldest until
// f returns false.
func (st *store) newestFirstLocked(f func(*Message) bool) {
	for i := st.n - 1; i >= 0; i-- {
		if !f(st.ring[(st.start+i)%len(st.ring)]) {
			return
		}
	}
}

func (st *store) queryLocked(q Query) []Message {
	out := []Message{}
	st.newestFirstLocked(func(m *Message) bool {
		if q.match(m) {
			out = append(out, m.clone())
		}
		return q.Limit <= 0 || len(out) < q.Limit
	})
	return out
}

func (st *store) countLocked(q Query) int {
	if q.all() {
		return st.n
	}
	c := 0
	st.newestFirstLocked(func(m *Message) bool {
		if q.match(m) {
			c++
		}
		return true
	})
	return c
}

func (st *store) query(q Query) []Message {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.queryLocked(q)
}

func (st *store) get(id string) (Message, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	m, ok := st.byID[id]
	if !ok {
		return Message{}, false
	}
	return m.clone(), true
}

// remove deletes the message with the given ID and reports whether it was
// held. The Message-IDs seen and the counters are kept.
func (st *store) remove(id string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := st.byID[id]; !ok {
		return false
	}
	delete(st.byID, id)
	// Close the gap: the later messages move one place towards the oldest.
	for i := 0; i < st.n; i++ {
		if st.ring[(st.start+i)%len(st.ring)].ID != id {
			continue
		}
		for j := i; j < st.n-1; j++ {
			st.ring[(st.start+j)%len(st.ring)] = st.ring[(st.start+j+1)%len(st.ring)]
		}
		st.ring[(st.start+st.n-1)%len(st.ring)] = nil
		st.n--
		break
	}
	st.notifyLocked()
	return true
}

func (st *store) snapshot() Stats {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.snapshotLocked()
}

func (st *store) snapshotLocked() Stats {
	s := st.stats
	s.Stored = st.n
	return s
}

func (st *store) countRejected() {
	st.mu.Lock()
	st.stats.Rejected++
	st.mu.Unlock()
}

func (st *store) countReport(typ string) {
	st.mu.Lock()
	if typ == ReportComplaint {
		st.stats.ComplaintsGenerated++
	} else {
		st.stats.BouncesGenerated++
	}
	st.mu.Unlock()
}

func (st *store) countReportDone(delivered bool) {
	st.mu.Lock()
	if delivered {
		st.stats.ReportsDelivered++
	} else {
		st.stats.ReportsFailed++
	}
	st.notifyLocked()
	st.mu.Unlock()
}

func (st *store) countReportRetry() {
	st.mu.Lock()
	st.stats.ReportRetries++
	st.notifyLocked()
	st.mu.Unlock()
}

func (st *store) countSession() {
	st.mu.Lock()
	st.stats.Sessions++
	st.mu.Unlock()
}

// reset forgets every message, every Message-ID and every counter.
func (st *store) reset() {
	st.mu.Lock()
	defer st.mu.Unlock()
	clear(st.ring)
	st.start, st.n = 0, 0
	clear(st.byID)
	clear(st.seen)
	clear(st.seenRing)
	st.seenStart, st.seenN = 0, 0
	st.stats = Stats{}
	st.notifyLocked()
}

// clone copies m's small slices; Raw is shared because it is never written
// after the message is stored.
func (m *Message) clone() Message {
	c := *m
	c.RcptTo = slices.Clone(m.RcptTo)
	c.DKIM = slices.Clone(m.DKIM)
	return c
}
