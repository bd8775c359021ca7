package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/bounce"
	"github.com/floodgate-dev/floodgate/internal/verp"
	"github.com/floodgate-dev/floodgate/queue"
)

// bounceConfig is the return path, bounce receiver and webhook part of
// the worker's configuration.
type bounceConfig struct {
	BounceDomain  string
	BouncePrefix  string
	BounceSMTP    string
	BounceSecrets [][]byte
	secretFile    string
}

func (c *config) bounceFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.BounceDomain, "bounce-domain", "", "send with the VERP return path PREFIX+<token>@DOMAIN (signed with env FLOODGATE_BOUNCE_SECRET or -bounce-secret-file); its MX is -bounce-smtp")
	fs.StringVar(&c.BouncePrefix, "bounce-prefix", verp.DefaultPrefix, "local part before '+' in the return path (at most 7 characters)")
	fs.StringVar(&c.secretFile, "bounce-secret-file", "", "file of return path secrets, one per line, the first signing (rotation: add the new one first)")
	fs.StringVar(&c.BounceSMTP, "bounce-smtp", "", "serve the bounce receiver (DSNs, ARF complaints) for -bounce-domain on ADDR, e.g. :25 (with -dev: 127.0.0.1:2526)")
}

// bounceEnv reads the secrets: the file, else FLOODGATE_BOUNCE_SECRET.
func (c *config) bounceEnv(getenv func(string) string) error {
	text := getenv("FLOODGATE_BOUNCE_SECRET")
	if c.secretFile != "" {
		b, err := os.ReadFile(c.secretFile)
		if err != nil {
			return fmt.Errorf("-bounce-secret-file: %w", err)
		}
		text = string(b)
	}
	if text == "" {
		return nil
	}
	s, err := verp.ParseSecrets(text)
	if err != nil {
		return fmt.Errorf("bounce secret: %w", err)
	}
	c.BounceSecrets = s
	return nil
}

func (c *config) checkBounce() error {
	switch {
	case c.BounceSMTP != "" && c.BounceDomain == "":
		return errors.New("-bounce-smtp needs -bounce-domain")
	case c.BounceDomain != "" && len(c.BounceSecrets) == 0:
		return errors.New("-bounce-domain needs a secret in FLOODGATE_BOUNCE_SECRET or -bounce-secret-file")
	}
	return nil
}

// feedback is the worker's side of bounces: the return path codec, the
// bounce receiver and the sent counter behind the bounce rates.
type feedback struct {
	codec  *verp.Codec
	srv    *bounce.Server
	sent   *guard.SentCounter
	policy *guard.Policy
}

// startFeedback starts what cfg asks for. With -dev, a bounce domain, a
// secret and the receiver are always there.
func startFeedback(cfg *config, g *guard.Guard, policy *guard.Policy, devDomain string, logger *slog.Logger) (*feedback, error) {
	f := &feedback{sent: g.NewSentCounter(0), policy: policy}
	f.sent.Start()
	if cfg.Dev {
		if cfg.BounceDomain == "" {
			cfg.BounceDomain = "bounce." + devDomain
		}
		if len(cfg.BounceSecrets) == 0 {
			var b [32]byte
			_, _ = rand.Read(b[:])
			cfg.BounceSecrets = [][]byte{[]byte(hex.EncodeToString(b[:]))}
		}
	}
	if cfg.BounceDomain == "" {
		return f, nil
	}
	var err error
	f.codec, err = verp.New(verp.Config{Domain: cfg.BounceDomain, Prefix: cfg.BouncePrefix, Secrets: cfg.BounceSecrets,
		Kinds: slices.Sorted(maps.Keys(policy.KindPolicies))})
	if err != nil {
		f.shutdown(context.Background())
		return nil, err
	}
	addrs := []string{cfg.BounceSMTP}
	if cfg.Dev && cfg.BounceSMTP == "" {
		addrs = []string{bounce.DefaultAddr, "127.0.0.1:0"}
	}
	if addrs[0] == "" {
		return f, nil
	}
	for _, a := range addrs {
		srv, err := bounce.NewServer(bounce.ServerConfig{Addr: a, Codec: f.codec, Recorder: g, Policy: policy, Logger: logger})
		if err != nil {
			f.shutdown(context.Background())
			return nil, err
		}
		if err = srv.Start(); err == nil {
			f.srv = srv
			break
		}
		if a == addrs[len(addrs)-1] {
			f.shutdown(context.Background())
			return nil, fmt.Errorf("-bounce-smtp: %w", err)
		}
	}
	return f, nil
}

// returnPath is the worker's Config.ReturnPath: nil without a bounce domain.
func (f *feedback) returnPath() func(*queue.Payload) string {
	if f.codec == nil {
		return nil
	}
	return bounce.ReturnPath(f.codec, f.policy, nil)
}

// observe counts sent emails for the bounce rates.
func (f *feedback) observe(p *queue.Payload, o queue.Outcome, _ string) {
	if o == queue.Sent && p != nil {
		f.sent.Add(p.Kind, p.To)
	}
}

// bounceAddr is the receiver's address, "" when it is off.
func (f *feedback) bounceAddr() string {
	if f.srv == nil {
		return ""
	}
	return f.srv.Addr()
}

// shutdown stops the receiver, then flushes the sent counts.
func (f *feedback) shutdown(ctx context.Context) {
	if f.srv != nil {
		_ = f.srv.Shutdown(ctx)
	}
	_ = f.sent.Shutdown(ctx)
}

// smtpSuppressor records the worker's own hard bounces (the relay refused
// the recipient during the session) with source smtp.
type smtpSuppressor struct{ g *guard.Guard }

func (s smtpSuppressor) Suppress(ctx context.Context, addr, reason string) error {
	return s.g.SuppressFrom(ctx, addr, reason, guard.SourceSMTP)
}
