// Package testutil starts the real components that floodgate's tests talk to.
package testutil

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/redisproc"
)

// Redis is a private redis-server process started for one test.
type Redis struct {
	// Addr is the server's host:port on loopback.
	Addr string
	// Port is the server's TCP port.
	Port int
	proc *redisproc.Proc
	args []string
}

// URL returns the server's redis:// URL.
func (r *Redis) URL() string { return "redis://" + r.Addr }

// Client returns a go-redis client for the server, closed at test cleanup.
func (r *Redis) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// StartRedis starts a private redis-server on a free loopback port with
// persistence off, and stops it when the test ends. Extra arguments are
// passed to redis-server (e.g. "--maxmemory", "10mb").
//
// redis-server must be installed: a missing binary fails the test rather than
// skipping it, so CI cannot go green without the real component.
func StartRedis(t testing.TB, extra ...string) *Redis {
	t.Helper()
	r := &Redis{args: extra}
	r.start(t, 0)
	t.Cleanup(func() { r.Stop() })
	return r
}

func (r *Redis) start(t testing.TB, port int) {
	t.Helper()
	p, err := redisproc.Start(context.Background(), redisproc.Options{Port: port, Args: r.args})
	if errors.Is(err, redisproc.ErrNotFound) {
		t.Fatalf("redis-server not found on PATH (install Debian's redis-server): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	r.proc, r.Addr, r.Port = p, p.Addr, p.Port
}

// Stop kills the server process (as a crash would) and waits for it to exit.
// It is safe to call more than once.
func (r *Redis) Stop() {
	if r.proc != nil {
		r.proc.Stop()
		r.proc = nil
	}
}

// Pause freezes the server (SIGSTOP) until Resume: clients' connections
// stay open and their commands wait unanswered, and no data is lost. A
// paused server is resumed at test cleanup, before it is stopped.
func (r *Redis) Pause(t testing.TB) {
	t.Helper()
	if err := r.proc.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.proc != nil {
			_ = r.proc.Resume()
		}
	})
}

// Resume continues a paused server.
func (r *Redis) Resume(t testing.TB) {
	t.Helper()
	if err := r.proc.Resume(); err != nil {
		t.Fatal(err)
	}
}

// Restart starts the server again on the same port after Stop, with an empty
// dataset (persistence is off).
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	r.Stop()
	r.start(t, r.Port)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := redisproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}
