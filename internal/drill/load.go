package drill

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/floodgate-dev/floodgate/queue"
)

// Phases of a drill.
const (
	phaseQuiet = iota
	phaseAttack
	phaseDrain
	numPhases
)

var phaseNames = [numPhases]string{"quiet", "attack", "drain"}

// Classes of legitimate traffic.
const (
	classNotification = "notification"
	classReset        = "reset"
)

// tally counts receipts of one stream of requests.
type tally struct {
	mu        sync.Mutex
	requested int64
	outcomes  map[string]int64 // "outcome" or "outcome:reason"
	byOutcome map[queue.Outcome]int64
	errors    map[string]int64
	firstErr  string
}

func newTally() *tally {
	return &tally{outcomes: map[string]int64{}, byOutcome: map[queue.Outcome]int64{}, errors: map[string]int64{}}
}

// add records one Enqueue result.
func (t *tally) add(r queue.Receipt, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addLocked(r, err, 1)
}

func (t *tally) addLocked(r queue.Receipt, err error, n int64) {
	if err != nil {
		t.errors[errorClass(err)] += n
		if t.firstErr == "" {
			t.firstErr = err.Error()
		}
		return
	}
	t.requested += n
	t.byOutcome[r.Outcome] += n
	key := string(r.Outcome)
	if r.Reason != "" {
		key += ":" + r.Reason
	}
	t.outcomes[key] += n
}

// merge adds o's counts to t.
func (t *tally) merge(o *tally) {
	o.mu.Lock()
	defer o.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.requested += o.requested
	for k, n := range o.outcomes {
		t.outcomes[k] += n
	}
	for k, n := range o.byOutcome {
		t.byOutcome[k] += n
	}
	for k, n := range o.errors {
		t.errors[k] += n
	}
	if t.firstErr == "" {
		t.firstErr = o.firstErr
	}
}

func errorClass(err error) string {
	switch {
	case errors.Is(err, queue.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, queue.ErrInvalid):
		return "invalid"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "cancelled"
	}
	return "other"
}

// attacker replays the flood.
type attacker struct {
	client *queue.Client
	cfg    *Config
	done   atomic.Int64 // requests answered, for the progress bar
	tally  *tally
}

// sourceAddr returns a distinct address for source s, each in a /24 of
// its own (for s below 65,536): real users come from networks of their
// own, and an attacker who can spreads over as many as the per-group
// caps make worth it.
func sourceAddr(prefix string, s int) string {
	return fmt.Sprintf("%s.%d.%d.1", prefix, s>>8&255, s&255)
}

// run sends cfg.Attack requests with cfg.Parallel enqueuers, paced to
// cfg.AttackRate when it is set, and returns when all are answered or ctx
// ends. Request i goes to victim(i mod Recipients) from source
// (i mod Sources): every recipient is asked for about Attack/Recipients
// resets, and every source asks for many recipients, as an enumeration
// does.
func (a *attacker) run(ctx context.Context, start time.Time) {
	var next atomic.Int64
	data := map[string]string{"reset_url": "https://app.example/reset/drill"}
	var wg sync.WaitGroup
	for range a.cfg.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := newTally()
			defer a.tally.merge(local)
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(a.cfg.Attack) {
					return
				}
				if a.cfg.AttackRate > 0 && !sleepUntil(ctx, paced(start, i, a.cfg.AttackRate)) {
					return
				}
				r, err := a.client.Enqueue(ctx, queue.Email{
					Kind:   queue.KindPasswordReset,
					To:     "victim" + strconv.FormatInt(i%int64(a.cfg.Recipients), 10) + "@" + a.cfg.AttackDomain,
					Source: sourceAddr("10", int(i%int64(a.cfg.Sources))),
					Data:   data,
				})
				if err != nil && ctx.Err() != nil {
					return
				}
				local.addLocked(r, err, 1)
				a.done.Add(1)
			}
		}()
	}
	wg.Wait()
}

// legitRequest is one admitted legitimate email, to match at the sink.
type legitRequest struct {
	class string
	phase int
	at    time.Time
}

// legit sends legitimate traffic at fixed rates and remembers every
// admitted email's enqueue time by id.
type legit struct {
	client   *queue.Client
	cfg      *Config
	phase    *atomic.Int32
	notes    *tally
	resets   *tally
	perPhase [numPhases]struct{ notes, resets int64 }

	mu       sync.Mutex
	admitted map[string]legitRequest
	wg       sync.WaitGroup
}

func newLegit(client *queue.Client, cfg *Config, phase *atomic.Int32) *legit {
	return &legit{client: client, cfg: cfg, phase: phase, notes: newTally(), resets: newTally(), admitted: map[string]legitRequest{}}
}

// run sends both streams until ctx ends, then waits for the requests in
// flight.
func (l *legit) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.pace(ctx, l.cfg.NotifyRate, l.notify) }()
	go func() { defer wg.Done(); l.pace(ctx, l.cfg.LegitResetRate, l.reset) }()
	wg.Wait()
	l.wg.Wait()
}

// pace calls send(n) for n = 0, 1, ... at rate per second, each in its own
// goroutine so a slow enqueue does not delay the next; a schedule that
// fell behind catches up.
func (l *legit) pace(ctx context.Context, rate float64, send func(ctx context.Context, n int)) {
	if rate <= 0 {
		return
	}
	start := time.Now()
	// Requests in flight finish even after ctx ends, so every one sent is
	// counted.
	sendCtx := context.WithoutCancel(ctx)
	for n := 0; ; n++ {
		if !sleepUntil(ctx, paced(start, int64(n), rate)) {
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			send(sendCtx, n)
		}()
	}
}

func (l *legit) domain(n int) string { return l.cfg.LegitDomains[n%len(l.cfg.LegitDomains)] }

func (l *legit) notify(ctx context.Context, n int) {
	phase := int(l.phase.Load())
	at := time.Now()
	r, err := l.client.Enqueue(ctx, queue.Email{
		Kind: queue.KindNotification,
		To:   "user" + strconv.Itoa(n) + "@" + l.domain(n),
		Name: "User " + strconv.Itoa(n),
		Data: map[string]string{"subject": "Your weekly summary", "body": "Three new comments on your post.",
			"unsubscribe_url": "https://app.example/unsubscribe/" + strconv.Itoa(n)},
	})
	l.notes.add(r, err)
	l.record(r, err, classNotification, phase, at)
}

func (l *legit) reset(ctx context.Context, n int) {
	phase := int(l.phase.Load())
	at := time.Now()
	r, err := l.client.Enqueue(ctx, queue.Email{
		Kind:   queue.KindPasswordReset,
		To:     "account" + strconv.Itoa(n) + "@" + l.domain(n),
		Source: sourceAddr("172", n),
		Data:   map[string]string{"reset_url": "https://app.example/reset/" + strconv.Itoa(n)},
	})
	l.resets.add(r, err)
	l.record(r, err, classReset, phase, at)
}

func (l *legit) record(r queue.Receipt, err error, class string, phase int, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if class == classNotification {
		l.perPhase[phase].notes++
	} else {
		l.perPhase[phase].resets++
	}
	if err == nil && r.Accepted() {
		l.admitted[r.ID] = legitRequest{class: class, phase: phase, at: at}
	}
}

// paced returns when the n-th of a series at rate per second is due.
func paced(start time.Time, n int64, rate float64) time.Time {
	return start.Add(time.Duration(float64(n) / rate * float64(time.Second)))
}

// sleepUntil waits until at and reports whether ctx is still live.
func sleepUntil(ctx context.Context, at time.Time) bool {
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
