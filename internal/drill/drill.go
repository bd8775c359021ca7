package drill

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/schollz/progressbar/v3"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/adminapi"
	"github.com/floodgate-dev/floodgate/queue"
)

// Run runs the drill cfg describes and returns its report. It fails only
// when the drill could not run (bad config, a stack that cannot be started
// or reached, ctx ended); failed targets and checks are in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	began := time.Now()
	policy := cfg.Policy
	if policy == nil {
		policy = guard.DefaultPolicy()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	say := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "drill: "+format+"\n", args...)
		}
	}

	var st *stack
	var err error
	if cfg.Embedded() {
		say("starting the embedded stack (redis-server subprocess, smtpsink, %d workers)", cfg.Workers)
		st, err = startEmbedded(ctx, &cfg, policy, log)
	} else {
		st, err = connectDeployment(ctx, &cfg)
	}
	if err != nil {
		return nil, err
	}
	defer st.close()
	say("%s", st.desc)

	_, client, err := st.enqueuer(policy, log)
	if err != nil {
		return nil, err
	}
	defer client.Close()

	statsBefore, err := readStats(ctx, st.admin)
	if err != nil {
		return nil, err
	}
	memBefore, err := usedMemory(ctx, st.rdb)
	if err != nil {
		return nil, fmt.Errorf("drill: redis INFO memory: %w", err)
	}
	sw := newSinkWatch(st.sink, cfg.AttackDomain)
	if err := sw.start(ctx); err != nil {
		return nil, fmt.Errorf("drill: sink: %w", err)
	}
	bw := &breakerWatch{admin: st.admin, kind: queue.KindPasswordReset}
	mw := &memWatch{rdb: st.rdb, peak: memBefore}
	obsCtx, stopObs := context.WithCancel(ctx)
	var obs sync.WaitGroup
	for _, f := range []func(context.Context){bw.run, mw.run, sw.run} {
		obs.Add(1)
		go func() { defer obs.Done(); f(obsCtx) }()
	}
	defer func() { stopObs(); obs.Wait() }()

	var phase atomic.Int32
	lg := newLegit(client, &cfg, &phase)
	legitCtx, stopLegit := context.WithCancel(ctx)
	legitDone := make(chan struct{})
	go func() { lg.run(legitCtx); close(legitDone) }()
	defer func() { stopLegit(); <-legitDone }()

	quietStart := time.Now()
	say("quiet phase: %s of legitimate traffic only", cfg.Quiet)
	if err := sleep(ctx, cfg.Quiet); err != nil {
		return nil, err
	}

	atk := &attacker{client: client, cfg: &cfg, tally: newTally()}
	loadBefore, lerr := readRedisLoad(ctx, st.rdb)
	attackStart := time.Now()
	bw.markAttack(attackStart)
	phase.Store(phaseAttack)
	say("attack: %d password_reset requests over %d recipients from %d sources", cfg.Attack, cfg.Recipients, cfg.Sources)
	barDone := showProgress(&cfg, atk, bw)
	atk.run(ctx, attackStart)
	attackEnd := time.Now()
	barDone()
	loadAfter, lerr2 := readRedisLoad(ctx, st.rdb)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	phase.Store(phaseDrain)
	say("drain: %s for mail in flight to settle (legitimate traffic goes on)", cfg.Drain)
	if err := sleep(ctx, cfg.Drain); err != nil {
		return nil, err
	}
	stopLegit()
	<-legitDone
	drainEnd := time.Now()

	rep := &Report{Mode: "deployment", Stack: st.desc, Start: began}
	if cfg.Embedded() {
		rep.Mode = "embedded"
		// Still workers make the final counts exact: nothing moves between
		// reading the guard, the queue and the sink.
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := st.stopWorkers(sctx)
		cancel()
		if err != nil {
			rep.Notes = append(rep.Notes, "workers did not stop in time: "+err.Error())
		}
	}
	stopObs()
	obs.Wait()

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	if bw.available {
		bw.poll(fctx)
	}
	sc, err := sw.counts(fctx)
	if err != nil {
		return nil, fmt.Errorf("drill: sink: %w", err)
	}
	statsAfter, err := readStats(fctx, st.admin)
	if err != nil {
		return nil, err
	}
	memEnd, err := usedMemory(fctx, st.rdb)
	if err != nil {
		return nil, fmt.Errorf("drill: redis INFO memory: %w", err)
	}
	outstanding, qerr := queueOutstanding(st)
	if qerr != nil {
		rep.Notes = append(rep.Notes, "queue inspection failed: "+qerr.Error())
	}

	rep.Setup = ReportConfig{Attack: cfg.Attack, Recipients: cfg.Recipients, Sources: cfg.Sources, AttackRate: cfg.AttackRate,
		Parallel: cfg.Parallel, AttackDomain: cfg.AttackDomain, NotifyRate: cfg.NotifyRate, LegitResetRate: cfg.LegitResetRate,
		LegitDomains: cfg.LegitDomains, QuietSeconds: cfg.Quiet.Seconds(), DrainSeconds: cfg.Drain.Seconds(),
		Policy: cfg.PolicyName, CPUs: runtime.NumCPU()}
	if rep.Setup.Policy == "" {
		rep.Setup.Policy = "default"
	}
	if cfg.Embedded() {
		rep.Setup.Workers, rep.Setup.Concurrency = cfg.Workers, cfg.Concurrency
	}
	rep.Phases = map[string]float64{
		"setup":  round3(quietStart.Sub(began).Seconds()),
		"quiet":  round3(attackStart.Sub(quietStart).Seconds()),
		"attack": round3(attackEnd.Sub(attackStart).Seconds()),
		"drain":  round3(drainEnd.Sub(attackEnd).Seconds()),
	}
	rep.fillAttack(atk, attackEnd.Sub(attackStart))
	rep.fillBreaker(bw, attackStart)
	rep.fillDelivered(lg, sc, computeBound(policy, &cfg, time.Since(attackStart)))
	rep.Redis = RedisReport{Addr: st.redisAddr, Version: st.redisVersion, Before: memBefore, End: memEnd,
		Peak: max(mw.max(), memEnd), Growth: memEnd - memBefore}
	if lerr == nil && lerr2 == nil {
		rep.Redis.AttackCPUSeconds, rep.Redis.AttackCommands = loadAfter.since(loadBefore, 4)
		rep.Redis.AttackCPUSeconds = round3(rep.Redis.AttackCPUSeconds)
	}
	rep.fillConservation(cfg.Embedded(), statsBefore, statsAfter, atk.tally, lg, sc, outstanding, qerr == nil)
	rep.TotalSeconds = round3(time.Since(began).Seconds())
	rep.fillTargets()
	if !cfg.Embedded() && bw.available && bw.last.State != adminapi.StateClosed {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the %s breaker is still %s with %d held: floodctl -api %s purge %s, then reset %s",
			queue.KindPasswordReset, bw.last.State, bw.last.Held, cfg.APIURL, queue.KindPasswordReset, queue.KindPasswordReset))
	}
	return rep, nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// showProgress draws the attack's progress bar until the returned func is
// called.
func showProgress(cfg *Config, atk *attacker, bw *breakerWatch) func() {
	if cfg.Progress == nil {
		return func() {}
	}
	bar := progressbar.NewOptions64(int64(cfg.Attack),
		progressbar.OptionSetWriter(cfg.Progress),
		progressbar.OptionSetDescription("attack"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("req"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetWidth(30),
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		desc := ""
		for {
			select {
			case <-stop:
				_ = bar.Set64(atk.done.Load())
				_ = bar.Finish()
				fmt.Fprintln(cfg.Progress)
				return
			case <-t.C:
			}
			_ = bar.Set64(atk.done.Load())
			bw.mu.Lock()
			d := "attack (breaker " + bw.last.State + ")"
			if !bw.available {
				d = "attack"
			}
			bw.mu.Unlock()
			if d != desc {
				desc = d
				bar.Describe(d)
			}
		}
	}()
	return func() { close(stop); <-done }
}

// readStats reads /v1/stats.
func readStats(ctx context.Context, admin *adminapi.Client) (guard.Stats, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := admin.Stats(ctx)
	if err != nil {
		return guard.Stats{}, fmt.Errorf("drill: admin API stats: %w", err)
	}
	return st, nil
}

// queueOutstanding counts the tasks asynq holds in floodgate's queues:
// pending, active, scheduled and retry.
func queueOutstanding(st *stack) (int64, error) {
	insp := asynq.NewInspectorFromRedisClient(st.rdb)
	names, err := insp.Queues()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, q := range []string{queue.ClassSecurity.QueueName(), queue.ClassNotify.QueueName()} {
		if !slices.Contains(names, q) {
			continue
		}
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			return 0, err
		}
		n += int64(info.Pending + info.Active + info.Scheduled + info.Retry)
	}
	return n, nil
}

func (r *Report) fillAttack(atk *attacker, d time.Duration) {
	t := atk.tally
	t.mu.Lock()
	defer t.mu.Unlock()
	r.Attack = AttackReport{Requested: t.requested, Admitted: t.byOutcome[queue.Queued], Outcomes: maps.Clone(t.outcomes),
		Seconds: round3(d.Seconds()), FirstError: t.firstErr}
	if len(t.errors) > 0 {
		r.Attack.Errors = maps.Clone(t.errors)
	}
	if d > 0 {
		r.Attack.PerSecond = float64(int64(float64(t.requested) / d.Seconds()))
	}
}

func (r *Report) fillBreaker(bw *breakerWatch, attackStart time.Time) {
	bw.mu.Lock()
	defer bw.mu.Unlock()
	b := BreakerReport{Kind: bw.kind, Available: bw.polled && bw.available, Polls: bw.polls, LastError: bw.lastErr}
	switch {
	case !bw.polled:
		b.Note = "the admin API never answered: " + bw.lastErr
	case !bw.available:
		b.Note = "the admin API has no /v1/breakers for " + bw.kind + " (404)"
	}
	if b.Available {
		if bw.atStart != nil {
			b.StateAtAttackStart = bw.atStart.State
		}
		for _, t := range bw.transitions {
			t.Seconds = round3(t.At.Sub(attackStart).Seconds())
			b.Transitions = append(b.Transitions, t)
		}
		final := bw.last
		b.Final = &final
		if !bw.firstOpen.IsZero() {
			b.Opened = true
			at := bw.openAtFirst
			b.AtOpen = &at
			b.PolledOpenSeconds = secp(bw.firstOpen.Sub(attackStart))
			b.OpenSeconds = b.PolledOpenSeconds
			if !at.OpenedAt.IsZero() {
				b.OpenedAtSeconds = secp(at.OpenedAt.Sub(attackStart))
				// Redis's clock against this one: trust opened_at only when
				// it falls between the attack's start (with a second of
				// skew) and the poll that saw it open.
				if !at.OpenedAt.Before(attackStart.Add(-time.Second)) && !at.OpenedAt.After(bw.firstOpen) {
					b.OpenSeconds = secp(max(at.OpenedAt.Sub(attackStart), 0))
				}
			}
		}
		if bw.atStart != nil && bw.atStart.State == adminapi.StateOpen {
			b.Note = "the breaker was already open when the attack started; no time to open is measured"
		}
	}
	r.Breaker = b
}

func (r *Report) fillDelivered(lg *legit, sc sinkCounts, bound Bound) {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	d := DeliveredReport{SinkMessages: sc.total, SinkReceived: sc.received, Attacked: sc.attack, AttackedRecipients: sc.victims,
		MaxPerRecipient: sc.maxPerVictim, Bound: bound, DuplicateMessageIDs: sc.duplicates, DKIMFailed: sc.dkimFail, Unsigned: sc.unsigned}
	lat := map[string]*[numPhases][]time.Duration{classNotification: {}, classReset: {}}
	admitted := map[string]*[numPhases]int64{classNotification: {}, classReset: {}}
	for _, req := range lg.admitted {
		admitted[req.class][req.phase]++
	}
	seen := map[string]bool{}
	for _, m := range sc.other {
		req, ok := lg.admitted[m.id]
		if !ok {
			d.Foreign++
			continue
		}
		if seen[m.id] {
			continue // a duplicate; counted in DuplicateMessageIDs
		}
		seen[m.id] = true
		if req.class == classNotification {
			d.LegitNotifications++
		} else {
			d.LegitResets++
		}
		lat[req.class][req.phase] = append(lat[req.class][req.phase], m.at.Sub(req.at))
	}
	r.Delivered = d
	r.Latency = LatencyReport{Notifications: map[string]Latency{}, Resets: map[string]Latency{}}
	for i, ph := range phaseNames {
		r.Latency.Notifications[ph] = latencyOf(admitted[classNotification][i], lat[classNotification][i])
		r.Latency.Resets[ph] = latencyOf(admitted[classReset][i], lat[classReset][i])
	}
	stream := func(t *tally, delivered int64) StreamReport {
		t.mu.Lock()
		defer t.mu.Unlock()
		s := StreamReport{Requested: t.requested, Outcomes: maps.Clone(t.outcomes), Delivered: delivered}
		if len(t.errors) > 0 {
			s.Errors = maps.Clone(t.errors)
		}
		return s
	}
	r.Legit = LegitReport{Notifications: stream(lg.notes, d.LegitNotifications), Resets: stream(lg.resets, d.LegitResets)}
}

// admissionOnly are outcomes decided only at admission, so the guard's
// count must equal the receipts'.
var admissionOnly = []queue.Outcome{queue.Capped, queue.Suppressed}

func (r *Report) fillConservation(still bool, before, after guard.Stats, attack *tally, lg *legit, sc sinkCounts, outstanding int64, haveQueue bool) {
	c := Conservation{Kinds: map[string]KindConservation{}}
	problem := func(format string, args ...any) { c.Problems = append(c.Problems, fmt.Sprintf(format, args...)) }
	// Outside the embedded stack, other traffic and moving workers blur
	// the cross-checks; they are reported as remarks, not failures.
	mismatch := problem
	if !still {
		mismatch = func(format string, args ...any) { c.Remarks = append(c.Remarks, fmt.Sprintf(format, args...)) }
	}
	drill := map[string]*tally{queue.KindPasswordReset: newTally(), queue.KindNotification: newTally()}
	drill[queue.KindPasswordReset].merge(attack)
	drill[queue.KindPasswordReset].merge(lg.resets)
	drill[queue.KindNotification].merge(lg.notes)

	kinds := map[string]bool{}
	for k := range after.Kinds {
		kinds[k] = true
	}
	for k := range drill {
		kinds[k] = true
	}
	for _, k := range sortedKeys(kinds) {
		a, b := after.Kinds[k], before.Kinds[k]
		if a == nil {
			problem("%s: the guard has no counts for the kind", k)
			continue
		}
		if b == nil {
			b = &guard.KindStats{}
		}
		kc := KindConservation{Requested: a.Requested - b.Requested, Admitted: a.Admitted - b.Admitted,
			InFlight: a.InFlight - b.InFlight, Outcomes: map[queue.Outcome]int64{}}
		for o, n := range a.Outcomes {
			kc.Outcomes[o] = n - b.Outcomes[o]
		}
		for o, n := range b.Outcomes {
			if _, ok := a.Outcomes[o]; !ok {
				kc.Outcomes[o] = -n
			}
		}
		kc.Retried = a.Retried - b.Retried
		for reason, n := range a.Deferred {
			if d := n - b.Deferred[reason]; d != 0 {
				if kc.Deferred == nil {
					kc.Deferred = map[string]int64{}
				}
				kc.Deferred[reason] = d
			}
		}
		kc.Accounted = kc.InFlight
		for _, n := range kc.Outcomes {
			kc.Accounted += n
		}
		if t := drill[k]; t != nil {
			t.mu.Lock()
			kc.DrillRequested, kc.DrillQueued = t.requested, t.byOutcome[queue.Queued]
			for _, n := range t.errors {
				kc.DrillErrors += n
			}
			byOutcome := maps.Clone(t.byOutcome)
			t.mu.Unlock()
			// An Enqueue error may hide a decision whose reply was lost.
			if kc.Requested < kc.DrillRequested || kc.Requested > kc.DrillRequested+kc.DrillErrors {
				mismatch("%s: the guard counted %d requests, the drill got %d receipts and %d errors", k, kc.Requested, kc.DrillRequested, kc.DrillErrors)
			}
			if kc.Admitted < kc.DrillQueued || kc.Admitted > kc.DrillQueued+kc.DrillErrors {
				mismatch("%s: the guard admitted %d, the drill got %d queued receipts", k, kc.Admitted, kc.DrillQueued)
			}
			for _, o := range admissionOnly {
				if kc.Outcomes[o] < byOutcome[o] || kc.Outcomes[o] > byOutcome[o]+kc.DrillErrors {
					mismatch("%s: the guard counted %d %s, the drill got %d such receipts", k, kc.Outcomes[o], o, byOutcome[o])
				}
			}
		} else if kc.Requested != 0 {
			mismatch("%s: %d requests the drill did not make", k, kc.Requested)
		}
		if kc.Accounted != kc.Requested {
			problem("%s: requested %d != outcomes + in flight %d", k, kc.Requested, kc.Accounted)
		}
		for o, n := range kc.Outcomes {
			if n < 0 {
				problem("%s: %s went down by %d", k, o, -n)
			}
		}
		if a.InFlight < 0 {
			problem("%s: in flight is %d: more outcomes than requests", k, a.InFlight)
		}
		c.Kinds[k] = kc
		c.Sent += kc.Outcomes[queue.Sent]
		c.InFlight += a.InFlight
	}
	c.SinkMessages = sc.total - r.Delivered.Foreign
	if c.Sent != c.SinkMessages-r.Delivered.DuplicateMessageIDs {
		mismatch("the guard counted %d sent, the sink holds %d distinct messages of the drill", c.Sent, c.SinkMessages-r.Delivered.DuplicateMessageIDs)
	}
	if sc.received > sc.total {
		problem("the sink received %d messages, the drill read only %d of them: the sink evicted some before they were read (raise its -max-messages)", sc.received, sc.total)
	} else if sc.received != sc.total {
		mismatch("the sink received %d messages, the drill read %d of them", sc.received, sc.total)
	}
	if r.Delivered.DuplicateMessageIDs > 0 {
		problem("%d messages reached the sink twice (same Message-ID)", r.Delivered.DuplicateMessageIDs)
	}
	if still && r.Delivered.Foreign > 0 {
		problem("%d messages at the sink match no request of the drill", r.Delivered.Foreign)
	}
	if haveQueue {
		c.QueueOutstanding = &outstanding
		if still && outstanding != c.InFlight {
			problem("the guard has %d in flight, the queue holds %d tasks", c.InFlight, outstanding)
		} else if !still {
			c.Remarks = append(c.Remarks, fmt.Sprintf("the workers were running: %d in flight, %d tasks in the queue when read", c.InFlight, outstanding))
		}
	}
	if sc.lastErr != "" {
		c.Remarks = append(c.Remarks, "a sink read failed during the drill: "+sc.lastErr)
	}
	c.OK = len(c.Problems) == 0
	r.Conservation = c
}

func (r *Report) fillTargets() {
	add := func(name, goal, value, status string) {
		r.Targets = append(r.Targets, Target{Name: name, Goal: goal, Value: value, Status: status})
	}
	status := func(ok bool) string {
		if ok {
			return Pass
		}
		return Fail
	}
	switch b := r.Breaker; {
	case !b.Available:
		add("breaker opens", fmt.Sprintf("<= %s", TargetOpenWithin), "breaker not available", NA)
	case b.StateAtAttackStart == adminapi.StateOpen:
		add("breaker opens", fmt.Sprintf("<= %s", TargetOpenWithin), "already open at attack start", NA)
	case !b.Opened:
		add("breaker opens", fmt.Sprintf("<= %s", TargetOpenWithin), "never opened", Fail)
	default:
		add("breaker opens", fmt.Sprintf("<= %s", TargetOpenWithin), fmtSec(b.OpenSeconds),
			status(*b.OpenSeconds <= TargetOpenWithin.Seconds()))
	}
	q, a := r.Latency.Notifications["quiet"], r.Latency.Notifications["attack"]
	goal := fmt.Sprintf("attack p99 <= %gx quiet p99", TargetLatencyFactor)
	switch {
	case q.P99Ms == nil || *q.P99Ms <= 0:
		add("notification latency", goal, "no quiet p99 (quiet phase too short or undelivered)", NA)
	case a.Admitted == 0:
		add("notification latency", goal, "no notifications during the attack", NA)
	case a.P99Ms == nil:
		add("notification latency", goal, fmt.Sprintf("attack p99 undelivered (%d of %d), quiet %s", a.Admitted-a.Delivered, a.Admitted, fmtMs(q.P99Ms)), Fail)
	default:
		add("notification latency", goal, fmt.Sprintf("%s vs %s (%.2fx)", fmtMs(a.P99Ms), fmtMs(q.P99Ms), *a.P99Ms / *q.P99Ms),
			status(*a.P99Ms <= TargetLatencyFactor**q.P99Ms))
	}
	add("redis memory growth", "<= "+mib(TargetMemoryGrowth), fmt.Sprintf("%+.1f MiB", float64(r.Redis.Growth)/(1<<20)),
		status(r.Redis.Growth <= TargetMemoryGrowth))
	add("total drill time", fmt.Sprintf("<= %s", TargetTotalDrillTime), fmt.Sprintf("%.1f s", r.TotalSeconds),
		status(r.TotalSeconds <= TargetTotalDrillTime.Seconds()))
	add("attacked deliveries", "<= policy bound", fmt.Sprintf("%d <= %d", r.Delivered.Attacked, r.Delivered.Bound.Delivery),
		status(r.Delivered.Attacked <= r.Delivered.Bound.Delivery))
	value := "every request accounted for"
	if !r.Conservation.OK {
		value = fmt.Sprintf("%d problems", len(r.Conservation.Problems))
	}
	add("conservation", "requested = outcomes + in flight; sent = sink", value, status(r.Conservation.OK))
}
