// Package redisproc runs private redis-server processes on loopback, for
// tests (internal/testutil) and the flood drill's embedded stack.
package redisproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotFound: redis-server is not on PATH.
var ErrNotFound = errors.New("redisproc: redis-server not found on PATH")

// Options says how to start a server. The zero value starts PATH's
// redis-server on a free port.
type Options struct {
	// Bin is the redis-server binary; "" looks it up on PATH.
	Bin string
	// Port is the port to listen on; 0 picks a free one.
	Port int
	// Args are passed to redis-server after floodgate's own (loopback,
	// persistence off, a private directory and log file).
	Args []string
}

// Proc is one running redis-server. Stop it when done.
type Proc struct {
	// Addr is the server's host:port on loopback.
	Addr string
	// Port is its port.
	Port int
	// Version is the server's redis_version.
	Version string

	cmd    *exec.Cmd
	dir    string
	exited chan struct{}
}

// Start starts a server and waits until it answers (up to 10s or ctx).
func Start(ctx context.Context, o Options) (*Proc, error) {
	bin := o.Bin
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			return nil, ErrNotFound
		}
	}
	port := o.Port
	if port == 0 {
		var err error
		if port, err = FreePort(); err != nil {
			return nil, fmt.Errorf("redisproc: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "floodgate-redis-")
	if err != nil {
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	p := &Proc{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, dir: dir, exited: make(chan struct{})}
	args := append([]string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--logfile", filepath.Join(dir, "redis.log"),
	}, o.Args...)
	p.cmd = exec.Command(bin, args...)
	if err := p.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("redisproc: start %s: %w", bin, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	if err := p.wait(ctx, 10*time.Second); err != nil {
		tail := p.LogTail(10)
		p.Stop()
		return nil, fmt.Errorf("redisproc: redis-server on %s: %w%s", p.Addr, err, tail)
	}
	return p, nil
}

// URL returns the server's redis:// URL.
func (p *Proc) URL() string { return "redis://" + p.Addr }

// wait pings the server until it answers, exits, or within passes.
func (p *Proc) wait(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1})
	defer c.Close()
	for {
		info, err := c.InfoMap(ctx, "server").Result()
		if err == nil {
			p.Version = info["Server"]["redis_version"]
			return nil
		}
		var reply redis.Error
		if errors.As(err, &reply) && c.Ping(ctx).Err() == nil {
			// INFO renamed or disabled (--rename-command): up, version unknown.
			return nil
		}
		select {
		case <-p.exited:
			return errors.New("exited at start-up")
		case <-ctx.Done():
			return err
		// A port that is coming up gives no event to wait on.
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Stop kills the server (as a crash would), waits for it and removes its
// directory. It is safe to call more than once.
func (p *Proc) Stop() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	os.RemoveAll(p.dir)
}

// Pause stops the server process (SIGSTOP): its connections stay open but
// nothing is answered, as when a host freezes or a network partition holds
// packets, and no data is lost. Resume continues it.
func (p *Proc) Pause() error { return p.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (p *Proc) Resume() error { return p.signal(syscall.SIGCONT) }

func (p *Proc) signal(sig os.Signal) error {
	if p.cmd.Process == nil {
		return errors.New("redisproc: not started")
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("redisproc: signal %v: %w", sig, err)
	}
	return nil
}

// LogTail returns the last n lines of the server's log, prefixed for an
// error message, or "" when there are none.
func (p *Proc) LogTail(n int) string {
	f, err := os.Open(filepath.Join(p.dir, "redis.log"))
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		lines = append(lines, s.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 0 {
		return ""
	}
	return "\nredis log:\n" + strings.Join(lines, "\n")
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
