// Package devstack starts the embedded pieces of `worker -dev`: an
// in-process Redis (miniredis), an smtpsink, and generated DKIM keys, so
// floodgate runs on a fresh machine with no setup.
package devstack

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"

	"github.com/floodgate-dev/floodgate/internal/delivery"
	"github.com/floodgate-dev/floodgate/internal/keyfile"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// Config configures a [Stack].
type Config struct {
	// RedisAddr is where the embedded Redis listens; default
	// "127.0.0.1:6380", or a free port when that is taken.
	RedisAddr string
	// SMTPAddr and HTTPAddr are the sink's listeners; defaults
	// "127.0.0.1:2525" and "127.0.0.1:8025", or free ports when taken.
	SMTPAddr, HTTPAddr string
	// Domain is the DKIM signing domain; default "example.test".
	Domain string
	// Logger receives the sink's log lines; nil discards.
	Logger *slog.Logger
}

// Stack is a running embedded development stack.
type Stack struct {
	// Redis is the embedded Redis.
	Redis *miniredis.Miniredis
	// Sink is the embedded SMTP sink, verifying the generated keys. Its
	// reports have no relay until the worker, once its bounce receiver
	// listens, names it (smtpsink.Server.SetBounceRelay).
	Sink *smtpsink.Server
	// Keys are the generated DKIM keys (RSA-2048 and Ed25519).
	Keys []delivery.Key
	// Domain is the DKIM signing domain.
	Domain string
	// HashKeyFile and PayloadKeyFile hold the generated hash key and payload
	// key, for the -hash-key-file and -payload-key-file of the stack's other
	// commands (cmd/enqueue); Secrets are the same keys.
	HashKeyFile, PayloadKeyFile string
	Secrets                     keyfile.Secrets

	dir      string
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// Start starts the stack.
func Start(cfg Config) (*Stack, error) {
	if cfg.Domain == "" {
		cfg.Domain = "example.test"
	}
	s := &Stack{Domain: cfg.Domain, stop: make(chan struct{})}
	for _, k := range []struct{ sel, alg string }{{"dev-rsa", "rsa"}, {"dev-ed25519", "ed25519"}} {
		key, err := delivery.GenerateKey(k.sel, k.alg)
		if err != nil {
			return nil, fmt.Errorf("devstack: generate %s key: %w", k.alg, err)
		}
		s.Keys = append(s.Keys, key)
	}

	if err := s.writeSecrets(); err != nil {
		return nil, err
	}

	s.Redis = miniredis.NewMiniRedis()
	if err := startOn(cfg.RedisAddr, "127.0.0.1:6380", s.Redis.StartAddr); err != nil {
		return nil, fmt.Errorf("devstack: redis: %w", err)
	}
	if err := s.Redis.Server().Register("CONFIG", configGet); err != nil {
		s.Redis.Close()
		return nil, fmt.Errorf("devstack: redis: %w", err)
	}

	keys, err := smtpsink.ParseKeys(strings.NewReader(""))
	if err != nil {
		return nil, err
	}
	for _, k := range s.Keys {
		keys.Add(k.Selector+"._domainkey."+cfg.Domain, k.DNSRecord())
	}
	for _, addrs := range [][2]string{{or(cfg.SMTPAddr, "127.0.0.1:2525"), or(cfg.HTTPAddr, "127.0.0.1:8025")}, {"127.0.0.1:0", "127.0.0.1:0"}} {
		s.Sink, err = smtpsink.New(smtpsink.Config{SMTPAddr: addrs[0], HTTPAddr: addrs[1], Keys: keys, Logger: cfg.Logger})
		if err != nil {
			break
		}
		if err = s.Sink.Start(); err == nil || cfg.SMTPAddr != "" {
			break
		}
	}
	if err != nil {
		s.Redis.Close()
		return nil, fmt.Errorf("devstack: smtpsink: %w", err)
	}

	// miniredis only expires keys when its clock is advanced: follow the
	// wall clock so TTLs behave as on a real Redis.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-s.stop:
				return
			case now := <-t.C:
				s.Redis.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	return s, nil
}

// writeSecrets generates the hash and payload keys and writes them to
// files only this user can read, in a directory removed at Shutdown.
func (s *Stack) writeSecrets() error {
	dir, err := os.MkdirTemp("", "floodgate-dev-")
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	s.dir = dir
	hash, payload := keyfile.Generate()
	s.HashKeyFile, s.PayloadKeyFile = filepath.Join(dir, "hash.key"), filepath.Join(dir, "payload.keys")
	for _, f := range [][2]string{{s.HashKeyFile, hash}, {s.PayloadKeyFile, payload}} {
		if err := os.WriteFile(f[0], []byte(f[1]+"\n"), 0o600); err != nil {
			return fmt.Errorf("devstack: %w", err)
		}
	}
	s.Secrets, err = keyfile.Load(func(string) string { return "" }, s.HashKeyFile, s.PayloadKeyFile, true)
	return err
}

// RedisURL returns the embedded Redis's URL.
func (s *Stack) RedisURL() string { return "redis://" + s.Redis.Addr() }

// Shutdown stops the sink, then Redis. It is idempotent.
func (s *Stack) Shutdown(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		err = s.Sink.Shutdown(ctx)
		s.Redis.Close()
		os.RemoveAll(s.dir)
	})
	return err
}

// configGet answers CONFIG GET maxmemory-policy, which miniredis lacks: it
// never evicts, so the commands' start-up check (guard.CheckRedis) passes
// against it. Other parameters are unknown, as Redis answers for a
// parameter it does not have, so persistence reads as unknown.
func configGet(c *server.Peer, cmd string, args []string) {
	if len(args) < 2 || !strings.EqualFold(args[0], "get") {
		c.WriteError("ERR only CONFIG GET is supported")
		return
	}
	if strings.EqualFold(args[1], "maxmemory-policy") {
		c.WriteMapLen(1)
		c.WriteBulk("maxmemory-policy")
		c.WriteBulk("noeviction")
		return
	}
	c.WriteMapLen(0)
}

// startOn tries addr, or the preferred address then a free port when addr
// is empty.
func startOn(addr, preferred string, start func(string) error) error {
	if addr != "" {
		return start(addr)
	}
	if err := start(preferred); err == nil {
		return nil
	}
	return start("127.0.0.1:0")
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
