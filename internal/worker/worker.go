// Package worker runs floodgate's asynq server: it takes queued emails,
// asks the dispatch guard, renders, DKIM-signs and delivers them, and
// records one outcome per email.
//
// Duplicates are bounded: an email whose result was ambiguous (connection
// lost after the final dot) is retried at most [Config].AmbiguousRetries
// times, and a relay's 250 is recorded with the guard even through a Redis
// outage (the guard's Settle is retried until Redis answers), so that a
// redelivered task finds it sent. Only a worker killed between a 250 and
// its record can cause a second send, one per transaction it had in flight.
package worker

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/floodgate-dev/floodgate/internal/delivery"
	"github.com/floodgate-dev/floodgate/internal/pii"
	"github.com/floodgate-dev/floodgate/internal/telemetry"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
	"github.com/floodgate-dev/floodgate/templates"
)

// Sender delivers one signed message; [*delivery.Pool] implements it.
type Sender interface {
	Send(ctx context.Context, from string, to []string, msg []byte) error
}

// Signer adds DKIM signatures; [*delivery.Signer] implements it.
type Signer interface {
	Sign(msg []byte) ([]byte, error)
}

// Renderer renders a kind's templates; [*templates.Set] implements it.
type Renderer interface {
	Render(kind string, d templates.Data) (templates.Rendered, error)
}

// Dispatcher is the dispatch guard: it decides before each send attempt and
// is told how the attempt ended. The guard package implements it.
type Dispatcher interface {
	Dispatch(ctx context.Context, p *queue.Payload, attempt string) (queue.Verdict, error)
	Settle(ctx context.Context, p *queue.Payload, attempt string, outcome queue.Outcome, reason string) error
}

// Sweeper counts held emails that expired; the guard implements it.
type Sweeper interface {
	Sweep(ctx context.Context) (int, error)
}

// Suppressor takes hard-bounced recipients off the sendable list.
type Suppressor interface {
	Suppress(ctx context.Context, addr, reason string) error
}

var (
	_ Sender   = (*delivery.Pool)(nil)
	_ Signer   = (*delivery.Signer)(nil)
	_ Renderer = (*templates.Set)(nil)
)

// Config configures a [Worker]. Zero fields take the documented defaults.
type Config struct {
	// Redis is the connection asynq uses. Required.
	Redis redis.UniversalClient
	// Sender delivers messages. Required.
	Sender Sender
	// Templates renders each kind. Required.
	Templates Renderer
	// Signer DKIM-signs messages; nil sends unsigned (logged at start-up).
	Signer Signer
	// From is the From: header and, bare, the envelope sender unless
	// ReturnPath gives one. Required.
	From mail.Address
	// ReturnPath, if set, returns the envelope sender of an email: its
	// VERP address, which ties a later bounce to it; "" means From.
	ReturnPath func(p *queue.Payload) string
	// MessageIDDomain is the right-hand side of Message-IDs; default the
	// domain of From.
	MessageIDDomain string
	// App is the product name shown in templates; default From.Name.
	App string
	// ReportURL, when set, is the "I did not ask for this" link of each
	// email: an absolute http(s) URL in which "{id}" is replaced by the
	// email's id, for the application to route to queue.Client.Report.
	ReportURL string
	// Kinds configures each kind; nil means queue.DefaultKinds().
	Kinds queue.Kinds
	// Keyring opens sealed payloads (see queue.Keyring); nil opens only
	// plaintext ones.
	Keyring *queue.Keyring
	// Dispatcher is the dispatch guard; nil sends everything it is given.
	Dispatcher Dispatcher
	// Suppressor receives hard bounces (5.1.x); nil ignores them.
	Suppressor Suppressor
	// Sweeper, when set, is run every SweepInterval (default 30s) so that
	// held emails past their expiry are counted expired; the archive is
	// pruned as often (see Worker.PruneArchive).
	Sweeper       Sweeper
	SweepInterval time.Duration
	// Concurrency is the number of emails processed at once; default 20.
	Concurrency int
	// ShutdownTimeout bounds how long Shutdown waits for running sends
	// before asynq re-queues them; default 10s.
	ShutdownTimeout time.Duration
	// PollInterval is how often asynq looks for due retries and deferred
	// emails, and for new work on idle queues; default 100ms.
	PollInterval time.Duration
	// RetryBase is the first retry delay after a temporary failure; it
	// doubles per retry up to 5 minutes, with jitter. Default 1s.
	RetryBase time.Duration
	// AmbiguousRetries bounds the retries of an email after ambiguous
	// results (the connection was lost after the final dot, or the relay
	// never answered it): the relay may have accepted the message, so each
	// retry may deliver another copy. Past the bound the email fails with
	// reason "ambiguous". The guard counts ambiguous results across retries
	// and workers; without a Dispatcher every earlier retry is taken to
	// have been one. Zero means 1; negative means none.
	AmbiguousRetries int
	// Observe, if set, is called after each outcome is recorded, including
	// Deferred and a temporary failure (outcome ""). It must not block.
	Observe func(p *queue.Payload, o queue.Outcome, reason string)
	// Logger receives one line per outcome; nil discards.
	Logger *slog.Logger
	// Registerer receives the worker's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// TracerProvider, when set, receives each attempt's spans: queue.wait
	// and floodgate.process, continuing the producer's trace from the
	// payload's traceparent, with render, dkim.sign and smtp.send under
	// floodgate.process (the guard adds its own). nil creates none.
	TracerProvider trace.TracerProvider
}

// Worker processes queued emails. Start it once; Shutdown stops it.
type Worker struct {
	cfg       Config
	srv       *asynq.Server
	metrics   *metrics
	tracer    *telemetry.Tracer
	stopOnce  sync.Once
	stopSweep context.CancelFunc
	swept     chan struct{}

	// Results the guard has not recorded yet (Redis does not answer):
	// settling counts them, unsettled holds the emails whose 250 was seen,
	// settled is closed and replaced when one is recorded or given up, and
	// abandon is closed when Shutdown stops waiting for them.
	mu          sync.Mutex
	settling    int
	unsettled   map[string]int
	settled     chan struct{}
	abandon     chan struct{}
	abandonOnce sync.Once
}

// New validates cfg and returns a worker that is not yet started.
func New(cfg Config) (*Worker, error) {
	switch {
	case cfg.Redis == nil:
		return nil, errors.New("worker: Config.Redis is required")
	case cfg.Sender == nil:
		return nil, errors.New("worker: Config.Sender is required")
	case cfg.Templates == nil:
		return nil, errors.New("worker: Config.Templates is required")
	case cfg.From.Address == "":
		return nil, errors.New("worker: Config.From is required")
	}
	if _, err := queue.NormalizeAddress(cfg.From.Address); err != nil {
		return nil, fmt.Errorf("worker: From: %w", err)
	}
	if cfg.ReportURL != "" {
		u, err := url.Parse(strings.ReplaceAll(cfg.ReportURL, "{id}", "0"))
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || !strings.Contains(cfg.ReportURL, "{id}") ||
			strings.ContainsAny(cfg.ReportURL, " \r\n\"<>") {
			return nil, errors.New("worker: ReportURL must be an absolute http(s) URL containing {id}")
		}
	}
	if cfg.MessageIDDomain == "" {
		cfg.MessageIDDomain = cfg.From.Address[strings.LastIndexByte(cfg.From.Address, '@')+1:]
	}
	if cfg.App == "" {
		cfg.App = cfg.From.Name
	}
	if cfg.Kinds == nil {
		cfg.Kinds = queue.DefaultKinds()
	}
	// A kind's name goes into every message's header as it is.
	if err := cfg.Kinds.Validate(); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 20
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = time.Second
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = 30 * time.Second
	}
	switch {
	case cfg.AmbiguousRetries == 0:
		cfg.AmbiguousRetries = 1
	case cfg.AmbiguousRetries < 0:
		cfg.AmbiguousRetries = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Worker{cfg: cfg, metrics: newMetrics(cfg.Registerer), tracer: telemetry.NewTracer(cfg.TracerProvider),
		unsettled: map[string]int{}, settled: make(chan struct{}), abandon: make(chan struct{})}
	w.srv = asynq.NewServerFromRedisClient(cfg.Redis, asynq.Config{
		Concurrency: cfg.Concurrency,
		// Security mail outranks notifications without starving them; emails
		// released from a breaker's hold come after both, so a release
		// cannot crowd out the mail of the moment.
		Queues: map[string]int{
			queue.ClassSecurity.QueueName(): 4,
			queue.ClassNotify.QueueName():   2,
			queue.ReleaseQueue:              1,
		},
		RetryDelayFunc:           w.retryDelay,
		IsFailure:                isFailure,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		TaskCheckInterval:        cfg.PollInterval,
		DelayedTaskCheckInterval: cfg.PollInterval,
		Logger:                   asynqLogger{cfg.Logger},
		LogLevel:                 asynq.WarnLevel,
	})
	return w, nil
}

// Start begins processing in background goroutines.
func (w *Worker) Start() error {
	if w.cfg.Signer == nil {
		w.cfg.Logger.Warn("worker: no DKIM key configured; messages are sent unsigned")
	}
	if err := w.srv.Start(asynq.HandlerFunc(w.ProcessTask)); err != nil {
		return fmt.Errorf("worker: start: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.stopSweep, w.swept = cancel, make(chan struct{})
	go w.sweep(ctx)
	return nil
}

// sweep runs the Sweeper every SweepInterval until ctx ends.
func (w *Worker) sweep(ctx context.Context) {
	defer close(w.swept)
	t := time.NewTicker(w.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if w.cfg.Sweeper != nil {
			if _, err := w.cfg.Sweeper.Sweep(ctx); err != nil && ctx.Err() == nil {
				w.cfg.Logger.Warn("worker: sweeping held emails", "err", err)
			}
		}
		if _, err := w.PruneArchive(ctx, w.cfg.Now()); err != nil && ctx.Err() == nil {
			w.cfg.Logger.Warn("worker: pruning the archive", "err", err)
		}
	}
}

// PruneArchive deletes the archived (failed) tasks of floodgate's queues
// that are older than their kind's retention (queue.KindSpec.Archive), and
// returns how many. asynq keeps archived tasks up to 90 days; a failed reset
// need not be kept that long. The worker runs it every SweepInterval.
func (w *Worker) PruneArchive(ctx context.Context, now time.Time) (int, error) {
	insp := asynq.NewInspectorFromRedisClient(w.cfg.Redis)
	names, err := insp.Queues()
	if err != nil {
		return 0, fmt.Errorf("worker: archive: %w", err)
	}
	n := 0
	for _, q := range []string{queue.ClassSecurity.QueueName(), queue.ClassNotify.QueueName(), queue.ReleaseQueue} {
		if !slices.Contains(names, q) {
			continue
		}
		// The archive holds at most 10,000 tasks (asynq's bound): list
		// them all, then delete, so that deleting does not shift the pages.
		var old []string
		for page := 1; ctx.Err() == nil; page++ {
			tasks, err := insp.ListArchivedTasks(q, asynq.Page(page), asynq.PageSize(500))
			if err != nil {
				return n, fmt.Errorf("worker: archive %s: %w", q, err)
			}
			for _, ti := range tasks {
				if now.Sub(ti.LastFailedAt) >= w.archiveFor(ti.Payload) {
					old = append(old, ti.ID)
				}
			}
			if len(tasks) < 500 {
				break
			}
		}
		for _, id := range old {
			if err := insp.DeleteTask(q, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
				return n, fmt.Errorf("worker: archive %s: %w", q, err)
			}
			n++
		}
	}
	return n, ctx.Err()
}

// archiveFor returns the retention of an archived task from its kind (read
// from the payload's clear fields), the shortest when it has none.
func (w *Worker) archiveFor(payload []byte) time.Duration {
	var head struct {
		Kind string `json:"kind"`
	}
	if json.Unmarshal(payload, &head) == nil {
		if spec, ok := w.cfg.Kinds[head.Kind]; ok {
			return spec.ArchiveFor()
		}
	}
	return queue.DefaultArchive(queue.ClassSecurity)
}

// Shutdown stops taking new emails, waits up to Config.ShutdownTimeout for
// running ones (asynq re-queues those still running after it), then waits
// for the results the guard has not recorded yet (Redis did not answer) to
// be recorded, and returns. It is idempotent. It returns ctx.Err() if ctx
// ends first; the server then finishes stopping in the background, and the
// unrecorded results are given up: an email whose 250 was among them may be
// sent again once its claim's lease ends.
func (w *Worker) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		w.stopOnce.Do(func() {
			if w.stopSweep != nil {
				w.stopSweep()
				<-w.swept
			}
			w.srv.Shutdown()
		})
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		w.abandonOnce.Do(func() { close(w.abandon) })
		return ctx.Err()
	}
	for {
		w.mu.Lock()
		n, ch := w.settling, w.settled
		w.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			w.abandonOnce.Do(func() { close(w.abandon) })
			return ctx.Err()
		}
	}
}

// Ready reports whether the worker can reach Redis.
func (w *Worker) Ready(ctx context.Context) error {
	if err := w.cfg.Redis.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("worker: redis: %w", err)
	}
	return nil
}

// reportURL returns the email's "I did not ask for this" link, or "".
func (w *Worker) reportURL(id string) string {
	if w.cfg.ReportURL == "" {
		return ""
	}
	return strings.ReplaceAll(w.cfg.ReportURL, "{id}", url.PathEscape(id))
}

// deferError asks asynq to run the task again after a delay without
// counting a failure or using a retry.
type deferError struct{ after time.Duration }

func (e *deferError) Error() string { return fmt.Sprintf("deferred for %v", e.after) }

func isFailure(err error) bool {
	var d *deferError
	return !errors.As(err, &d)
}

// retryDelay honours a deferral's retry-after; real failures back off
// exponentially with jitter (RetryBase, doubling, up to 5 minutes). Emails past
// their TTL by the next try are recorded expired, not sent.
func (w *Worker) retryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var d *deferError
	if errors.As(err, &d) {
		return d.after
	}
	backoff := w.cfg.RetryBase << min(n, 12)
	backoff = min(backoff, 5*time.Minute)
	return backoff/2 + mrand.N(backoff/2+1)
}

// newAttempt returns a nonce naming one handler invocation, so that the
// guard's claim tells this attempt from a redelivery of the same task.
func newAttempt() string {
	var b [8]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ProcessTask handles one delivery attempt of one email. It is the asynq
// handler and is exported for tests that drive a single attempt. A task of
// another type than [queue.TypeEmail], or whose payload [queue.DecodePayload]
// refuses, is counted failed (reason "unknown_type" or "payload"), logged
// and archived without retry.
func (w *Worker) ProcessTask(ctx context.Context, t *asynq.Task) error {
	start := time.Now()
	if t.Type() != queue.TypeEmail {
		// Not an email: archived, never delivered, whatever its payload.
		err := fmt.Errorf("worker: unknown task type %.64q", t.Type())
		w.record(ctx, nil, queue.Failed, "unknown_type", err)
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	p, err := w.cfg.Keyring.Decode(t.Payload())
	if err != nil {
		// Archived with the reason; retrying cannot fix it.
		w.record(ctx, nil, queue.Failed, "payload", err)
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	if w.tracer.On() {
		var span trace.Span
		ctx, span = w.startProcess(ctx, p, start)
		defer span.End()
	}
	return w.process(ctx, p, start)
}

// process handles one attempt of the decoded email p, begun at start.
func (w *Worker) process(ctx context.Context, p *queue.Payload, start time.Time) error {
	spec, ok := w.cfg.Kinds[p.Kind]
	if !ok {
		w.record(ctx, p, queue.Failed, "unknown_kind", nil)
		return fmt.Errorf("worker: unknown kind %q: %w", p.Kind, asynq.SkipRetry)
	}
	if w.cfg.Dispatcher == nil && p.Expired(w.cfg.Now()) {
		w.record(ctx, p, queue.Expired, "ttl", nil)
		return nil
	}
	if w.isUnsettled(p.ID) {
		// This process saw the relay's 250 and is still recording it: a
		// redelivery must not send again, whatever the claim says by now.
		w.metrics.outcome(p.Kind, queue.Deferred, "unsettled")
		w.observe(ctx, p, queue.Deferred, "unsettled")
		return &deferError{after: time.Second}
	}
	attempt := newAttempt()
	retried, _ := asynq.GetRetryCount(ctx)
	// Earlier ambiguous results: the guard counts them; without one, every
	// earlier attempt may have been one.
	ambiguous := retried
	// With a guard, Dispatch also checks the TTL, on Redis time.
	if w.cfg.Dispatcher != nil {
		v, err := w.dispatch(ctx, p, attempt)
		if err != nil {
			// Fail closed: nothing is sent unchecked; asynq retries.
			w.metrics.guardErrors.Inc()
			w.observe(ctx, p, "", "guard_unavailable")
			return fmt.Errorf("worker: dispatch guard: %w", err)
		}
		if !v.Allow {
			if v.Outcome == queue.Deferred {
				w.metrics.outcome(p.Kind, queue.Deferred, v.Reason)
				w.observe(ctx, p, queue.Deferred, v.Reason)
				return &deferError{after: max(v.RetryAfter, time.Millisecond)}
			}
			w.record(ctx, p, v.Outcome, v.Reason, nil)
			return nil
		}
		ambiguous = v.Ambiguous
	}
	err := w.send(ctx, p, spec)
	w.metrics.sendSeconds.WithLabelValues(p.Kind).Observe(time.Since(start).Seconds())
	switch {
	case err == nil:
		w.settle(ctx, p, attempt, queue.Sent, "")
		w.metrics.latency.WithLabelValues(p.Kind).Observe(w.cfg.Now().Sub(p.EnqueuedAt).Seconds())
		return nil
	case delivery.IsPermanent(err):
		if delivery.IsHardBounce(err) && w.cfg.Suppressor != nil {
			if serr := w.cfg.Suppressor.Suppress(ctx, p.To, "hard_bounce"); serr != nil {
				w.cfg.Logger.Error("suppress hard bounce", "task_id", p.ID, "err", serr)
			}
		}
		w.settle(ctx, p, attempt, queue.Failed, reasonOf(err))
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	case isAmbiguous(err):
		// The relay may have the message: each retry may be a copy.
		if ambiguous >= w.cfg.AmbiguousRetries || retried >= spec.Retries() {
			w.metrics.ambiguous.WithLabelValues(p.Kind, "failed").Inc()
			w.settle(ctx, p, attempt, queue.Failed, "ambiguous")
			return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
		}
		w.metrics.ambiguous.WithLabelValues(p.Kind, "retried").Inc()
		w.settle(ctx, p, attempt, "", "ambiguous")
		w.metrics.retries.WithLabelValues(p.Kind, "ambiguous").Inc()
		w.observe(ctx, p, "", "ambiguous")
		return err
	default:
		if retried >= spec.Retries() {
			w.settle(ctx, p, attempt, queue.Failed, "retries_exhausted")
			return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
		}
		// Temporary: release the claim so the retry may send again, with
		// the same Message-ID.
		reason := reasonOf(err)
		w.settle(ctx, p, attempt, "", reason)
		w.metrics.retries.WithLabelValues(p.Kind, reason).Inc()
		w.observe(ctx, p, "", reason)
		return err
	}
}

// Waits for the global rate are taken in the handler when they are short:
// every email needs that rate, so the slot could send nothing else, and a
// round trip through asynq's retry set would add its polling delay and
// leave the rate's slots unused.
const (
	maxInlineWait   = 250 * time.Millisecond
	maxInlineWaited = 2 * time.Second
)

// dispatch asks the guard, waiting in place for short global-rate
// deferrals. Other deferrals (a domain's rate, a live claim) go back to
// asynq, so that the slot can serve other emails meanwhile.
func (w *Worker) dispatch(ctx context.Context, p *queue.Payload, attempt string) (queue.Verdict, error) {
	var waited time.Duration
	for {
		v, err := w.cfg.Dispatcher.Dispatch(ctx, p, attempt)
		if err != nil || v.Allow || v.Outcome != queue.Deferred || v.Reason != "global" ||
			v.RetryAfter > maxInlineWait || waited+v.RetryAfter > maxInlineWaited {
			return v, err
		}
		// Jitter spreads the waiters so they do not all ask at once.
		d := v.RetryAfter + mrand.N(v.RetryAfter/4+time.Millisecond)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, nil
		case <-t.C:
		}
		waited += d
	}
}

// send renders, builds, signs and delivers p.
func (w *Worker) send(ctx context.Context, p *queue.Payload, spec queue.KindSpec) error {
	_, span := w.tracer.Start(ctx, "render")
	defer span.End() // ended early on success; a second End is a no-op
	r, err := w.cfg.Templates.Render(p.Kind, templates.Data{
		Kind: p.Kind, Name: p.Name, To: p.To, App: w.cfg.App,
		ExpiresIn: spec.TTL, Values: p.Data, ReportURL: w.reportURL(p.ID),
	})
	if err != nil {
		return spanFailed(span, permanent("render", err))
	}
	m := &delivery.Message{
		From:      w.cfg.From,
		To:        mail.Address{Name: p.Name, Address: p.To},
		Subject:   r.Subject,
		Text:      r.Text,
		HTML:      r.HTML,
		MessageID: p.ID + "@" + w.cfg.MessageIDDomain,
		Date:      w.cfg.Now(),
		// The kind is one of Config.Kinds (checked at take), whose names
		// New validated: no CR, LF or space can reach the header.
		Headers: []delivery.Header{{Name: smtpsink.KindHeader, Value: p.Kind}},
	}
	if u := p.Data["unsubscribe_url"]; u != "" && spec.Class == queue.ClassNotify {
		// RFC 8058 one-click unsubscribe.
		m.Headers = append(m.Headers,
			delivery.Header{Name: "List-Unsubscribe", Value: "<" + u + ">"},
			delivery.Header{Name: "List-Unsubscribe-Post", Value: "List-Unsubscribe=One-Click"})
	}
	raw, err := delivery.Build(m)
	if err != nil {
		return spanFailed(span, permanent("build", err))
	}
	span.End()
	if w.cfg.Signer != nil {
		_, span := w.tracer.Start(ctx, "dkim.sign")
		raw, err = w.cfg.Signer.Sign(raw)
		if err != nil {
			err = spanFailed(span, permanent("dkim", err))
		}
		span.End()
		if err != nil {
			return err
		}
	}
	// Once an SMTP transaction starts it runs to the relay's reply or to the
	// attempt's deadline, not to a shutdown's cancellation: cutting it after
	// the final dot would leave an email that may have been delivered with
	// its claim released, and the redelivered task would send it twice.
	sctx := context.WithoutCancel(ctx)
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		sctx, cancel = context.WithDeadline(sctx, dl)
		defer cancel()
	}
	from := w.cfg.From.Address
	if w.cfg.ReturnPath != nil {
		if rp := w.cfg.ReturnPath(p); rp != "" {
			from = rp
		}
	}
	return w.smtpSend(sctx, from, p.To, raw)
}

func permanent(stage string, err error) error {
	return &delivery.SendError{Stage: stage, Temporary: false, Message: err.Error(), Err: err}
}

// isAmbiguous reports whether err leaves it unknown whether the relay
// accepted the message.
func isAmbiguous(err error) bool {
	var se *delivery.SendError
	return errors.As(err, &se) && se.Ambiguous
}

// reasonOf names an error's class for logs and metric labels.
func reasonOf(err error) string {
	var se *delivery.SendError
	isSend := errors.As(err, &se)
	var ne net.Error
	switch {
	case isSend && se.Ambiguous:
		return "ambiguous"
	case isSend && se.Code != 0:
		return fmt.Sprintf("smtp_%d", se.Code)
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		// A relay that stops answering, at whatever stage: the relay
		// breaker counts it as the relay failing.
		return "timeout"
	case isSend && se.Stage != "":
		return se.Stage
	}
	return "error"
}

// Settle calls are retried while Redis does not answer: each waits at most
// settleTimeout, the pause between them doubles from settleBackoff up to
// settleMaxBackoff.
const (
	settleTimeout    = 5 * time.Second
	settleBackoff    = 50 * time.Millisecond
	settleMaxBackoff = time.Second
)

// settle tells the guard how the attempt ended and records the outcome.
//
// The guard's answer is waited for: a 250 that never reaches Redis leaves
// the claim held by this attempt, and once its lease ends a redelivered task
// would send the email again. So Settle is retried with backoff until Redis
// answers, the email expires (no attempt may send it after that), or
// Shutdown gives up. The guard's lease (attempt timeout plus 90s) outlasts a
// 60s outage right after the slowest 250, so a redelivery on another worker
// meanwhile finds the claim held and waits; one on this worker is deferred
// (isUnsettled) however long the outage.
func (w *Worker) settle(ctx context.Context, p *queue.Payload, attempt string, o queue.Outcome, reason string) {
	if w.cfg.Dispatcher != nil {
		w.beginSettle(p.ID, o == queue.Sent)
		err := w.settleRetrying(ctx, p, attempt, o, reason)
		w.endSettle(p.ID, o == queue.Sent)
		if err != nil {
			msg := "settle: result not recorded"
			if o == queue.Sent {
				msg = "settle: 250 not recorded; the email may be sent again once its claim's lease ends"
			}
			w.cfg.Logger.Error(msg, "task_id", p.ID, "kind", p.Kind, "outcome", string(o), "err", err)
		}
	}
	if o != "" {
		w.record(ctx, p, o, reason, nil)
	}
}

// settleRetrying calls Dispatcher.Settle until it succeeds, p expires, or
// Shutdown gives up; it returns the last error then. A cancelled attempt
// context does not stop it.
func (w *Worker) settleRetrying(ctx context.Context, p *queue.Payload, attempt string, o queue.Outcome, reason string) error {
	ctx = context.WithoutCancel(ctx)
	backoff := settleBackoff
	for failures := 0; ; failures++ {
		sctx, cancel := context.WithTimeout(ctx, settleTimeout)
		err := w.cfg.Dispatcher.Settle(sctx, p, attempt, o, reason)
		cancel()
		if err == nil {
			if failures > 0 {
				w.cfg.Logger.Info("settle recorded after Redis came back", "task_id", p.ID, "kind", p.Kind,
					"outcome", string(o), "failures", failures)
			}
			return nil
		}
		w.metrics.guardErrors.Inc()
		if failures == 0 {
			w.cfg.Logger.Warn("settle failed; retrying until Redis answers", "task_id", p.ID, "kind", p.Kind,
				"outcome", string(o), "err", err)
		}
		if !w.cfg.Now().Before(p.ExpiresAt) {
			return err
		}
		// Jitter spreads the retries of every waiting attempt.
		t := time.NewTimer(backoff/2 + mrand.N(backoff/2+1))
		select {
		case <-t.C:
		case <-w.abandon:
			t.Stop()
			return err
		}
		backoff = min(2*backoff, settleMaxBackoff)
	}
}

func (w *Worker) beginSettle(id string, sent bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.settling++
	if sent {
		w.unsettled[id]++
	}
}

func (w *Worker) endSettle(id string, sent bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.settling--
	if sent {
		if w.unsettled[id]--; w.unsettled[id] <= 0 {
			delete(w.unsettled, id)
		}
	}
	close(w.settled)
	w.settled = make(chan struct{})
}

// isUnsettled reports whether this worker saw the relay accept email id and
// is still recording it.
func (w *Worker) isUnsettled(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.unsettled[id] > 0
}

// hashRecipient names a recipient in logs: by the guard's keyed digest
// when the dispatcher is a guard.
func (w *Worker) hashRecipient(addr string) string {
	if h, ok := w.cfg.Dispatcher.(queue.RecipientHasher); ok {
		return h.HashRecipient(addr)
	}
	return pii.Hash(addr)
}

// record counts and logs one outcome. The log line has the recipient's
// hash only.
func (w *Worker) record(ctx context.Context, p *queue.Payload, o queue.Outcome, reason string, err error) {
	kind, id, rcpt := "unknown", "", ""
	if p != nil {
		kind, id, rcpt = p.Kind, p.ID, w.hashRecipient(p.To)
	}
	w.metrics.outcome(kind, o, reason)
	attrs := []slog.Attr{
		slog.String("kind", kind), slog.String("outcome", string(o)),
		slog.String("reason", reason), slog.String("task_id", id), slog.String("rcpt_hash", rcpt),
	}
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	w.cfg.Logger.LogAttrs(ctx, level, "email", attrs...)
	w.observe(ctx, p, o, reason)
}

func (w *Worker) observe(ctx context.Context, p *queue.Payload, o queue.Outcome, reason string) {
	if w.tracer.On() {
		markProcess(ctx, o, reason)
	}
	if w.cfg.Observe != nil {
		w.cfg.Observe(p, o, reason)
	}
}
