// Package testutil starts the real components that floodgate's tests talk to.
package testutil

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a private redis-server process started for one test.
type Redis struct {
	// Addr is the server's host:port on loopback.
	Addr string
	// Port is the server's TCP port.
	Port int
	cmd  *exec.Cmd
	dir  string
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
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found on PATH (install Debian's redis-server): %v", err)
	}
	dir := t.TempDir()
	port := FreePort(t)
	args := append([]string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--logfile", filepath.Join(dir, "redis.log"),
	}, extra...)
	r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, dir: dir, args: args}
	r.start(t, bin)
	t.Cleanup(func() { r.Stop() })
	return r
}

func (r *Redis) start(t testing.TB, bin string) {
	t.Helper()
	r.cmd = exec.Command(bin, r.args...)
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	if err := waitRedis(r.Addr, 10*time.Second); err != nil {
		logTail(t, filepath.Join(r.dir, "redis.log"))
		t.Fatalf("redis-server on %s: %v", r.Addr, err)
	}
}

// Stop kills the server process (as a crash would) and waits for it to exit.
// It is safe to call more than once.
func (r *Redis) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// Restart starts the server again on the same port after Stop, with an empty
// dataset (persistence is off).
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	r.Stop()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	r.start(t, bin)
}

func waitRedis(addr string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	var err error
	for ctx.Err() == nil {
		if err = c.Ping(ctx).Err(); err == nil {
			return nil
		}
		// Polling a port that is coming up: there is no event to wait on.
		time.Sleep(10 * time.Millisecond)
	}
	return err
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func logTail(t testing.TB, path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		lines = append(lines, s.Text())
	}
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	t.Logf("redis log:\n%s", strings.Join(lines, "\n"))
}
