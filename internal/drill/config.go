package drill

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/queue"
)

// Config describes one drill. Start from [DefaultConfig] or [QuickConfig];
// [Run] validates it.
type Config struct {
	// RedisURL, when set, selects deployment mode: the drill enqueues into
	// this Redis, reads breakers and stats from APIURL and counts deliveries
	// at SinkURL, all three required. Empty selects embedded mode.
	RedisURL string
	// APIURL is the worker's admin API, e.g. "http://worker:8080".
	APIURL string
	// SinkURL is the smtpsink's HTTP API, e.g. "http://sink:8025".
	SinkURL string
	// Token is the admin API's bearer token; empty sends none.
	Token string

	// Policy is the guard policy: the enqueuers' admission guard, the
	// embedded workers' dispatch guard, and the bound on deliveries to
	// attacked recipients. In deployment mode it must be the workers'
	// policy. nil means guard.DefaultPolicy().
	Policy *guard.Policy
	// PolicyName names the policy in the report, e.g. its file; empty
	// means "default".
	PolicyName string

	// Attack is the number of attack password_reset requests.
	Attack int
	// Recipients is the number of distinct attacked recipients,
	// victimN@AttackDomain; request i goes to victim(i mod Recipients).
	Recipients int
	// Sources is the number of distinct attack sources; request i comes
	// from source i mod Sources.
	Sources int
	// AttackRate bounds attack requests per second; 0 is as fast as the
	// machine takes them.
	AttackRate float64
	// Parallel is the number of concurrent attack enqueuers.
	Parallel int
	// AttackDomain is the attacked recipients' domain.
	AttackDomain string

	// NotifyRate is legitimate notifications per second, to userN at the
	// LegitDomains in turn, during the whole drill; 0 sends none.
	NotifyRate float64
	// LegitResetRate is legitimate password resets per second for other
	// users (accountN at the LegitDomains); 0 sends none.
	LegitResetRate float64
	// LegitDomains are the legitimate recipients' domains, used in turn,
	// so that legitimate mail is not held up by one domain's rate.
	LegitDomains []string

	// Quiet is the legitimate-only phase before the attack: it measures
	// quiet notification latency and lets the breaker learn a baseline.
	Quiet time.Duration
	// Drain is the phase after the attack that lets mail in flight settle;
	// legitimate traffic goes on.
	Drain time.Duration

	// Workers is the number of embedded workers and Concurrency the emails
	// each processes at once.
	Workers     int
	Concurrency int
	// RedisServer is the redis-server binary of embedded mode; empty looks
	// it up on PATH.
	RedisServer string

	// Progress receives phase announcements and the attack's progress bar;
	// nil shows nothing.
	Progress io.Writer
	// Logger receives the embedded components' logs; nil discards.
	Logger *slog.Logger

	// pollInterval and sweepInterval set the embedded workers' (zero:
	// their defaults); scenarios shorten them with the time they compress.
	pollInterval, sweepInterval time.Duration
}

// Built-in drill sizes.
const (
	DefaultAttack       = 1_000_000
	DefaultRecipients   = 200_000
	DefaultSources      = 1_000
	DefaultAttackDomain = "attacked.example"
)

// DefaultConfig returns the default drill: 1,000,000 attack requests over
// 200,000 recipients from 1,000 sources as fast as the machine takes them
// with 16 enqueuers, 20 notifications and 1 legitimate reset a second, a
// 10 s quiet phase, a 10 s drain, and 2 embedded workers of concurrency 16.
func DefaultConfig() Config {
	return Config{
		Attack:         DefaultAttack,
		Recipients:     DefaultRecipients,
		Sources:        DefaultSources,
		Parallel:       16,
		AttackDomain:   DefaultAttackDomain,
		NotifyRate:     20,
		LegitResetRate: 1,
		LegitDomains:   []string{"example.com", "example.net", "example.org", "example.edu"},
		Quiet:          10 * time.Second,
		Drain:          10 * time.Second,
		Workers:        2,
		Concurrency:    16,
	}
}

// QuickConfig returns a small drill for tests and a first look: 20,000
// attack requests over 5,000 recipients from 100 sources, 5 s quiet, 5 s
// drain, otherwise as [DefaultConfig].
func QuickConfig() Config {
	c := DefaultConfig()
	c.Attack, c.Recipients, c.Sources = 20_000, 5_000, 100
	c.Quiet, c.Drain = 5*time.Second, 5*time.Second
	return c
}

// Embedded reports whether c runs the embedded stack.
func (c *Config) Embedded() bool { return c.RedisURL == "" }

// Validate reports the first problem with c, naming the flag of cmd/drill.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !c.Embedded() {
		if c.APIURL == "" || c.SinkURL == "" {
			bad("deployment mode (-redis) needs -api (the worker's admin API) and -sink (the smtpsink's HTTP API)")
		}
		for _, u := range []struct{ flag, v string }{{"-api", c.APIURL}, {"-sink", c.SinkURL}} {
			if u.v == "" {
				continue
			}
			if p, err := url.Parse(u.v); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
				bad("%s %q: want http://HOST:PORT", u.flag, u.v)
			}
		}
	} else if c.APIURL != "" || c.SinkURL != "" || c.Token != "" {
		bad("-api, -sink and the admin token are for deployment mode: give -redis too, or none of them for the embedded stack")
	}
	switch {
	case c.Attack < 1:
		bad("-attack must be at least 1")
	case c.Recipients < 1:
		bad("-recipients must be at least 1")
	case c.Sources < 1:
		bad("-sources must be at least 1")
	}
	if c.AttackRate < 0 || c.NotifyRate < 0 || c.LegitResetRate < 0 {
		bad("-attack-rate, -notify-rate and -legit-reset-rate must not be negative")
	}
	if c.Parallel < 1 || c.Parallel > 1024 {
		bad("-parallel must be between 1 and 1024")
	}
	if c.Quiet < 0 || c.Drain < 0 {
		bad("-quiet and -drain must not be negative")
	}
	if c.Embedded() && (c.Workers < 1 || c.Workers > 64 || c.Concurrency < 1) {
		bad("-workers must be between 1 and 64 and -concurrency at least 1")
	}
	if _, err := queue.NormalizeAddress("victim0@" + c.AttackDomain); err != nil || strings.ContainsAny(c.AttackDomain, "@ ") {
		bad("-attack-domain %q is not a domain", c.AttackDomain)
	}
	if len(c.LegitDomains) == 0 && (c.NotifyRate > 0 || c.LegitResetRate > 0) {
		bad("-legit-domains is empty")
	}
	for _, d := range c.LegitDomains {
		if _, err := queue.NormalizeAddress("user0@" + d); err != nil || strings.ContainsAny(d, "@ ") {
			bad("-legit-domains: %q is not a domain", d)
		} else if strings.EqualFold(d, c.AttackDomain) {
			bad("-legit-domains must not include the attack domain %q", d)
		}
	}
	if c.Policy != nil {
		if err := c.Policy.Validate(); err != nil {
			bad("policy: %w", err)
		}
		for _, k := range []string{queue.KindPasswordReset, queue.KindNotification} {
			if _, ok := c.Policy.KindPolicies[k]; !ok {
				bad("policy: kind %q is missing", k)
			}
		}
	}
	return errors.Join(errs...)
}
