package guard

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Webhook delivery defaults (see Config.Webhook).
const (
	DefaultWebhookQueue   = 256
	DefaultWebhookBackoff = time.Second
	webhookAttempts       = 6
	webhookMaxBackoff     = 30 * time.Second
	webhookTimeout        = 10 * time.Second
)

// webhookEvent is the body of a webhook delivery.
type webhookEvent struct {
	Event string `json:"event"`
	// ID identifies the delivery across retries, so a receiver can drop
	// duplicates.
	ID string `json:"id"`
	BreakerTransition
}

// notifier sends breaker transitions to the webhook from one background
// goroutine. send never blocks: when the queue is full the oldest pending
// delivery is dropped and counted.
type notifier struct {
	url     string
	host    string
	secret  []byte
	client  *http.Client
	backoff time.Duration
	log     *slog.Logger
	m       *metrics

	mu      sync.Mutex
	queue   [][]byte
	limit   int
	wake    chan struct{}
	stopped bool

	quit     chan struct{} // closed by Shutdown: deliver what is queued, then exit
	ctx      context.Context
	cancel   context.CancelFunc // aborts deliveries and backoff waits
	done     chan struct{}
	stopOnce sync.Once
}

func newNotifier(cfg Config, m *metrics) (*notifier, error) {
	u, err := url.Parse(cfg.Webhook)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("guard: Config.Webhook must be an http or https URL")
	}
	client := cfg.WebhookClient
	if client == nil {
		client = &http.Client{Timeout: webhookTimeout}
	}
	backoff := cfg.WebhookBackoff
	if backoff <= 0 {
		backoff = DefaultWebhookBackoff
	}
	limit := cfg.WebhookQueue
	if limit <= 0 {
		limit = DefaultWebhookQueue
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &notifier{
		url: cfg.Webhook, host: u.Host, secret: []byte(cfg.WebhookSecret), client: client, backoff: backoff,
		log: cfg.Logger, m: m, limit: limit, wake: make(chan struct{}, 1),
		quit: make(chan struct{}), ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}, nil
}

func (n *notifier) start() { go n.run() }

// send queues t for delivery without blocking.
func (n *notifier) send(t BreakerTransition) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	body, err := json.Marshal(webhookEvent{Event: "breaker.transition", ID: hex.EncodeToString(id[:]), BreakerTransition: t})
	if err != nil {
		n.log.Error("guard: webhook: encode", "err", err)
		return
	}
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		n.m.webhookDropped.Inc()
		return
	}
	if len(n.queue) >= n.limit {
		n.queue[0] = nil
		n.queue = n.queue[1:]
		n.m.webhookDropped.Inc()
	}
	n.queue = append(n.queue, body)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifier) next() ([]byte, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.queue) == 0 {
		return nil, false
	}
	b := n.queue[0]
	n.queue[0] = nil
	n.queue = n.queue[1:]
	return b, true
}

func (n *notifier) run() {
	defer close(n.done)
	for {
		for {
			b, ok := n.next()
			if !ok {
				break
			}
			n.deliver(b)
			if n.ctx.Err() != nil {
				return
			}
		}
		select {
		case <-n.wake:
		case <-n.quit:
			// Shutdown: deliver what is left, then stop.
			for {
				b, ok := n.next()
				if !ok || n.ctx.Err() != nil {
					return
				}
				n.deliver(b)
			}
		case <-n.ctx.Done():
			return
		}
	}
}

// deliver posts one body, retrying failures with exponential backoff.
func (n *notifier) deliver(body []byte) {
	wait := n.backoff
	var err error
	for attempt := 1; attempt <= webhookAttempts; attempt++ {
		var retry bool
		if retry, err = n.post(body); err == nil {
			return
		}
		if !retry || attempt == webhookAttempts {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-n.ctx.Done():
			t.Stop()
			n.m.webhookDropped.Inc()
			return
		}
		wait = min(wait*2, webhookMaxBackoff)
	}
	n.m.webhookFailed.Inc()
	n.log.Warn("guard: webhook delivery failed", "host", n.host, "err", err)
}

// post sends one attempt and reports whether a failure is worth retrying.
func (n *notifier) post(body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(n.ctx, http.MethodPost, n.url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "floodgate")
	req.Header.Set("X-Floodgate-Event", "breaker.transition")
	if len(n.secret) > 0 {
		req.Header.Set("X-Floodgate-Signature", Signature(n.secret, body))
	}
	resp, err := n.client.Do(req)
	if err != nil {
		// Not the error itself: it quotes the URL, which may carry a token.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return true, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 2:
		return false, nil
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return true, fmt.Errorf("status %d", resp.StatusCode)
	}
	return false, fmt.Errorf("status %d", resp.StatusCode)
}

// Signature returns the X-Floodgate-Signature value of a webhook body:
// "sha256=" and the hex HMAC-SHA256 of body under secret. A receiver
// recomputes it over the raw body and compares with hmac.Equal.
func Signature(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// shutdown stops accepting transitions, delivers those queued until ctx
// ends, then aborts. It is idempotent.
func (n *notifier) shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() {
		n.mu.Lock()
		n.stopped = true
		n.mu.Unlock()
		close(n.quit)
	})
	select {
	case <-n.done:
		return nil
	case <-ctx.Done():
		n.cancel()
		<-n.done
		n.mu.Lock()
		dropped := len(n.queue)
		n.queue = nil
		n.mu.Unlock()
		n.m.webhookDropped.Add(float64(dropped))
		return ctx.Err()
	}
}

// Shutdown stops the guard's background work: the webhook notifier stops
// accepting transitions, delivers those already queued (retrying as usual)
// until ctx ends, then aborts the rest (counted dropped) and returns
// ctx.Err(). Decisions keep working after it, without notifications. It is
// idempotent and safe to call concurrently; a guard without a webhook has
// nothing to stop.
func (g *Guard) Shutdown(ctx context.Context) error {
	if g.notify == nil {
		return nil
	}
	return g.notify.shutdown(ctx)
}

// Close stops the guard's background work at once: pending webhook
// deliveries are dropped. It is idempotent. The Redis client is the
// caller's and stays open.
func (g *Guard) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
