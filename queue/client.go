package queue

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/floodgate-dev/floodgate/internal/pii"
	"github.com/floodgate-dev/floodgate/internal/suggest"
	"github.com/floodgate-dev/floodgate/internal/telemetry"
)

// Input limits.
const (
	maxSource    = 256
	maxIdemKey   = 256
	maxAccount   = 256
	maxDataBytes = 64 << 10
	maxDataKey   = 64
)

// Email is one email an application asks floodgate to send.
type Email struct {
	// Kind selects the policy and templates, e.g. [KindPasswordReset].
	Kind string
	// To is the recipient's bare address, e.g. "alice@example.com".
	To string
	// Name is the recipient's display name, used in To: and the greeting.
	Name string
	// Source is the client IP or principal behind the request; caps apply
	// per source. Empty means unknown (one shared source).
	Source string
	// Data holds the template values, e.g. "reset_url".
	Data map[string]string
	// IdempotencyKey, when set, makes repeated enqueues of the same key and
	// kind one email: the id is derived from it.
	IdempotencyKey string
	// Account, when set, is the application's stable id of the account the
	// email is for (a user id, never a secret). Per-recipient dedup and
	// caps then key on it instead of the address, so one person is one cap
	// whatever address variants an attacker tries.
	Account string
	// Trust says the request carries a signal the application verified
	// itself (a recognised device cookie, an authenticated session, a
	// solved challenge). The zero value, [TrustNone], claims nothing and is
	// the right default: never set it from anything the requester can
	// simply assert. While a kind's breaker is open, trusted requests get a
	// lane of their own (paced, still through every cap).
	Trust Trust
}

// Trust is a signal an application verified about the request behind an
// email; see [Email].Trust.
type Trust string

// Trust signals.
const (
	// TrustNone: no verified signal (the default).
	TrustNone Trust = ""
	// TrustDevice: the request came with a device cookie the application
	// issued to this account after an earlier successful sign-in.
	TrustDevice Trust = "device"
	// TrustSession: the request came from an authenticated session of the
	// account (e.g. "verify my new address" while signed in).
	TrustSession Trust = "session"
	// TrustChallenge: the requester solved a challenge (CAPTCHA, proof of
	// work) that the application checked.
	TrustChallenge Trust = "challenge"
)

// Valid reports whether t is one of the defined signals.
func (t Trust) Valid() bool {
	switch t {
	case TrustNone, TrustDevice, TrustSession, TrustChallenge:
		return true
	}
	return false
}

// Admitter decides at enqueue whether an email may be queued. The guard
// implements it; a nil Admitter admits everything.
type Admitter interface {
	Admit(ctx context.Context, a *Admission) (Verdict, error)
}

// Admission is what an [Admitter] decides on.
type Admission struct {
	// ID is the email's id.
	ID string
	// Kind is the email's kind and Spec its configuration.
	Kind string
	Spec KindSpec
	// To is the normalised recipient address.
	To string
	// Source is the caller-supplied source, possibly empty.
	Source string
	// Account is the caller-supplied account id, possibly empty.
	Account string
	// Trust is the caller's verified signal, if any.
	Trust Trust
	// Payload is the encoded task, for an admitter that parks emails.
	Payload []byte
}

// Feedback is implemented by an [Admitter] that learns from what happens
// after delivery (the guard does). [Client.Confirm] and [Client.Report]
// call it.
type Feedback interface {
	// Confirm records that the link in a sent email was used.
	Confirm(ctx context.Context, id string) error
	// Report records that the recipient says they did not ask for it.
	Report(ctx context.Context, id string) error
}

// Config configures a [Client].
type Config struct {
	// Redis is the connection used for the queue and the guard. Required.
	// Create it with ContextTimeoutEnabled so deadlines are honoured.
	Redis redis.UniversalClient
	// Kinds configures the kinds this client may enqueue; nil means
	// [DefaultKinds].
	Kinds Kinds
	// Admitter is the admission guard, normally a *guard.Guard. Required
	// unless Unguarded is set: forgetting the guard must not be silent.
	Admitter Admitter
	// Unguarded admits every valid email without asking an Admitter. The
	// worker's dispatch guard still applies its global and per-domain rates
	// and idempotency; per-recipient and per-source caps do not.
	Unguarded bool
	// Keyring seals the private fields of every payload (see [Keyring]);
	// nil stores them in plaintext. Give producers and workers the same
	// keys.
	Keyring *Keyring
	// Timeout bounds one Enqueue when the context has no deadline;
	// default 5s.
	Timeout time.Duration
	// Logger receives one debug line per decision; nil discards.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// TracerProvider, when set, receives a floodgate.enqueue span per
	// Enqueue, whose traceparent the payload carries to the worker (see
	// [Payload].Trace); nil creates no span and leaves the payload without.
	TracerProvider trace.TracerProvider
}

// Client enqueues emails. It is safe for concurrent use.
type Client struct {
	cfg    Config
	asynq  *asynq.Client
	tracer *telemetry.Tracer
	closed atomic.Bool
}

// NewClient returns a client for cfg.
func NewClient(cfg Config) (*Client, error) {
	if cfg.Redis == nil {
		return nil, errors.New("queue: Config.Redis is required")
	}
	if cfg.Admitter == nil && !cfg.Unguarded {
		return nil, errors.New("queue: Config.Admitter is required (e.g. a *guard.Guard); set Unguarded to enqueue without admission checks")
	}
	if cfg.Kinds == nil {
		cfg.Kinds = DefaultKinds()
	}
	if err := cfg.Kinds.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Client{cfg: cfg, asynq: asynq.NewClientFromRedisClient(cfg.Redis), tracer: telemetry.NewTracer(cfg.TracerProvider)}, nil
}

func (s KindSpec) validate(name string) error {
	switch {
	case name == "" || strings.ContainsFunc(name, func(r rune) bool { return !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }):
		return fmt.Errorf("queue: kind %q: name must be lower-case letters, digits, '_' or '-'", name)
	case !s.Class.Valid():
		return fmt.Errorf("queue: kind %q: class must be %q or %q", name, ClassSecurity, ClassNotify)
	case s.TTL <= 0:
		return fmt.Errorf("queue: kind %q: ttl must be positive", name)
	}
	return nil
}

// Close releases the client. The Redis connection given in Config stays
// open: it belongs to the caller.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.asynq.Close()
}

// Enqueue validates e, asks the admission guard, and queues the email.
//
// It returns a Receipt whenever a decision was made, including refusals
// (Outcome Capped, Duplicate, ...): those are not errors. Errors are
// [ErrInvalid] (an [*InvalidError]), [ErrUnknownKind], or [ErrUnavailable]
// when Redis could not be asked; nothing is stored then.
func (c *Client) Enqueue(ctx context.Context, e Email) (Receipt, error) {
	if !c.tracer.On() {
		return c.enqueue(ctx, e)
	}
	return c.tracedEnqueue(ctx, e)
}

// enqueue is [Client.Enqueue] without its span.
func (c *Client) enqueue(ctx context.Context, e Email) (Receipt, error) {
	if c.closed.Load() {
		return Receipt{}, ErrClosed
	}
	p, spec, err := c.prepare(e)
	if err != nil {
		return Receipt{}, err
	}
	if c.tracer.On() {
		p.Trace = telemetry.Traceparent(ctx)
	}
	body, err := c.cfg.Keyring.Encode(p)
	if err != nil {
		return Receipt{}, fmt.Errorf("enqueue %s: %w", e.Kind, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	r := Receipt{ID: p.ID, Kind: p.Kind, Outcome: Queued}
	if c.cfg.Admitter != nil {
		v, err := c.cfg.Admitter.Admit(ctx, &Admission{ID: p.ID, Kind: p.Kind, Spec: spec, To: p.To, Source: p.Source,
			Account: p.Account, Trust: p.Trust, Payload: body})
		if err != nil {
			return Receipt{}, fmt.Errorf("enqueue %s: admission: %w: %w", p.Kind, ErrUnavailable, err)
		}
		if !v.Allow {
			r.Outcome, r.Reason = v.Outcome, v.Reason
			c.log(ctx, r, p.To)
			return r, nil
		}
		if v.Lane != "" {
			// Admitted through a lane of an open breaker: the worker's
			// dispatch guard must not hold it again.
			p.Lane = v.Lane
			r.Reason = v.Lane
			if body, err = c.cfg.Keyring.Encode(p); err != nil {
				return Receipt{}, fmt.Errorf("enqueue %s: %w", e.Kind, err)
			}
		}
	}
	_, err = c.asynq.EnqueueContext(ctx, asynq.NewTask(TypeEmail, body), TaskOptions(p, spec)...)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		r.Outcome, r.Reason = Duplicate, "idempotency_key"
	case err != nil:
		return Receipt{}, fmt.Errorf("enqueue %s: %w: %w", p.Kind, ErrUnavailable, err)
	}
	c.log(ctx, r, p.To)
	return r, nil
}

// Confirm tells the guard that the link in email id (a [Receipt] ID) was
// used: call it when the reset or verification link is redeemed. The guard
// learns from it what share of each kind's emails real users act on, which
// an attacker who never sees the victims' links cannot fake (a collapse of
// that share trips the breaker), and the source that asked earns trust. An
// application that never calls it keeps the rate signals alone.
//
// It returns [ErrNoFeedback] when the client's Admitter takes no feedback,
// [ErrUnknownEmail] when no sent email has that id (never sent, expired,
// or already confirmed or reported), and [ErrUnavailable] when Redis could
// not be asked.
func (c *Client) Confirm(ctx context.Context, id string) error { return c.feedback(ctx, "confirm", id) }

// Report tells the guard that the recipient of email id says they did not
// ask for it (the "I did not ask for this" link). The recipient is
// suppressed for that kind for a while (the policy says how long), the
// source that asked loses its trust, and reports feed the kind's breaker.
// Errors are those of [Client.Confirm].
func (c *Client) Report(ctx context.Context, id string) error { return c.feedback(ctx, "report", id) }

func (c *Client) feedback(ctx context.Context, op, id string) error {
	if c.closed.Load() {
		return ErrClosed
	}
	f, ok := c.cfg.Admitter.(Feedback)
	if !ok {
		return ErrNoFeedback
	}
	if id == "" || len(id) > 64 || strings.ContainsFunc(id, func(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') }) {
		return invalid("id", "must be an email id from a receipt (lower-case hex)")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	var err error
	if op == "confirm" {
		err = f.Confirm(ctx, id)
	} else {
		err = f.Report(ctx, id)
	}
	switch {
	case err == nil, errors.Is(err, ErrUnknownEmail):
		return err
	default:
		return fmt.Errorf("%s %s: %w: %w", op, id, ErrUnavailable, err)
	}
}

// TaskOptions returns the asynq options for an email of spec: its class's
// queue, the email id as task id, a retry bound and an attempt timeout,
// replacing asynq's defaults (25 retries, 30 minutes).
//
// The TTL is not given to asynq as a Deadline: asynq fails a task past its
// deadline without running the handler, so it would be retried and
// archived instead of recorded as expired. The worker checks the TTL.
//
// asynq archives a task whose retry count has reached MaxRetry whatever the
// error, even one that is not a failure. The worker enforces spec.Retries()
// itself, so asynq is given one more: a rate-limit deferral on the last
// allowed attempt is then re-queued instead of archived.
func TaskOptions(p *Payload, spec KindSpec) []asynq.Option {
	return []asynq.Option{
		asynq.Queue(spec.Class.QueueName()),
		asynq.TaskID(p.ID),
		asynq.MaxRetry(spec.Retries() + 1),
		asynq.Timeout(spec.AttemptTimeout()),
	}
}

func (c *Client) log(ctx context.Context, r Receipt, to string) {
	c.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "enqueue",
		slog.String("kind", r.Kind), slog.String("outcome", string(r.Outcome)),
		slog.String("reason", r.Reason), slog.String("task_id", r.ID),
		slog.String("rcpt_hash", hashRecipient(c.cfg.Admitter, to)))
}

// RecipientHasher names recipients in logs; the guard implements it with
// its keyed digest, so that the producer's log lines, the worker's and the
// guard's decision log name a recipient alike.
type RecipientHasher interface {
	HashRecipient(addr string) string
}

// hashRecipient names addr by h when it is a [RecipientHasher], else by
// an unkeyed digest of the lower-cased address.
func hashRecipient(h any, addr string) string {
	if rh, ok := h.(RecipientHasher); ok {
		return rh.HashRecipient(addr)
	}
	return pii.Hash(addr)
}

// prepare validates and normalises e into a payload.
func (c *Client) prepare(e Email) (*Payload, KindSpec, error) {
	spec, ok := c.cfg.Kinds[e.Kind]
	if !ok {
		if s, near := suggest.Closest(e.Kind, slices.Sorted(maps.Keys(c.cfg.Kinds))); near {
			return nil, spec, fmt.Errorf("%w: %q; did you mean %q?", ErrUnknownKind, e.Kind, s)
		}
		return nil, spec, fmt.Errorf("%w: %q", ErrUnknownKind, e.Kind)
	}
	to, err := NormalizeAddress(e.To)
	if err != nil {
		return nil, spec, err
	}
	name, err := NormalizeName(e.Name)
	if err != nil {
		return nil, spec, err
	}
	if err := checkText("source", e.Source, maxSource); err != nil {
		return nil, spec, err
	}
	if err := checkText("idempotency_key", e.IdempotencyKey, maxIdemKey); err != nil {
		return nil, spec, err
	}
	if err := checkText("account", e.Account, maxAccount); err != nil {
		return nil, spec, err
	}
	if !e.Trust.Valid() {
		return nil, spec, invalid("trust", "must be one of \"\", device, session, challenge")
	}
	if err := checkData(e.Data, spec.Required); err != nil {
		return nil, spec, err
	}
	now := c.cfg.Now()
	p := &Payload{
		ID:         newID(e.Kind, e.IdempotencyKey),
		Kind:       e.Kind,
		To:         to,
		Name:       name,
		Data:       e.Data,
		Source:     strings.TrimSpace(e.Source),
		Account:    e.Account,
		Trust:      e.Trust,
		EnqueuedAt: now.UTC(),
		ExpiresAt:  now.Add(spec.TTL).UTC(),
	}
	return p, spec, nil
}

func checkText(field, s string, limit int) error {
	if len(s) > limit {
		return invalid(field, fmt.Sprintf("is longer than %d octets", limit))
	}
	if !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
		return invalid(field, "contains control characters or invalid UTF-8")
	}
	return nil
}

func checkData(data map[string]string, required []string) error {
	size := 0
	for k, v := range data {
		if k == "" || len(k) > maxDataKey || strings.ContainsFunc(k, func(r rune) bool { return !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }) {
			return invalid("data", fmt.Sprintf("key %q must be 1-%d lower-case letters, digits or '_'", k, maxDataKey))
		}
		if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return invalid("data."+k, "contains NUL or invalid UTF-8")
		}
		if strings.HasSuffix(k, "_url") {
			if err := checkURL(v); err != nil {
				return invalid("data."+k, err.Error())
			}
		}
		if k == "subject" {
			if err := checkSubject("data."+k, v); err != nil {
				return err
			}
		}
		size += len(k) + len(v)
	}
	if size > maxDataBytes {
		return invalid("data", fmt.Sprintf("is larger than %d octets", maxDataBytes))
	}
	for _, k := range required {
		if data[k] == "" {
			return invalid("data."+k, "is required")
		}
	}
	return nil
}

func checkURL(v string) error {
	if strings.ContainsFunc(v, unicode.IsControl) || strings.ContainsFunc(v, isHiddenFormat) || strings.ContainsAny(v, " <>\"") {
		return errors.New("must be a URL without spaces, control or invisible format characters")
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return errors.New("must be an absolute http or https URL")
	}
	return nil
}

// newID returns a random id, or one derived from the idempotency key so that
// the same key and kind always name the same email.
func newID(kind, idemKey string) string {
	if idemKey != "" {
		sum := sha256.Sum256([]byte(kind + "\x00" + idemKey))
		return hex.EncodeToString(sum[:16])
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
