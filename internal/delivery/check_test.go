package delivery

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	ptestutil "github.com/prometheus/client_golang/prometheus/testutil"
)

// Check opens a connection of its own (EHLO, then QUIT) and leaves the
// pool's alone; a relay that does not answer is an error of the dial stage.
func TestPoolCheck(t *testing.T) {
	ts := startServer(t, serverOpts{})
	p := newTestPool(t, PoolConfig{Addr: ts.Addr, MaxConns: 1})
	mustSend(t, p, "u@example.org", testMsg(t, 1))
	if err := p.Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	<-ts.logouts // the check's QUIT
	if got := ts.Conns(); got != 2 {
		t.Errorf("server connections = %d, want 2 (the pool's and the check's)", got)
	}
	if got := strings.Join(ts.Commands(1), " "); got != "EHLO QUIT" {
		t.Errorf("check commands %q, want EHLO QUIT", got)
	}
	if st := p.Stats(); st.Open != 1 || st.Idle != 1 {
		t.Errorf("stats after the check %+v, want the pool's one connection open and idle", st)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close() // nothing listens there now
	q := newTestPool(t, PoolConfig{Addr: down})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = q.Check(ctx)
	if se := asSendError(t, err); se.Stage != StageDial || !se.Temporary {
		t.Errorf("Check of a closed port: %+v, want a temporary dial error", se)
	}
}

// Stats counts connections open and idle: a Send in progress holds one
// open and not idle, a discarded one is no longer open; the collector
// exposes both and lints clean.
func TestPoolStats(t *testing.T) {
	ts := startServer(t, serverOpts{})
	p := newTestPool(t, PoolConfig{Addr: ts.Addr, MaxConns: 2})
	if st := p.Stats(); st != (PoolStats{}) {
		t.Errorf("new pool %+v, want none", st)
	}
	mustSend(t, p, "u@example.org", testMsg(t, 1))
	if st := p.Stats(); st != (PoolStats{Open: 1, Idle: 1}) {
		t.Errorf("after a send %+v, want 1 open, 1 idle", st)
	}
	// The relay closes it while idle: the next send discards it and dials.
	ts.closeConns()
	<-ts.logouts
	mustSend(t, p, "u@example.org", testMsg(t, 2))
	if st := p.Stats(); st != (PoolStats{Open: 1, Idle: 1}) {
		t.Errorf("after a redial %+v, want 1 open, 1 idle", st)
	}
	want := `# HELP floodgate_smtp_connections SMTP connections of this process's pool to the relay: open (in use or idle) and idle.
# TYPE floodgate_smtp_connections gauge
floodgate_smtp_connections{state="idle"} 1
floodgate_smtp_connections{state="open"} 1
`
	c := p.Collector()
	if err := ptestutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if problems, err := ptestutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st != (PoolStats{}) {
		t.Errorf("after Close %+v, want none", st)
	}
}
