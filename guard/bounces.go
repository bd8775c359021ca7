package guard

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/pii"
	"github.com/floodgate-dev/floodgate/internal/rkeys"
)

// Types of [Feedback].
const (
	// FeedbackHard is a permanent delivery failure (status 5.x.x): the
	// recipient is suppressed.
	FeedbackHard = "hard"
	// FeedbackSoft is a temporary one (4.x.x, a delay): counted only.
	FeedbackSoft = "soft"
	// FeedbackComplaint is a recipient's complaint (an abuse report): the
	// recipient is suppressed.
	FeedbackComplaint = "complaint"
)

// Feedback accounting.
const (
	// FeedbackWindow is the period of the rates in [FeedbackStats]: the
	// current hour and the 23 before it.
	FeedbackWindow = 24 * time.Hour
	// UnknownKind labels reports whose kind is not one of the policy's.
	UnknownKind = "unknown"
	// OtherDomain labels recipients outside the policy's listed domains.
	OtherDomain = "other"

	feedbackBucketTTL = int64((FeedbackWindow + 2*time.Hour) / time.Second)
	// feedbackDedup covers a return path's lifetime and a provider's
	// retries, so a report delivered again is not counted again.
	feedbackDedup = 8 * 24 * time.Hour
)

// Feedback is one report about an email that the relay had accepted: a
// bounce that arrived later, or a complaint.
type Feedback struct {
	// Type is [FeedbackHard], [FeedbackSoft] or [FeedbackComplaint].
	Type string
	// Source is where the report came from: [SourceDSN], [SourceARF],
	// [SourceSES], [SourceSendGrid] or [SourceMailgun].
	Source string
	// Kind is the email's kind; "" or a kind the policy does not have is
	// counted as [UnknownKind].
	Kind string
	// EmailID is the email's id when the report names it (a verified
	// return path does).
	EmailID string
	// EventID is the report's id at its source (a provider's event id);
	// with EmailID empty, it keeps a report delivered twice from being
	// counted twice.
	EventID string
	// Recipient is the address the report is about; a report without one
	// is counted but suppresses nothing.
	Recipient string
	// Status is the enhanced status code (RFC 3463) when the report has
	// one, for the log.
	Status string
}

// FeedbackResult is what [Guard.RecordFeedback] did.
type FeedbackResult struct {
	// Suppressed reports whether the recipient is now on the suppression
	// list because of this report.
	Suppressed bool
	// Counted is false for a report counted before.
	Counted bool
}

// RecordFeedback applies a report: a hard bounce or a complaint suppresses
// its recipient (reason hard_bounce or complaint, with f.Source); every
// type is counted once per email (or provider event) and type in the
// hour's bucket behind [FeedbackStats], and in this process's metrics.
// Suppression comes first: when it fails nothing is counted, and the
// caller should have the report sent again.
func (g *Guard) RecordFeedback(ctx context.Context, f Feedback) (FeedbackResult, error) {
	var reason string
	switch f.Type {
	case FeedbackHard:
		reason = "hard_bounce"
	case FeedbackComplaint:
		reason = "complaint"
	case FeedbackSoft:
	default:
		return FeedbackResult{}, fmt.Errorf("guard: feedback: type %q is not hard, soft or complaint", f.Type)
	}
	if f.Source == "" || token(f.Source) != f.Source {
		return FeedbackResult{}, fmt.Errorf("guard: feedback: source %q must be a short lower-case token", f.Source)
	}
	kind := g.feedbackKind(f.Kind)
	domain := OtherDomain
	if f.Recipient != "" {
		domain = g.feedbackDomain(f.Recipient)
	}
	var res FeedbackResult
	if reason != "" && f.Recipient != "" {
		if err := g.SuppressFrom(ctx, f.Recipient, reason, f.Source); err != nil {
			return res, err
		}
		res.Suppressed = true
	}
	dedupTTL, dedupKey := "0", rkeys.FeedbackSeen("")
	switch {
	case f.EmailID != "":
		dedupTTL, dedupKey = ms(feedbackDedup), rkeys.FeedbackSeen("e|"+f.EmailID+"|"+f.Type)
	case f.EventID != "":
		dedupTTL, dedupKey = ms(feedbackDedup), rkeys.FeedbackSeen("v|"+f.Source+"|"+f.EventID+"|"+f.Type)
	}
	hour := g.now().Unix() / 3600
	n, err := g.feedbackScript.Run(ctx, g.rdb, []string{dedupKey, rkeys.FeedbackBucket(hour)},
		dedupTTL, kind+"|"+domain+"|"+f.Type, feedbackBucketTTL).Int64()
	if err != nil {
		return res, opError(ctx, "feedback", err)
	}
	res.Counted = n == 1
	if res.Counted {
		g.fb.reports.WithLabelValues(kind, domain, f.Type, f.Source).Inc()
	}
	g.log.LogAttrs(ctx, slog.LevelInfo, "feedback", slog.String("type", f.Type), slog.String("source", f.Source),
		slog.String("kind", kind), slog.String("domain", domain), slog.String("task_id", f.EmailID),
		slog.String("rcpt_hash", rcptHash(f.Recipient)), slog.String("status", token(strings.ReplaceAll(f.Status, ".", "_"))),
		slog.Bool("suppressed", res.Suppressed), slog.Bool("counted", res.Counted))
	return res, nil
}

func rcptHash(addr string) string {
	if addr == "" {
		return ""
	}
	return pii.Hash(addr)
}

// RefuseFeedback counts a report that was refused (a bad token, a failed
// signature, an oversized message...) by source and reason, both short
// tokens (anything else is counted as "other"), in Redis and in this
// process's metrics. A Redis error is returned but the metric is counted.
func (g *Guard) RefuseFeedback(ctx context.Context, source, reason string) error {
	source, reason = orOther(token(source)), orOther(token(reason))
	g.fb.refused.WithLabelValues(source, reason).Inc()
	if err := g.rdb.HIncrBy(ctx, rkeys.FeedbackRefused, source+"|"+reason, 1).Err(); err != nil {
		return opError(ctx, "refuse feedback", err)
	}
	return nil
}

func orOther(s string) string {
	if s == "" {
		return "other"
	}
	return s
}

// feedbackKind bounds the kind label to the policy's kinds.
func (g *Guard) feedbackKind(kind string) string {
	if _, ok := g.plans[kind]; ok {
		return kind
	}
	return UnknownKind
}

// feedbackDomain bounds the domain label to the policy's listed domains.
func (g *Guard) feedbackDomain(addr string) string {
	d := g.domainOf(addr)
	if _, ok := g.policy.Domains[d]; ok && d != "default" {
		return d
	}
	return OtherDomain
}

// FeedbackCounts are the counts of one kind or one domain over
// [FeedbackWindow].
type FeedbackCounts struct {
	// Sent counts emails the relay accepted.
	Sent int64 `json:"sent"`
	// Hard, Soft and Complaints count reports.
	Hard       int64 `json:"hard"`
	Soft       int64 `json:"soft"`
	Complaints int64 `json:"complaints"`
	// BounceRate is Hard / Sent and ComplaintRate Complaints / Sent; both
	// 0 when nothing was sent in the window.
	BounceRate    float64 `json:"bounce_rate"`
	ComplaintRate float64 `json:"complaint_rate"`
}

func (c *FeedbackCounts) add(typ string, n int64) {
	switch typ {
	case "sent":
		c.Sent += n
	case FeedbackHard:
		c.Hard += n
	case FeedbackSoft:
		c.Soft += n
	case FeedbackComplaint:
		c.Complaints += n
	}
}

func (c *FeedbackCounts) rates() {
	if c.Sent > 0 {
		c.BounceRate = float64(c.Hard) / float64(c.Sent)
		c.ComplaintRate = float64(c.Complaints) / float64(c.Sent)
	}
}

// FeedbackStats are the bounce and complaint counts of every process that
// shares the guard's Redis.
type FeedbackStats struct {
	// Window is the period of Kinds and Domains ("24h").
	Window string `json:"window"`
	// Kinds holds the counts per kind (every kind of the policy, and
	// [UnknownKind] when it has counts).
	Kinds map[string]*FeedbackCounts `json:"kinds"`
	// Domains holds the counts per recipient domain: the policy's listed
	// domains and [OtherDomain].
	Domains map[string]*FeedbackCounts `json:"domains"`
	// Refused counts refused reports per source and reason since the
	// start.
	Refused map[string]map[string]int64 `json:"refused"`

	cells map[[3]string]int64 // kind, domain, type
}

// FeedbackStats returns the counts of the last [FeedbackWindow], in one
// round trip.
func (g *Guard) FeedbackStats(ctx context.Context) (FeedbackStats, error) {
	hour := g.now().Unix() / 3600
	n := int64(FeedbackWindow / time.Hour)
	cmds := make([]*redis.MapStringStringCmd, 0, n)
	var refused *redis.MapStringStringCmd
	_, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for h := hour - n + 1; h <= hour; h++ {
			cmds = append(cmds, p.HGetAll(ctx, rkeys.FeedbackBucket(h)))
		}
		refused = p.HGetAll(ctx, rkeys.FeedbackRefused)
		return nil
	})
	if err != nil {
		return FeedbackStats{}, opError(ctx, "feedback stats", err)
	}
	st := FeedbackStats{Window: "24h", Kinds: map[string]*FeedbackCounts{}, Domains: map[string]*FeedbackCounts{},
		Refused: map[string]map[string]int64{}, cells: map[[3]string]int64{}}
	for _, k := range g.kindNames() {
		st.Kinds[k] = &FeedbackCounts{}
	}
	for _, d := range g.feedbackDomains() {
		st.Domains[d] = &FeedbackCounts{}
	}
	for _, c := range cmds {
		for field, v := range c.Val() {
			parts := strings.SplitN(field, "|", 3)
			cnt, err := strconv.ParseInt(v, 10, 64)
			if len(parts) != 3 || err != nil {
				continue
			}
			st.cells[[3]string{parts[0], parts[1], parts[2]}] += cnt
			counts(st.Kinds, parts[0]).add(parts[2], cnt)
			counts(st.Domains, parts[1]).add(parts[2], cnt)
		}
	}
	for _, c := range st.Kinds {
		c.rates()
	}
	for _, c := range st.Domains {
		c.rates()
	}
	for field, v := range refused.Val() {
		source, reason, ok := strings.Cut(field, "|")
		cnt, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil {
			continue
		}
		if st.Refused[source] == nil {
			st.Refused[source] = map[string]int64{}
		}
		st.Refused[source][reason] += cnt
	}
	return st, nil
}

func counts(m map[string]*FeedbackCounts, key string) *FeedbackCounts {
	if m[key] == nil {
		m[key] = &FeedbackCounts{}
	}
	return m[key]
}

// feedbackDomains returns the domain labels: the listed domains and
// [OtherDomain], sorted.
func (g *Guard) feedbackDomains() []string {
	out := []string{OtherDomain}
	for d := range g.policy.Domains {
		if d != "default" {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// SentCounter counts the emails the relay accepted, per kind and domain,
// for the rates of [FeedbackStats]. Add keeps the counts in memory; a
// background goroutine adds them to Redis every interval, so a send costs
// no round trip. Counts not yet flushed when the process dies are lost,
// which only makes the rates err on the high side. It is safe for
// concurrent use.
type SentCounter struct {
	g        *Guard
	interval time.Duration
	mu       sync.Mutex
	pending  map[string]int64 // bucket field -> count
	started  atomic.Bool
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

// NewSentCounter returns a counter flushing every interval (zero means 1s).
// Start it with [SentCounter.Start]; [SentCounter.Shutdown] flushes and
// stops it.
func (g *Guard) NewSentCounter(interval time.Duration) *SentCounter {
	if interval <= 0 {
		interval = time.Second
	}
	return &SentCounter{g: g, interval: interval, pending: map[string]int64{}, stop: make(chan struct{}), done: make(chan struct{})}
}

// Add counts one email of kind sent to addr.
func (c *SentCounter) Add(kind, addr string) {
	kind, domain := c.g.feedbackKind(kind), c.g.feedbackDomain(addr)
	c.g.fb.sent.WithLabelValues(kind, domain).Inc()
	c.mu.Lock()
	c.pending[kind+"|"+domain+"|sent"]++
	c.mu.Unlock()
}

// Start starts the flushing goroutine; calling it again does nothing.
func (c *SentCounter) Start() {
	if c.started.Swap(true) {
		return
	}
	go func() {
		defer close(c.done)
		t := time.NewTicker(c.interval)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), c.interval+5*time.Second)
				if err := c.Flush(ctx); err != nil {
					c.g.log.Warn("feedback: count sent emails", "err", err)
				}
				cancel()
			}
		}
	}()
}

// Flush adds the pending counts to Redis now. On an error they stay
// pending for the next flush.
func (c *SentCounter) Flush(ctx context.Context) error {
	c.mu.Lock()
	batch := c.pending
	c.pending = map[string]int64{}
	c.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	key := rkeys.FeedbackBucket(c.g.now().Unix() / 3600)
	_, err := c.g.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for f, n := range batch {
			p.HIncrBy(ctx, key, f, n)
		}
		p.Expire(ctx, key, time.Duration(feedbackBucketTTL)*time.Second)
		return nil
	})
	if err != nil {
		c.mu.Lock()
		for f, n := range batch {
			c.pending[f] += n
		}
		c.mu.Unlock()
		return opError(ctx, "count sent", err)
	}
	return nil
}

// Shutdown stops the goroutine, then flushes what is pending. It is
// idempotent and returns ctx.Err() if ctx ends first.
func (c *SentCounter) Shutdown(ctx context.Context) error {
	c.once.Do(func() { close(c.stop) })
	if c.started.Load() {
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return c.Flush(ctx)
}

// feedbackMetrics are the per-process feedback collectors.
type feedbackMetrics struct {
	reports *prometheus.CounterVec
	refused *prometheus.CounterVec
	sent    *prometheus.CounterVec
}

func newFeedbackMetrics(reg prometheus.Registerer) (*feedbackMetrics, error) {
	m := &feedbackMetrics{
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "floodgate_bounces_total",
			Help: "Bounce and complaint reports counted by this process, by kind, recipient domain (the policy's listed domains or other), type (hard, soft, complaint) and source (dsn, arf, ses, sendgrid, mailgun).",
		}, []string{"kind", "domain", "type", "source"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "floodgate_bounces_refused_total",
			Help: "Reports refused by this process's bounce receiver and webhooks, by source and reason.",
		}, []string{"source", "reason"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "floodgate_bounces_sent_total",
			Help: "Emails this process sent (relay answered 250), by kind and recipient domain: the denominator of the bounce and complaint rates.",
		}, []string{"kind", "domain"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.reports, err = register(reg, m.reports); err != nil {
		return nil, err
	}
	if m.refused, err = register(reg, m.refused); err != nil {
		return nil, err
	}
	if m.sent, err = register(reg, m.sent); err != nil {
		return nil, err
	}
	return m, nil
}

// FeedbackCollector returns a Prometheus collector that reads
// [Guard.FeedbackStats] at each scrape (one round trip, 2s at most) and
// reports, for every process alike: floodgate_bounces_window{kind,domain,type}
// (counts over [FeedbackWindow], type sent, hard, soft or complaint),
// floodgate_kind_bounce_rate and floodgate_kind_complaint_rate{kind},
// floodgate_domain_bounce_rate and floodgate_domain_complaint_rate{domain}.
// Register it where one process's scrape should show them (cmd/worker
// does); when Redis does not answer the scrape has none of them.
func (g *Guard) FeedbackCollector() prometheus.Collector {
	return &feedbackCollector{g: g,
		window: prometheus.NewDesc("floodgate_bounces_window",
			"Emails sent and reports counted over the last 24h by every process, by kind, recipient domain and type (sent, hard, soft, complaint).",
			[]string{"kind", "domain", "type"}, nil),
		kindBounce: prometheus.NewDesc("floodgate_kind_bounce_rate",
			"Hard bounces per email sent over the last 24h, per kind.", []string{"kind"}, nil),
		kindComplaint: prometheus.NewDesc("floodgate_kind_complaint_rate",
			"Complaints per email sent over the last 24h, per kind.", []string{"kind"}, nil),
		domainBounce: prometheus.NewDesc("floodgate_domain_bounce_rate",
			"Hard bounces per email sent over the last 24h, per recipient domain (the policy's listed domains or other).", []string{"domain"}, nil),
		domainComplaint: prometheus.NewDesc("floodgate_domain_complaint_rate",
			"Complaints per email sent over the last 24h, per recipient domain.", []string{"domain"}, nil),
	}
}

type feedbackCollector struct {
	g                                                                *Guard
	window, kindBounce, kindComplaint, domainBounce, domainComplaint *prometheus.Desc
}

func (c *feedbackCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.window, c.kindBounce, c.kindComplaint, c.domainBounce, c.domainComplaint} {
		ch <- d
	}
}

func (c *feedbackCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.g.FeedbackStats(ctx)
	if err != nil {
		c.g.log.Warn("feedback metrics", "err", err)
		return
	}
	for cell, n := range st.cells {
		ch <- prometheus.MustNewConstMetric(c.window, prometheus.GaugeValue, float64(n), cell[0], cell[1], cell[2])
	}
	for k, fc := range st.Kinds {
		ch <- prometheus.MustNewConstMetric(c.kindBounce, prometheus.GaugeValue, fc.BounceRate, k)
		ch <- prometheus.MustNewConstMetric(c.kindComplaint, prometheus.GaugeValue, fc.ComplaintRate, k)
	}
	for d, fc := range st.Domains {
		ch <- prometheus.MustNewConstMetric(c.domainBounce, prometheus.GaugeValue, fc.BounceRate, d)
		ch <- prometheus.MustNewConstMetric(c.domainComplaint, prometheus.GaugeValue, fc.ComplaintRate, d)
	}
}

// ClaimNonce records a one-time value (a webhook's signed token) for ttl
// and reports whether it was new: a request replayed with the same value is
// refused by its caller. scope separates the callers.
func (g *Guard) ClaimNonce(ctx context.Context, scope, nonce string, ttl time.Duration) (bool, error) {
	ok, err := g.rdb.SetNX(ctx, rkeys.Nonce(scope, nonce), "1", max(ttl, time.Second)).Result()
	if err != nil {
		return false, opError(ctx, "claim nonce", err)
	}
	return ok, nil
}

// ReleaseNonce forgets a claimed value, so that a request whose processing
// failed may be sent again.
func (g *Guard) ReleaseNonce(ctx context.Context, scope, nonce string) error {
	if err := g.rdb.Del(ctx, rkeys.Nonce(scope, nonce)).Err(); err != nil {
		return opError(ctx, "release nonce", err)
	}
	return nil
}
