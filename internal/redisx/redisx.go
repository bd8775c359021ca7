// Package redisx opens the go-redis clients floodgate's commands use, with
// settings that suit a guard that must fail closed and fast.
package redisx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Open parses a redis:// or rediss:// URL and returns a client. A URL with
// one or more "addr" query parameters (go-redis cluster URL form, e.g.
// redis://h1:7000?addr=h2:7001&addr=h3:7002) opens a Redis Cluster client.
//
// Context deadlines are honoured (ContextTimeoutEnabled), and command
// timeouts are short so that a Redis outage surfaces as an error within
// seconds rather than hanging an enqueue.
func Open(rawURL string) (redis.UniversalClient, error) {
	if rawURL == "" {
		return nil, errors.New("redis URL is empty")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis URL: %w", redact(err, rawURL))
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("redis URL: scheme must be redis:// or rediss://, got %q", u.Scheme)
	}
	if u.Query().Has("addr") {
		opt, err := redis.ParseClusterURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("redis cluster URL: %w", redact(err, rawURL))
		}
		opt.ContextTimeoutEnabled = true
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = 2*time.Second, 2*time.Second, 2*time.Second
		return redis.NewClusterClient(opt), nil
	}
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis URL: %w", redact(err, rawURL))
	}
	opt.ContextTimeoutEnabled = true
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = 2*time.Second, 2*time.Second, 2*time.Second
	return redis.NewClient(opt), nil
}

// redact keeps a password in the URL out of error messages.
func redact(err error, rawURL string) error {
	if u, perr := url.Parse(rawURL); perr == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			return errors.New(strings.ReplaceAll(err.Error(), p, "xxxxx"))
		}
	}
	return err
}

// RouteClientLogs sends go-redis's own log lines (dial retries and the
// like, printed to stderr by default) to logger at debug level; the errors
// that matter reach callers as returned errors. go-redis keeps its logger
// in a package variable, so only a main should call this.
func RouteClientLogs(logger *slog.Logger) {
	redis.SetLogger(slogPrintf{logger})
}

type slogPrintf struct{ l *slog.Logger }

func (s slogPrintf) Printf(ctx context.Context, format string, v ...any) {
	s.l.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}
