package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/mail"
	"os"
	"strings"
	"time"

	"github.com/floodgate-dev/floodgate/internal/keyfile"
	"github.com/floodgate-dev/floodgate/internal/telemetry"
)

// serviceName is the default service.name of the worker's spans.
const serviceName = "floodgate-worker"

// config is everything the worker is started with.
type config struct {
	Dev              bool
	RedisURL         string
	SMTPAddr         string
	SMTPTLS          string
	SMTPUser         string
	SMTPPassword     string
	AllowInsecure    bool
	PolicyFile       string
	TemplatesDir     string
	DKIMDomain       string
	DKIMKeys         []string // SELECTOR=PEMFILE
	From             string
	App              string
	ReportURL        string
	HTTPAddr         string
	AdminToken       string
	Webhook          string
	WebhookSecret    string
	Admin            bool
	Concurrency      int
	AmbiguousRetries int
	AssumeNoEviction bool
	RedisCheck       time.Duration
	RelayCheck       time.Duration
	ShutdownTimeout  time.Duration
	LogLevel         string
	LogJSON          bool
	DevSMTPAddr      string
	DevHTTPAddr      string
	passwordFile     string
	hashKeyFile      string
	payloadKeyFile   string
	noKeys           bool
	// Secrets are the hash and payload keys every process shares.
	Secrets keyfile.Secrets
	// getenv reads the OTEL_* variables (telemetry.Setup).
	getenv func(string) string
	bounceConfig
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// parseConfig reads flags, then the environment for what flags leave
// unset. Secrets come only from the environment or files.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{getenv: getenv}
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: worker -dev
       worker -redis URL -smtp HOST:PORT [-dkim-domain D -dkim-key SEL=PEM ...] [flags]

Flags:
`)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), `
Environment (secrets come only from here or from files, never from flags):
  FLOODGATE_REDIS_URL            Redis URL, when -redis is not given
  FLOODGATE_SMTP_PASSWORD        SMTP AUTH password, unless -smtp-password-file
  FLOODGATE_ADMIN_TOKEN          bearer token of the admin API (-admin); required
                                 unless -http is on loopback
  FLOODGATE_WEBHOOK_SECRET       HMAC-SHA256 key signing the -webhook notifications
  FLOODGATE_ALLOW_INSECURE_SMTP  1 allows -smtp-tls none to a relay off loopback
                                 (a private network only)
  FLOODGATE_BOUNCE_SECRET        secret signing the VERP return paths (-bounce-domain),
                                 unless -bounce-secret-file
  FLOODGATE_HASH_KEY             key of the recipient and source digests in keys and logs,
                                 unless -hash-key-file (the same in every process)
  FLOODGATE_PAYLOAD_KEYS         keys sealing the queued emails' addresses and links,
                                 unless -payload-key-file (the same in every process;
                                 floodctl keygen makes both)

`)
		fmt.Fprint(fs.Output(), telemetry.Usage(serviceName))
		fmt.Fprint(fs.Output(), `
Exit status: 0 stopped by a signal, 1 failed to start or run, 2 usage error.
`)
	}
	fs.BoolVar(&c.Dev, "dev", false, "embedded Redis, embedded smtpsink and generated DKIM keys: no setup needed")
	fs.StringVar(&c.RedisURL, "redis", "", "Redis URL, redis:// or rediss:// (env FLOODGATE_REDIS_URL)")
	fs.StringVar(&c.SMTPAddr, "smtp", "", "SMTP relay HOST:PORT")
	fs.StringVar(&c.SMTPTLS, "smtp-tls", "starttls", "relay TLS: starttls, tls, or none (none only for a loopback relay)")
	fs.StringVar(&c.SMTPUser, "smtp-user", "", "SMTP AUTH user; password from env FLOODGATE_SMTP_PASSWORD or -smtp-password-file")
	fs.StringVar(&c.passwordFile, "smtp-password-file", "", "file holding the SMTP password")
	fs.StringVar(&c.hashKeyFile, "hash-key-file", "", "file holding the recipient digest key (default env FLOODGATE_HASH_KEY)")
	fs.StringVar(&c.payloadKeyFile, "payload-key-file", "", "file holding the payload keys, the first sealing (default env FLOODGATE_PAYLOAD_KEYS)")
	fs.BoolVar(&c.noKeys, "insecure-no-keys", false, "run without the hash and payload keys: guessable digests and plaintext addresses and links in Redis (tests and experiments only)")
	fs.StringVar(&c.PolicyFile, "policy", "", "policy YAML file (default: built-in policy)")
	fs.StringVar(&c.TemplatesDir, "templates", "", "directory overriding or adding templates (<dir>/<kind>/subject.txt, text.txt, html.html)")
	fs.StringVar(&c.DKIMDomain, "dkim-domain", "", "DKIM signing domain (d=)")
	fs.Var((*multiFlag)(&c.DKIMKeys), "dkim-key", "SELECTOR=PEMFILE, repeatable: one signature per key (RSA >= 2048 or Ed25519)")
	fs.StringVar(&c.From, "from", "", `From address, e.g. "Example <no-reply@example.com>" (default no-reply@DKIM-DOMAIN)`)
	fs.StringVar(&c.App, "app", "", "product name shown in emails (default the From name)")
	fs.StringVar(&c.ReportURL, "report-url", "", "the \"I did not ask for this\" link of each reset and verification email, with {id} for the email id (the app routes it to queue.Client.Report)")
	fs.StringVar(&c.HTTPAddr, "http", "127.0.0.1:8080", "address serving /metrics, /healthz, /readyz and the admin API /v1/ (\"\" disables)")
	fs.StringVar(&c.Webhook, "webhook", "", "URL that receives every breaker transition as JSON, signed with env FLOODGATE_WEBHOOK_SECRET (HMAC-SHA256)")
	fs.BoolVar(&c.Admin, "admin", false, "serve the admin API under /v1/ on -http (needs FLOODGATE_ADMIN_TOKEN unless -http is loopback; on with -dev)")
	fs.IntVar(&c.Concurrency, "concurrency", 20, "emails processed at once")
	fs.IntVar(&c.AmbiguousRetries, "ambiguous-retries", 1, "retries of an email after results that may have been delivered (connection lost after the final dot): each may be a copy; 0 fails it at once")
	fs.BoolVar(&c.AssumeNoEviction, "redis-assume-noeviction", false, "start even when Redis's maxmemory-policy cannot be read (CONFIG GET and INFO refused), taking it to be noeviction")
	fs.DurationVar(&c.RedisCheck, "redis-check-interval", time.Minute, "how often Redis's maxmemory-policy is checked again (/readyz, floodgate_redis_maxmemory_policy)")
	fs.DurationVar(&c.RelayCheck, "relay-check-interval", 15*time.Second, "how often the SMTP relay is checked in the background: connect, EHLO, QUIT (/readyz, floodgate_smtp_relay_up)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long shutdown waits for running sends")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&c.LogJSON, "log-json", false, "log JSON lines instead of text")
	fs.StringVar(&c.DevSMTPAddr, "dev-smtp", "", "with -dev: the embedded sink's SMTP address (default 127.0.0.1:2525)")
	fs.StringVar(&c.DevHTTPAddr, "dev-sink-http", "", "with -dev: the embedded sink's web address (default 127.0.0.1:8025)")
	c.bounceFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.RedisURL == "" {
		c.RedisURL = getenv("FLOODGATE_REDIS_URL")
	}
	c.AdminToken = getenv("FLOODGATE_ADMIN_TOKEN")
	c.WebhookSecret = getenv("FLOODGATE_WEBHOOK_SECRET")
	c.AllowInsecure = getenv("FLOODGATE_ALLOW_INSECURE_SMTP") == "1"
	c.SMTPPassword = getenv("FLOODGATE_SMTP_PASSWORD")
	if c.passwordFile != "" {
		b, err := os.ReadFile(c.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("-smtp-password-file: %w", err)
		}
		c.SMTPPassword = strings.TrimRight(string(b), "\r\n")
	}
	if err := c.bounceEnv(getenv); err != nil {
		return nil, err
	}
	// -dev generates its own keys (devstack).
	var err error
	if c.Secrets, err = keyfile.Load(getenv, c.hashKeyFile, c.payloadKeyFile, !c.Dev && !c.noKeys); err != nil {
		return nil, err
	}
	if c.Dev {
		c.Admin = true
		return c, nil
	}
	if err := c.checkBounce(); err != nil {
		return nil, err
	}
	switch {
	case c.RedisURL == "":
		return nil, errors.New("-redis (or FLOODGATE_REDIS_URL) is required; try -dev for an embedded stack")
	case c.SMTPAddr == "":
		return nil, errors.New("-smtp HOST:PORT is required")
	case c.SMTPUser != "" && c.SMTPPassword == "":
		return nil, errors.New("-smtp-user needs a password in FLOODGATE_SMTP_PASSWORD or -smtp-password-file")
	case len(c.DKIMKeys) > 0 && c.DKIMDomain == "":
		return nil, errors.New("-dkim-key needs -dkim-domain")
	case c.Concurrency <= 0:
		return nil, errors.New("-concurrency must be positive")
	case c.AmbiguousRetries < 0:
		return nil, errors.New("-ambiguous-retries must not be negative")
	case c.RedisCheck <= 0:
		return nil, errors.New("-redis-check-interval must be positive")
	case c.RelayCheck <= 0:
		return nil, errors.New("-relay-check-interval must be positive")
	}
	if c.From == "" {
		if c.DKIMDomain == "" {
			return nil, errors.New("-from is required (or -dkim-domain, giving no-reply@DOMAIN)")
		}
		c.From = "no-reply@" + c.DKIMDomain
	}
	if _, err := mail.ParseAddress(c.From); err != nil {
		return nil, fmt.Errorf("-from: %w", err)
	}
	return c, nil
}
