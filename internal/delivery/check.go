package delivery

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
)

// PoolStats is a snapshot of a [Pool]'s connections.
type PoolStats struct {
	// Open counts the connections set up and not yet closed: those in use
	// by a Send and the idle ones.
	Open int
	// Idle counts the open connections waiting for a Send.
	Idle int
}

// Stats returns the pool's connection counts.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	// A connection counted open is put back idle after the count is read,
	// or the other way round: keep the snapshot consistent.
	return PoolStats{Open: max(int(p.open.Load()), idle), Idle: idle}
}

// Check tells whether the relay accepts connections now: it opens a
// connection of its own, as a Send would (TCP, greeting, TLS, EHLO, AUTH),
// within DialTimeout and ctx, then QUITs it. It takes no pool slot, so a
// busy pool does not make the relay look down, and no pooled connection,
// so it tests what a new Send would meet. Errors are *[SendError].
func (p *Pool) Check(ctx context.Context) error {
	pc, serr := p.dial(ctx)
	if serr != nil {
		return serr
	}
	p.quit(pc)
	return nil
}

// Collector returns a collector of floodgate_smtp_connections{state}: the
// pool's open connections (state "open", in use or idle) and the idle ones
// (state "idle"), read at scrape time.
func (p *Pool) Collector() prometheus.Collector {
	return &poolCollector{p: p, desc: prometheus.NewDesc("floodgate_smtp_connections",
		"SMTP connections of this process's pool to the relay: open (in use or idle) and idle.", []string{"state"}, nil)}
}

type poolCollector struct {
	p    *Pool
	desc *prometheus.Desc
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.p.Stats()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(st.Open), "open")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(st.Idle), "idle")
}
