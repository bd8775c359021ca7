package drill

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
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNoRedisServer is returned in embedded mode when redis-server is not
// installed. miniredis is no substitute: its Lua is too slow for the
// drill's figures to mean anything.
var ErrNoRedisServer = errors.New("drill: redis-server not found on PATH: install it (Debian: apt-get install redis-server) or run against a deployment with -redis, -api and -sink")

// redisProc is a private redis-server process.
type redisProc struct {
	addr    string
	version string
	cmd     *exec.Cmd
	dir     string
	exited  chan struct{}
}

// startRedis starts bin (redis-server; "" looks it up) on a free loopback
// port with persistence off and waits until it answers.
func startRedis(ctx context.Context, bin string) (*redisProc, error) {
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			return nil, ErrNoRedisServer
		}
	}
	dir, err := os.MkdirTemp("", "floodgate-drill-redis-")
	if err != nil {
		return nil, fmt.Errorf("drill: redis: %w", err)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("drill: redis: %w", err)
	}
	p := &redisProc{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, exited: make(chan struct{})}
	p.cmd = exec.Command(bin,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--logfile", filepath.Join(dir, "redis.log"),
	)
	if err := p.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("drill: start %s: %w", bin, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	if err := p.wait(ctx, 10*time.Second); err != nil {
		tail := p.logTail()
		p.stop()
		return nil, fmt.Errorf("drill: redis-server on %s: %w%s", p.addr, err, tail)
	}
	return p, nil
}

// wait pings the server until it answers, exits, or within passes.
func (p *redisProc) wait(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1})
	defer c.Close()
	for {
		info, err := c.InfoMap(ctx, "server").Result()
		if err == nil {
			p.version = info["Server"]["redis_version"]
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

func (p *redisProc) url() string { return "redis://" + p.addr }

// stop kills the server, waits for it and removes its directory. It is
// safe to call more than once.
func (p *redisProc) stop() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	os.RemoveAll(p.dir)
}

func (p *redisProc) logTail() string {
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
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	if len(lines) == 0 {
		return ""
	}
	return "\nredis log:\n" + strings.Join(lines, "\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
