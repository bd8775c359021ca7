package bounce

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/verp"
)

// WebhookRecorder is what the webhooks need of the guard: recording
// reports, and one-time values against replays. [*guard.Guard] implements
// it.
type WebhookRecorder interface {
	Recorder
	ClaimNonce(ctx context.Context, scope, nonce string, ttl time.Duration) (bool, error)
	ReleaseNonce(ctx context.Context, scope, nonce string) error
}

var _ WebhookRecorder = (*guard.Guard)(nil)

// Defaults of [WebhookConfig].
const (
	DefaultMaxAge      = time.Hour
	DefaultMaxBodySize = 2 << 20
)

// KindField is the custom field a provider event may carry the email's
// kind in (SendGrid custom args, Mailgun user variables, SES message tags).
const KindField = "floodgate_kind"

// WebhookConfig configures [Webhooks]. A provider with no key is not
// served (404).
type WebhookConfig struct {
	// Recorder applies, counts and de-duplicates. Required.
	Recorder WebhookRecorder
	// SESTopics are the SNS topic ARNs whose notifications are accepted;
	// none disables /v1/webhooks/ses. SNS signs for every topic, so the
	// topic is what makes a notification yours.
	SESTopics []string
	// SNSHost reports whether a SigningCertURL or SubscribeURL host is an
	// SNS endpoint; nil means sns.<region>.amazonaws.com (or .com.cn).
	// Only tests set it.
	SNSHost func(host string) bool
	// SNSClient fetches signing certificates and SubscribeURLs; nil means
	// a client with a 10s timeout. Only tests set it.
	SNSClient *http.Client
	// SendGridKey is the Event Webhook's verification key; nil disables
	// /v1/webhooks/sendgrid.
	SendGridKey *ecdsa.PublicKey
	// MailgunKey is the HTTP webhook signing key; empty disables
	// /v1/webhooks/mailgun.
	MailgunKey []byte
	// MaxAge is how old a signed timestamp may be; default 1h. Mailgun
	// tokens are remembered that long, so a request cannot be replayed.
	MaxAge time.Duration
	// MaxBodySize bounds a request body; default 2 MiB.
	MaxBodySize int64
	// Codec, when set, reads an SES notification's envelope sender as a
	// return path, which names the email's kind and id.
	Codec *verp.Codec
	// Logger receives one line per refused request; nil discards.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Webhooks serves the providers' event webhooks. Requests are
// authenticated by the providers' own signatures, not by the admin API's
// bearer token: a request whose signature fails is answered 401, counted
// (reason "signature") and changes nothing. It is safe for concurrent use.
type Webhooks struct {
	cfg    WebhookConfig
	topics map[string]bool

	mu    sync.Mutex
	certs map[string]*snsCert // by SigningCertURL
}

// NewWebhooks checks cfg and returns the webhooks.
func NewWebhooks(cfg WebhookConfig) (*Webhooks, error) {
	if cfg.Recorder == nil {
		return nil, errors.New("bounce: WebhookConfig.Recorder is required")
	}
	if cfg.SNSHost == nil {
		cfg.SNSHost = IsSNSHost
	}
	if cfg.SNSClient == nil {
		cfg.SNSClient = &http.Client{Timeout: 10 * time.Second,
			// A certificate URL that redirects is not an SNS URL any more.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.MaxBodySize <= 0 {
		cfg.MaxBodySize = DefaultMaxBodySize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Webhooks{cfg: cfg, topics: map[string]bool{}, certs: map[string]*snsCert{}}
	for _, t := range cfg.SESTopics {
		if !strings.HasPrefix(t, "arn:") {
			return nil, fmt.Errorf("bounce: SES topic %q is not an ARN", t)
		}
		w.topics[t] = true
	}
	return w, nil
}

// Enabled reports whether any provider is configured.
func (w *Webhooks) Enabled() bool {
	return len(w.topics) > 0 || w.cfg.SendGridKey != nil || len(w.cfg.MailgunKey) > 0
}

// Handler serves, for the configured providers:
//
//	POST /v1/webhooks/ses       Amazon SNS notifications of SES bounces and complaints
//	POST /v1/webhooks/sendgrid  SendGrid's signed Event Webhook
//	POST /v1/webhooks/mailgun   Mailgun's signed webhooks
//
// Answers: 200 {"recorded": n}; 400 for a malformed request; 401 for a
// failed signature, a stale timestamp, a replay or a foreign SNS topic;
// 503 when Redis does not answer (the provider retries).
func (w *Webhooks) Handler() http.Handler {
	mux := http.NewServeMux()
	if len(w.topics) > 0 {
		mux.HandleFunc("POST /v1/webhooks/ses", w.serveSES)
	}
	if w.cfg.SendGridKey != nil {
		mux.HandleFunc("POST /v1/webhooks/sendgrid", w.serveSendGrid)
	}
	if len(w.cfg.MailgunKey) > 0 {
		mux.HandleFunc("POST /v1/webhooks/mailgun", w.serveMailgun)
	}
	return mux
}

// webhookError is a refusal: its HTTP status and the reason counted.
type webhookError struct {
	code   int
	reason string
	err    error
}

func (e *webhookError) Error() string { return e.reason + ": " + e.err.Error() }

func refusal(code int, reason string, format string, args ...any) *webhookError {
	return &webhookError{code: code, reason: reason, err: fmt.Errorf(format, args...)}
}

// finish answers a request: the count recorded, or the refusal (counted).
func (w *Webhooks) finish(rw http.ResponseWriter, r *http.Request, source string, n int, err error) {
	rw.Header().Set("Content-Type", "application/json")
	if err == nil {
		rw.WriteHeader(http.StatusOK)
		_ = json.NewEncoder(rw).Encode(map[string]int{"recorded": n})
		return
	}
	var we *webhookError
	if !errors.As(err, &we) {
		// Redis: the provider retries.
		w.cfg.Logger.Warn("webhook: record", "source", source, "err", err)
		rw.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(rw).Encode(map[string]string{"error": "unavailable"})
		return
	}
	w.cfg.Logger.LogAttrs(r.Context(), slog.LevelInfo, "webhook refused", slog.String("source", source),
		slog.String("reason", we.reason), slog.String("err", we.err.Error()))
	if cerr := w.cfg.Recorder.RefuseBounce(r.Context(), source, we.reason); cerr != nil {
		w.cfg.Logger.Warn("webhook: count refusal", "err", cerr)
	}
	if we.code == http.StatusUnauthorized {
		rw.Header().Set("WWW-Authenticate", `Signature realm="floodgate"`)
	}
	rw.WriteHeader(we.code)
	_ = json.NewEncoder(rw).Encode(map[string]string{"error": we.reason})
}

// readBody reads a bounded request body.
func (w *Webhooks) readBody(rw http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, w.cfg.MaxBodySize))
	if err != nil {
		return nil, refusal(http.StatusRequestEntityTooLarge, "too_large", "body: %v", err)
	}
	return b, nil
}

// fresh checks a signed timestamp against MaxAge (and a little clock skew
// the other way).
func (w *Webhooks) fresh(t time.Time) error {
	now := w.cfg.Now()
	if now.Sub(t) > w.cfg.MaxAge || t.Sub(now) > 5*time.Minute {
		return refusal(http.StatusUnauthorized, "stale", "timestamp %s outside the %v window", t.UTC().Format(time.RFC3339), w.cfg.MaxAge)
	}
	return nil
}

// record applies provider events (already authenticated) and returns how
// many were recorded.
func (w *Webhooks) record(ctx context.Context, fs []guard.Bounce) (int, error) {
	n := 0
	for _, f := range fs {
		if f.Recipient == "" {
			continue
		}
		if _, err := w.cfg.Recorder.RecordBounce(ctx, f); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// emailID returns floodgate's email id from a Message-ID "<id@domain>" (with
// or without brackets), or "".
func emailID(msgID string) string {
	msgID = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(msgID), "<"), ">")
	local, _, ok := strings.Cut(msgID, "@")
	if !ok || len(local) != 32 {
		return ""
	}
	for i := 0; i < len(local); i++ {
		if c := local[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ""
		}
	}
	return local
}
