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
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

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

	WebhooksHTTP string
	SESTopics    []string
	SendGridKey  string
	MailgunKey   string
	sendGridFile string
	mailgunFile  string
}

func (c *config) bounceFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.BounceDomain, "bounce-domain", "", "send with the VERP return path PREFIX+<token>@DOMAIN (signed with env FLOODGATE_BOUNCE_SECRET or -bounce-secret-file); its MX is -bounce-smtp")
	fs.StringVar(&c.BouncePrefix, "bounce-prefix", verp.DefaultPrefix, "local part before '+' in the return path (at most 7 characters)")
	fs.StringVar(&c.secretFile, "bounce-secret-file", "", "file of return path secrets, one per line, the first signing (rotation: add the new one first)")
	fs.StringVar(&c.BounceSMTP, "bounce-smtp", "", "serve the bounce receiver (DSNs, ARF complaints) for -bounce-domain on ADDR, e.g. :25 (with -dev: 127.0.0.1:2526)")
	fs.StringVar(&c.WebhooksHTTP, "webhooks-http", "", "serve only the provider webhooks /v1/webhooks/{ses,sendgrid,mailgun} on ADDR, the listener to expose to providers (they are on -http too)")
	fs.Var((*multiFlag)(&c.SESTopics), "ses-topic", "SNS topic ARN whose SES notifications /v1/webhooks/ses accepts, repeatable")
	fs.StringVar(&c.sendGridFile, "sendgrid-key-file", "", "SendGrid Event Webhook verification key (or env FLOODGATE_SENDGRID_KEY); enables /v1/webhooks/sendgrid")
	fs.StringVar(&c.mailgunFile, "mailgun-key-file", "", "Mailgun webhook signing key (or env FLOODGATE_MAILGUN_SIGNING_KEY); enables /v1/webhooks/mailgun")
}

// readKey returns the file's content, or the environment variable's.
func readKey(file, env string, getenv func(string) string) (string, error) {
	if file == "" {
		return strings.TrimSpace(getenv(env)), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// bounceEnv reads the secrets: each from its file, else its environment
// variable.
func (c *config) bounceEnv(getenv func(string) string) error {
	var err error
	if c.SendGridKey, err = readKey(c.sendGridFile, "FLOODGATE_SENDGRID_KEY", getenv); err != nil {
		return fmt.Errorf("-sendgrid-key-file: %w", err)
	}
	if c.MailgunKey, err = readKey(c.mailgunFile, "FLOODGATE_MAILGUN_SIGNING_KEY", getenv); err != nil {
		return fmt.Errorf("-mailgun-key-file: %w", err)
	}
	if c.SendGridKey != "" {
		if _, err := bounce.ParseSendGridKey(c.SendGridKey); err != nil {
			return err
		}
	}
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
	case c.WebhooksHTTP != "" && len(c.SESTopics) == 0 && c.SendGridKey == "" && c.MailgunKey == "":
		return errors.New("-webhooks-http needs a provider: -ses-topic, a SendGrid key or a Mailgun signing key")
	}
	return nil
}

// bounceSide is the worker's side of bounces: the return path codec, the
// bounce receiver and the sent counter behind the bounce rates.
type bounceSide struct {
	codec  *verp.Codec
	srv    *bounce.Server
	sent   *guard.SentCounter
	policy *guard.Policy
	// hooks serves the provider webhooks, nil when none is configured;
	// hooksSrv is -webhooks-http.
	hooks    http.Handler
	hooksSrv *http.Server
	hooksLn  net.Listener
}

// startBounces starts what cfg asks for. With -dev, a bounce domain, a
// secret and the receiver are always there.
func startBounces(cfg *config, g *guard.Guard, policy *guard.Policy, devDomain string, logger *slog.Logger) (*bounceSide, error) {
	f := &bounceSide{sent: g.NewSentCounter(0), policy: policy}
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
	if cfg.BounceDomain != "" {
		var err error
		f.codec, err = verp.New(verp.Config{Domain: cfg.BounceDomain, Prefix: cfg.BouncePrefix, Secrets: cfg.BounceSecrets,
			Kinds: slices.Sorted(maps.Keys(policy.KindPolicies))})
		if err != nil {
			f.shutdown(context.Background())
			return nil, err
		}
	}
	if err := f.startWebhooks(cfg, g, logger); err != nil {
		f.shutdown(context.Background())
		return nil, err
	}
	addrs := []string{cfg.BounceSMTP}
	if cfg.Dev && cfg.BounceSMTP == "" {
		addrs = []string{bounce.DefaultAddr, "127.0.0.1:0"}
	}
	if f.codec == nil || addrs[0] == "" {
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

// startWebhooks builds the provider webhooks and, with -webhooks-http,
// serves them on a listener of their own.
func (f *bounceSide) startWebhooks(cfg *config, g *guard.Guard, logger *slog.Logger) error {
	wc := bounce.WebhookConfig{Recorder: g, SESTopics: cfg.SESTopics, MailgunKey: []byte(cfg.MailgunKey), Codec: f.codec, Logger: logger}
	if cfg.SendGridKey != "" {
		k, err := bounce.ParseSendGridKey(cfg.SendGridKey)
		if err != nil {
			return err
		}
		wc.SendGridKey = k
	}
	hooks, err := bounce.NewWebhooks(wc)
	if err != nil {
		return err
	}
	if !hooks.Enabled() {
		return nil
	}
	f.hooks = hooks.Handler()
	if cfg.WebhooksHTTP == "" {
		return nil
	}
	ln, err := net.Listen("tcp", cfg.WebhooksHTTP)
	if err != nil {
		return fmt.Errorf("-webhooks-http: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/webhooks/", f.hooks)
	f.hooksLn = ln
	f.hooksSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		if err := f.hooksSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("webhooks server", "err", err)
		}
	}()
	return nil
}

// mount adds the webhooks to the -http mux. They are authenticated by the
// providers' signatures, so they are served without the admin API's
// bearer token, and whether or not -admin is given.
func (f *bounceSide) mount(mux *http.ServeMux) {
	if f.hooks != nil {
		mux.Handle("/v1/webhooks/", f.hooks)
	}
}

// webhooksAddr is -webhooks-http's bound address, "" when off.
func (f *bounceSide) webhooksAddr() string {
	if f.hooksLn == nil {
		return ""
	}
	return f.hooksLn.Addr().String()
}

// returnPath is the worker's Config.ReturnPath: nil without a bounce domain.
func (f *bounceSide) returnPath() func(*queue.Payload) string {
	if f.codec == nil {
		return nil
	}
	return bounce.ReturnPath(f.codec, f.policy, nil)
}

// observe counts sent emails for the bounce rates.
func (f *bounceSide) observe(p *queue.Payload, o queue.Outcome, _ string) {
	if o == queue.Sent && p != nil {
		f.sent.Add(p.Kind, p.To)
	}
}

// bounceAddr is the receiver's address, "" when it is off.
func (f *bounceSide) bounceAddr() string {
	if f.srv == nil {
		return ""
	}
	return f.srv.Addr()
}

// shutdown stops the webhooks listener and the receiver, then flushes the
// sent counts.
func (f *bounceSide) shutdown(ctx context.Context) {
	if f.hooksSrv != nil {
		_ = f.hooksSrv.Shutdown(ctx)
	}
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
