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

	"github.com/floodgate-dev/floodgate/internal/rkeys"
)

// Types of [Bounce].
const (
	// BounceHard is a permanent delivery failure (status 5.x.x): the
	// recipient is suppressed.
	BounceHard = "hard"
	// BounceSoft is a temporary one (4.x.x, a delay): counted only.
	BounceSoft = "soft"
	// BounceComplaint is a recipient's complaint (an abuse report): the
	// recipient is suppressed.
	BounceComplaint = "complaint"
)

// Bounce accounting.
const (
	// BounceWindow is the period of the rates in [BounceStats]: the
	// current hour and the 23 before it.
	BounceWindow = 24 * time.Hour
	// UnknownKind labels reports whose kind is not one of the policy's.
	UnknownKind = "unknown"
	// OtherDomain labels recipients outside the policy's listed domains.
	OtherDomain = "other"

	bounceBucketTTL = int64((BounceWindow + 2*time.Hour) / time.Second)
	// bounceDedup covers a return path's lifetime and a provider's
	// retries, so a report delivered again is not counted again.
	bounceDedup = 8 * 24 * time.Hour
)

// Bounce is one report about an email that the relay had accepted: a
// bounce that arrived later, or a complaint.
type Bounce struct {
	// Type is [BounceHard], [BounceSoft] or [BounceComplaint].
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

// BounceResult is what [Guard.RecordBounce] did.
type BounceResult struct {
	// Suppressed reports whether the recipient is now on the suppression
	// list because of this report.
	Suppressed bool
	// Counted is false for a report counted before.
	Counted bool
	// Tripped reports whether this report tripped the kind's relay
	// breaker ([BouncePolicy]).
	Tripped bool
}

// RecordBounce applies a report: a hard bounce or a complaint suppresses
// its recipient (reason hard_bounce or complaint, with f.Source); every
// type is counted once per email (or provider event) and type in the
// hour's bucket behind [BounceStats], and in this process's metrics.
// Suppression comes first: when it fails nothing is counted, and the
// caller should have the report sent again.
func (g *Guard) RecordBounce(ctx context.Context, f Bounce) (BounceResult, error) {
	var reason string
	switch f.Type {
	case BounceHard:
		reason = "hard_bounce"
	case BounceComplaint:
		reason = "complaint"
	case BounceSoft:
	default:
		return BounceResult{}, fmt.Errorf("guard: bounce: type %q is not hard, soft or complaint", f.Type)
	}
	if f.Source == "" || token(f.Source) != f.Source {
		return BounceResult{}, fmt.Errorf("guard: bounce: source %q must be a short lower-case token", f.Source)
	}
	kind := g.bounceKind(f.Kind)
	domain := OtherDomain
	if f.Recipient != "" {
		domain = g.bounceDomainOf(f.Recipient)
	}
	var res BounceResult
	if reason != "" && f.Recipient != "" {
		if err := g.SuppressFrom(ctx, f.Recipient, reason, f.Source); err != nil {
			return res, err
		}
		res.Suppressed = true
	}
	dedupTTL, dedupKey := "0", rkeys.BounceSeen("")
	switch {
	case f.EmailID != "":
		dedupTTL, dedupKey = ms(bounceDedup), rkeys.BounceSeen("e|"+f.EmailID+"|"+f.Type)
	case f.EventID != "":
		dedupTTL, dedupKey = ms(bounceDedup), rkeys.BounceSeen("v|"+f.Source+"|"+f.EventID+"|"+f.Type)
	}
	hour := g.now().Unix() / 3600
	n, err := g.bounceScript.Run(ctx, g.rdb, []string{dedupKey, rkeys.BounceBucket(hour)},
		dedupTTL, kind+"|"+domain+"|"+f.Type, bounceBucketTTL).Int64()
	if err != nil {
		return res, opError(ctx, "bounce", err)
	}
	res.Counted = n == 1
	if res.Counted {
		g.bounces.reports.WithLabelValues(kind, domain, f.Type, f.Source).Inc()
		if f.Type != BounceSoft {
			res.Tripped = g.bounceTrip(ctx, kind, hour)
		}
	}
	g.log.LogAttrs(ctx, slog.LevelInfo, "bounce", slog.String("type", f.Type), slog.String("source", f.Source),
		slog.String("kind", kind), slog.String("domain", domain), slog.String("task_id", f.EmailID),
		slog.String("rcpt_hash", g.rcptHash(f.Recipient)), slog.String("status", token(strings.ReplaceAll(f.Status, ".", "_"))),
		slog.Bool("suppressed", res.Suppressed), slog.Bool("counted", res.Counted))
	return res, nil
}

// bounceTrip runs the kind's bounce trip script (rkeys.BounceTripScript)
// after a hard bounce or a complaint was counted, and reports whether it
// opened the breaker. Errors are logged: the report itself was recorded.
func (g *Guard) bounceTrip(ctx context.Context, kind string, hour int64) bool {
	pl, ok := g.plans[kind]
	if !ok || pl.policy.Breaker.Bounces.MinSends == 0 {
		return false
	}
	keys := []string{rkeys.BounceBucket(hour), rkeys.BounceBucket(hour - 1)}
	s, err := pl.bounce.Run(ctx, g.rdb, keys).Text()
	if err != nil {
		g.log.Warn("bounces: trip", "kind", kind, "err", opError(ctx, "bounce trip", err))
		return false
	}
	res, sfx, _ := strings.Cut(s, "|")
	if sfx != "" {
		g.breakerReply(ctx, pl, sfx)
	}
	return res == "tripped"
}

func (g *Guard) rcptHash(addr string) string {
	if addr == "" {
		return ""
	}
	return g.HashRecipient(addr)
}

// RefuseBounce counts a report that was refused (a bad token, a failed
// signature, an oversized message...) by source and reason, both short
// tokens (anything else is counted as "other"), in Redis and in this
// process's metrics. A Redis error is returned but the metric is counted.
func (g *Guard) RefuseBounce(ctx context.Context, source, reason string) error {
	source, reason = orOther(token(source)), orOther(token(reason))
	g.bounces.refused.WithLabelValues(source, reason).Inc()
	if err := g.rdb.HIncrBy(ctx, rkeys.BounceRefused, source+"|"+reason, 1).Err(); err != nil {
		return opError(ctx, "refuse bounce", err)
	}
	return nil
}

func orOther(s string) string {
	if s == "" {
		return "other"
	}
	return s
}

// bounceKind bounds the kind label to the policy's kinds.
func (g *Guard) bounceKind(kind string) string {
	if _, ok := g.plans[kind]; ok {
		return kind
	}
	return UnknownKind
}

// bounceDomainOf bounds the domain label to the policy's listed domains.
func (g *Guard) bounceDomainOf(addr string) string {
	d := g.domainOf(addr)
	if _, ok := g.policy.Domains[d]; ok && d != "default" {
		return d
	}
	return OtherDomain
}

// BounceCounts are the counts of one kind or one domain over
// [BounceWindow].
type BounceCounts struct {
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

func (c *BounceCounts) add(typ string, n int64) {
	switch typ {
	case "sent":
		c.Sent += n
	case BounceHard:
		c.Hard += n
	case BounceSoft:
		c.Soft += n
	case BounceComplaint:
		c.Complaints += n
	}
}

func (c *BounceCounts) rates() {
	if c.Sent > 0 {
		c.BounceRate = float64(c.Hard) / float64(c.Sent)
		c.ComplaintRate = float64(c.Complaints) / float64(c.Sent)
	}
}

// BounceStats are the bounce and complaint counts of every process that
// shares the guard's Redis.
type BounceStats struct {
	// Window is the period of Kinds and Domains ("24h").
	Window string `json:"window"`
	// Kinds holds the counts per kind (every kind of the policy, and
	// [UnknownKind] when it has counts).
	Kinds map[string]*BounceCounts `json:"kinds"`
	// Domains holds the counts per recipient domain: the policy's listed
	// domains and [OtherDomain].
	Domains map[string]*BounceCounts `json:"domains"`
	// Refused counts refused reports per source and reason since the
	// start.
	Refused map[string]map[string]int64 `json:"refused"`

	cells map[[3]string]int64 // kind, domain, type
}

// BounceStats returns the counts of the last [BounceWindow], in one
// round trip.
func (g *Guard) BounceStats(ctx context.Context) (BounceStats, error) {
	hour := g.now().Unix() / 3600
	n := int64(BounceWindow / time.Hour)
	cmds := make([]*redis.MapStringStringCmd, 0, n)
	var refused *redis.MapStringStringCmd
	_, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for h := hour - n + 1; h <= hour; h++ {
			cmds = append(cmds, p.HGetAll(ctx, rkeys.BounceBucket(h)))
		}
		refused = p.HGetAll(ctx, rkeys.BounceRefused)
		return nil
	})
	if err != nil {
		return BounceStats{}, opError(ctx, "bounce stats", err)
	}
	st := BounceStats{Window: "24h", Kinds: map[string]*BounceCounts{}, Domains: map[string]*BounceCounts{},
		Refused: map[string]map[string]int64{}, cells: map[[3]string]int64{}}
	for _, k := range g.kindNames() {
		st.Kinds[k] = &BounceCounts{}
	}
	for _, d := range g.bounceDomains() {
		st.Domains[d] = &BounceCounts{}
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

func counts(m map[string]*BounceCounts, key string) *BounceCounts {
	if m[key] == nil {
		m[key] = &BounceCounts{}
	}
	return m[key]
}

// bounceDomains returns the domain labels: the listed domains and
// [OtherDomain], sorted.
func (g *Guard) bounceDomains() []string {
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
// for the rates of [BounceStats]. Add keeps the counts in memory; a
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
	kind, domain := c.g.bounceKind(kind), c.g.bounceDomainOf(addr)
	c.g.bounces.sent.WithLabelValues(kind, domain).Inc()
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
					c.g.log.Warn("bounces: count sent emails", "err", err)
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
	key := rkeys.BounceBucket(c.g.now().Unix() / 3600)
	_, err := c.g.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for f, n := range batch {
			p.HIncrBy(ctx, key, f, n)
		}
		p.Expire(ctx, key, time.Duration(bounceBucketTTL)*time.Second)
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

// bounceMetrics are the per-process bounce collectors.
type bounceMetrics struct {
	reports *prometheus.CounterVec
	refused *prometheus.CounterVec
	sent    *prometheus.CounterVec
}

func newBounceMetrics(reg prometheus.Registerer) (*bounceMetrics, error) {
	m := &bounceMetrics{
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

// BounceCollector returns a Prometheus collector that reads
// [Guard.BounceStats] at each scrape (one round trip, 2s at most) and
// reports, for every process alike: floodgate_bounces_window{kind,domain,type}
// (counts over [BounceWindow], type sent, hard, soft or complaint),
// floodgate_kind_bounce_rate and floodgate_kind_complaint_rate{kind},
// floodgate_domain_bounce_rate and floodgate_domain_complaint_rate{domain}.
// Register it where one process's scrape should show them (cmd/worker
// does); when Redis does not answer the scrape has none of them.
func (g *Guard) BounceCollector() prometheus.Collector {
	return &bounceCollector{g: g,
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

type bounceCollector struct {
	g                                                                *Guard
	window, kindBounce, kindComplaint, domainBounce, domainComplaint *prometheus.Desc
}

func (c *bounceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.window, c.kindBounce, c.kindComplaint, c.domainBounce, c.domainComplaint} {
		ch <- d
	}
}

func (c *bounceCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.g.BounceStats(ctx)
	if err != nil {
		c.g.log.Warn("bounce metrics", "err", err)
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
