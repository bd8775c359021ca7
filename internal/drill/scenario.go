package drill

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// ScenarioNames lists the scenarios of [RunScenario] in the order "all"
// runs them.
var ScenarioNames = []string{"flood", "frog", "floor", "dos", "coldstart", "holdfill", "variants", "release"}

// ScenarioConfig selects and sizes one scenario.
type ScenarioConfig struct {
	// Name is one of [ScenarioNames].
	Name string
	// Quick runs the scenario's short variant, for tests and a first look.
	Quick bool
	// Speed overrides the scenario's time compression (simulated seconds
	// per real second); zero keeps the scenario's own.
	Speed float64
	// Policy is the guard policy, before compression; nil means
	// guard.DefaultPolicy().
	Policy *guard.Policy
	// Workers and Concurrency size the embedded workers; zero means 2 × 16.
	Workers, Concurrency int
	// RedisServer is the redis-server binary; empty looks it up on PATH.
	RedisServer string
	// Progress receives phase announcements; nil shows nothing.
	Progress io.Writer
	// Logger receives the embedded components' logs; nil discards.
	Logger *slog.Logger
}

// Scenario phases, by when a request was made.
const (
	phHistory = iota
	phAttack
	phAfter
	phRelease
	numScenarioPhases
)

var scenarioPhaseNames = [numScenarioPhases]string{"history", "attack", "after", "release"}

// Legitimate users' behaviour.
const (
	userRerequestAfter = 90 * time.Second // asks again when nothing came
	userMaxRerequests  = 3
	userTrustedShare   = 0.2 // requests carrying a recognised device cookie
	userConfirmShare   = 0.7 // users who use their link
	userConfirmMin     = 10 * time.Second
	userConfirmMax     = 120 * time.Second
	userReachedWithin  = 5 * time.Minute
	returnAfter        = 10 * time.Minute // a returning user's last request was at least this long ago
	legitSourcePrefix  = "172"
	attackSourcePrefix = "10"
)

// spec is one scenario's shape, in simulated time.
type spec struct {
	doc                    string
	speed                  float64
	history, attack, after time.Duration
	// users is legitimate users arriving per simulated minute; returning
	// the share of those arriving after the history who are users of the
	// history coming back (same address and source).
	users, returning float64
	// background is notifications and verify_email emails per simulated
	// minute, each.
	background float64
	// coldstart keeps the policy's warm-up; otherwise the warm-up is the
	// history, so that the attack meets a breaker that has learned.
	coldstart bool
	attacker  func(r *srun, ctx context.Context)
	// release runs a default release a simulated minute after the attack.
	release bool
	targets func(r *srun, rep *ScenarioReport)
}

func specFor(name string, quick bool) (spec, error) {
	q := func(full, short time.Duration) time.Duration {
		if quick {
			return short
		}
		return full
	}
	n := func(full, short int) int {
		if quick {
			return short
		}
		return full
	}
	switch name {
	case "flood":
		return spec{doc: "a password-reset flood over many recipients from 1,000 sources, each victim asked twice a few minutes apart (the attacker's best use of the re-request lane)",
			speed: 60, history: q(20*time.Minute, 12*time.Minute), attack: q(10*time.Minute, 5*time.Minute), after: q(10*time.Minute, 6*time.Minute),
			users: 10, returning: 0.3, background: 20,
			attacker: func(r *srun, ctx context.Context) { r.flood(ctx, n(40_000, 12_000), 1000) },
			targets:  floodTargets}, nil
	case "release":
		return spec{doc: "the flood, then a default release of the held emails a simulated minute after it ends",
			speed: 60, history: q(20*time.Minute, 12*time.Minute), attack: q(10*time.Minute, 5*time.Minute), after: q(15*time.Minute, 10*time.Minute),
			users: 10, returning: 0.3, background: 20, release: true,
			attacker: func(r *srun, ctx context.Context) { r.flood(ctx, n(40_000, 12_000), 1000) },
			targets:  releaseTargets}, nil
	case "frog":
		return spec{doc: "a boiling frog: an attacker who reads the breaker each window and stays at 0.9× of its threshold, ceilings, budget and redemption share, to distinct recipients from 1,000 sources",
			speed: 120, history: q(90*time.Minute, 80*time.Minute), attack: q(24*time.Hour, 2*time.Hour), after: 10 * time.Minute,
			users: 10, returning: 0.3, attacker: (*srun).frog, targets: frogTargets}, nil
	case "floor":
		return spec{doc: "below the floor: 40 resets a minute to distinct recipients from 200 sources, which with the users' 10 stays under every rate trip (the 60/min floor, 5× the baseline)",
			speed: 120, history: q(90*time.Minute, 80*time.Minute), attack: q(6*time.Hour, 70*time.Minute), after: 10 * time.Minute,
			users: 10, returning: 0.3,
			attacker: func(r *srun, ctx context.Context) { r.steady(ctx, 40, 200) },
			targets:  floorTargets}, nil
	case "dos":
		return spec{doc: "one client hammering its own account from one source, as fast as it can",
			speed: 60, history: q(15*time.Minute, 10*time.Minute), attack: q(15*time.Minute, 6*time.Minute), after: 5 * time.Minute,
			users: 10, returning: 0.3, background: 20, attacker: (*srun).dos, targets: dosTargets}, nil
	case "coldstart":
		return spec{doc: "a fresh deployment (empty Redis, no baseline) with organic resets at 4× the breaker's floor and no attack",
			speed: 60, attack: q(60*time.Minute, 20*time.Minute), after: 5 * time.Minute, users: 240, coldstart: true,
			targets: coldstartTargets}, nil
	case "holdfill":
		return spec{doc: "a flood trips the breaker; then one source asks for as many distinct victims as it can, to fill the hold",
			speed: 60, history: q(15*time.Minute, 10*time.Minute), attack: q(10*time.Minute, 5*time.Minute), after: 5 * time.Minute,
			users: 10, returning: 0.3, attacker: (*srun).holdfill, targets: holdfillTargets}, nil
	case "variants":
		return spec{doc: "128 provider aliases of each of 40 victims (Gmail dots and tags, Proton separators and domains, Fastmail subdomains, iCloud domains, Outlook tags, Yahoo keywords) from 500 sources",
			speed: 60, history: q(15*time.Minute, 10*time.Minute), attack: q(10*time.Minute, 5*time.Minute), after: 5 * time.Minute,
			users: 10, returning: 0.3, attacker: (*srun).variants, targets: variantsTargets}, nil
	}
	return spec{}, fmt.Errorf("drill: no scenario %q (have %s, or all)", name, strings.Join(ScenarioNames, ", "))
}

// srun is one scenario's run.
type srun struct {
	spec   spec
	name   string
	quick  bool
	speed  float64
	policy *guard.Policy // uncompressed, for bounds
	g      *guard.Guard
	client *queue.Client
	st     *stack
	t0     time.Time // simulated zero: the history's start
	phase  atomic.Int32

	attackStart, attackEnd, releaseAt time.Time
	atk                               *tally
	atkReq                            map[string]*tally // per attacker role
	atkSources                        map[string]bool

	mu        sync.Mutex
	users     []*user
	byAddr    map[string]*user
	returners []*user           // history users who may come back
	bg        map[string]*bgReq // by address
	victims   map[string]int
	victimKey func(rcpt string) string
	delivered [numScenarioPhases]int64 // attack deliveries by when they arrived
	asked     map[string]int           // attack requests per victim key
	released  guard.ReleaseResult
	heldAtRel int64
	breaker   []SimTransition
	lastState string
	firstOpen time.Time
	userWG    sync.WaitGroup
}

// user is one legitimate user asking for a reset.
type user struct {
	n        int
	addr     string
	source   string
	trust    queue.Trust
	confirms bool
	phase    int
	first    time.Time
	requests int
	// set by the sink watch
	reached  time.Time
	gotID    string
	got      chan struct{}
	outcomes map[string]int
	// confirmed is when the user used the link.
	confirmed bool
}

// bgReq is a background email (notification, verification).
type bgReq struct {
	kind  string
	phase int
	at    time.Time
	done  bool
	lat   time.Duration
}

// real converts a simulated duration to wall-clock time.
func (r *srun) real(d time.Duration) time.Duration { return time.Duration(float64(d) / r.speed) }

// sim converts a wall-clock duration to simulated time.
func (r *srun) sim(d time.Duration) time.Duration { return time.Duration(float64(d) * r.speed) }

func (r *srun) sleepSim(ctx context.Context, d time.Duration) bool {
	return sleep(ctx, r.real(d)) == nil
}

// RunScenario runs one scenario on an embedded stack and returns its
// report. It fails only when the scenario could not run.
func RunScenario(ctx context.Context, cfg ScenarioConfig) (*ScenarioReport, error) {
	sp, err := specFor(cfg.Name, cfg.Quick)
	if err != nil {
		return nil, err
	}
	if cfg.Workers < 0 || cfg.Concurrency < 0 {
		return nil, errors.New("drill: workers and concurrency must not be negative")
	}
	if cfg.Speed < 0 || cfg.Speed > 1000 {
		return nil, errors.New("drill: -speed must be between 1 and 1000")
	}
	speed := sp.speed
	if cfg.Speed > 0 {
		speed = cfg.Speed
	}
	base := cfg.Policy
	if base == nil {
		base = guard.DefaultPolicy()
	}
	if err := base.Validate(); err != nil {
		return nil, fmt.Errorf("drill: policy: %w", err)
	}
	shaped := clonePolicy(base)
	if !sp.coldstart {
		for name, k := range shaped.KindPolicies {
			k.Breaker.Learn.Warmup = max(sp.history, time.Minute)
			shaped.KindPolicies[name] = k
		}
	}
	policy := compress(shaped, speed)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	say := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "drill %s: "+format+"\n", append([]any{cfg.Name}, args...)...)
		}
	}
	dcfg := Config{Workers: cmp.Or(cfg.Workers, 2), Concurrency: cmp.Or(cfg.Concurrency, 16), RedisServer: cfg.RedisServer,
		pollInterval: 10 * time.Millisecond, sweepInterval: max(time.Duration(float64(30*time.Second)/speed), 50*time.Millisecond)}
	began := time.Now()
	say("starting the embedded stack (redis-server subprocess, smtpsink, %d workers); time runs %g× faster than the policy's", dcfg.Workers, speed)
	st, err := startEmbedded(ctx, &dcfg, policy, log)
	if err != nil {
		return nil, err
	}
	defer st.close()
	g, client, err := st.enqueuer(policy, log)
	if err != nil {
		return nil, err
	}
	defer client.Close()

	r := &srun{spec: sp, name: cfg.Name, quick: cfg.Quick, speed: speed, policy: base, g: g, client: client, st: st, atk: newTally(), atkReq: map[string]*tally{},
		atkSources: map[string]bool{}, byAddr: map[string]*user{}, bg: map[string]*bgReq{}, victims: map[string]int{},
		asked: map[string]int{}, victimKey: strings.ToLower, lastState: ""}
	memBefore, err := usedMemory(ctx, st.rdb)
	if err != nil {
		return nil, err
	}
	sw := newSinkWatch(st.sink, DefaultAttackDomain)
	sw.interval = 10 * time.Millisecond
	sw.onMessage = r.onMessage
	if err := sw.start(ctx); err != nil {
		return nil, err
	}
	mw := &memWatch{rdb: st.rdb, peak: memBefore}
	r.t0 = time.Now()
	obsCtx, stopObs := context.WithCancel(ctx)
	var obs sync.WaitGroup
	for _, f := range []func(context.Context){mw.run, sw.run, r.watchBreaker} {
		obs.Add(1)
		go func() { defer obs.Done(); f(obsCtx) }()
	}
	defer func() { stopObs(); obs.Wait() }()

	userCtx, stopUsers := context.WithCancel(ctx)
	var traffic sync.WaitGroup
	traffic.Add(2)
	go func() { defer traffic.Done(); r.arrivals(userCtx) }()
	go func() { defer traffic.Done(); r.background(userCtx) }()
	defer func() { stopUsers(); traffic.Wait(); r.userWG.Wait() }()

	if sp.history > 0 {
		say("history: %s simulated (%s) of legitimate users only", sp.history, r.real(sp.history).Round(time.Millisecond))
	}
	if !r.sleepSim(ctx, sp.history) {
		return nil, ctx.Err()
	}
	r.mu.Lock()
	r.attackStart = time.Now()
	r.mu.Unlock()
	r.phase.Store(phAttack)
	say("attack: %s simulated (%s)", sp.attack, r.real(sp.attack).Round(time.Millisecond))
	atkCtx, stopAtk := context.WithTimeout(ctx, r.real(sp.attack))
	atkDone := make(chan struct{})
	go func() {
		defer close(atkDone)
		if sp.attacker != nil {
			sp.attacker(r, atkCtx)
		}
		<-atkCtx.Done()
	}()
	<-atkDone
	stopAtk()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	r.mu.Lock()
	r.attackEnd = time.Now()
	r.mu.Unlock()
	r.phase.Store(phAfter)
	say("after: %s simulated for mail in flight and users still asking", sp.after)
	if sp.release {
		if !r.sleepSim(ctx, time.Minute) {
			return nil, ctx.Err()
		}
		if err := r.release(ctx); err != nil {
			return nil, err
		}
		say("released %d held emails (%v), %d kept", r.released.Released, r.released.Lanes, r.released.Kept)
		if !r.sleepSim(ctx, sp.after-time.Minute) {
			return nil, ctx.Err()
		}
	} else if !r.sleepSim(ctx, sp.after) {
		return nil, ctx.Err()
	}
	stopUsers()
	traffic.Wait()
	r.userWG.Wait()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	_ = st.stopWorkers(sctx)
	cancel()
	stopObs()
	obs.Wait()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := sw.poll(fctx); err != nil {
		return nil, err
	}
	memEnd, err := usedMemory(fctx, st.rdb)
	if err != nil {
		return nil, err
	}
	rep := r.report(began)
	rep.Unreached = r.unreached(fctx, 3)
	rep.Redis = RedisReport{Addr: st.redisAddr, Version: st.redisVersion, Before: memBefore, End: memEnd, Peak: max(mw.max(), memEnd), Growth: memEnd - memBefore}
	if sp.targets != nil {
		sp.targets(r, rep)
	}
	rep.OK = true
	for _, t := range rep.Targets {
		if t.Status == Fail {
			rep.OK = false
		}
	}
	return rep, nil
}

// onMessage accounts one message at the sink: a user's reset, a
// background email or an attack email.
func (r *srun) onMessage(m *smtpsink.Message) {
	if len(m.RcptTo) == 0 {
		return
	}
	// The drill's emails have one recipient each.
	rc := strings.ToLower(m.RcptTo[0])
	r.mu.Lock()
	defer r.mu.Unlock()
	if u, ok := r.byAddr[rc]; ok {
		// A user's address is never a victim's; a late email of a
		// returning user's earlier request does not reach the new one.
		if u.reached.IsZero() && !m.ReceivedAt.Before(u.first) {
			u.reached, u.gotID = m.ReceivedAt, emailID(m.MessageID)
			close(u.got)
		}
		return
	}
	if b, ok := r.bg[rc]; ok {
		if !b.done {
			b.done, b.lat = true, m.ReceivedAt.Sub(b.at)
		}
		return
	}
	r.victims[r.victimKey(rc)]++
	ph := phAttack
	switch {
	case !r.releaseAt.IsZero() && !m.ReceivedAt.Before(r.releaseAt):
		ph = phRelease
	case !r.attackEnd.IsZero() && m.ReceivedAt.After(r.attackEnd):
		ph = phAfter
	case r.attackStart.IsZero():
		ph = phHistory
	}
	r.delivered[ph]++
}

// watchBreaker records the reset breaker's transitions.
func (r *srun) watchBreaker(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		st, err := r.g.Breaker(ctx, queue.KindPasswordReset)
		if err == nil {
			now := time.Now()
			r.mu.Lock()
			if st.State != r.lastState {
				r.breaker = append(r.breaker, SimTransition{AtSeconds: round3(r.sim(now.Sub(r.t0)).Seconds()), State: st.State, Reason: st.Reason})
				r.lastState = st.State
				if st.State == "open" && r.firstOpen.IsZero() && !r.attackStart.IsZero() {
					r.firstOpen = now
				}
			}
			r.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// arrivals starts legitimate users at spec.users per simulated minute
// until ctx ends.
func (r *srun) arrivals(ctx context.Context) {
	if r.spec.users <= 0 {
		return
	}
	interval := r.real(time.Duration(float64(time.Minute) / r.spec.users))
	// The last users arrive userReachedWithin before the end, so that
	// every user has the time the report judges them by.
	last := r.t0.Add(r.real(r.spec.history + r.spec.attack + r.spec.after - userReachedWithin))
	next := time.Now()
	for n := 0; next.Before(last); n++ {
		if !sleepUntil(ctx, next) {
			return
		}
		next = next.Add(interval)
		ph := int(r.phase.Load())
		r.mu.Lock()
		var u *user
		// A user of the history comes back (same address, source and
		// device) when one asked long enough ago that the email is not a
		// duplicate of the last.
		i := -1
		if ph != phHistory && rand.Float64() < r.spec.returning {
			i = slices.IndexFunc(r.returners, func(o *user) bool { return r.sim(time.Since(o.first)) >= returnAfter })
		}
		if i >= 0 {
			old := r.returners[i]
			r.returners = slices.Delete(r.returners, i, i+1)
			u = &user{n: old.n, addr: old.addr, source: old.source, trust: old.trust}
		} else {
			u = &user{n: n, addr: "account" + strconv.Itoa(n) + "@" + legitDomain(n), source: sourceAddr(legitSourcePrefix, n)}
			if rand.Float64() < userTrustedShare {
				u.trust = queue.TrustDevice
			}
		}
		u.confirms = rand.Float64() < userConfirmShare
		u.phase, u.first, u.got, u.outcomes = ph, time.Now(), make(chan struct{}), map[string]int{}
		r.users = append(r.users, u)
		r.byAddr[u.addr] = u
		r.mu.Unlock()
		r.userWG.Add(1)
		go r.live(ctx, u)
	}
}

func legitDomain(n int) string {
	return [...]string{"example.com", "example.net", "example.org", "example.edu"}[n%4]
}

// live is one user: ask, wait for the email, ask again when nothing came
// within userRerequestAfter (up to userMaxRerequests times), then maybe
// use the link.
func (r *srun) live(ctx context.Context, u *user) {
	defer r.userWG.Done()
	for i := 0; i <= userMaxRerequests; i++ {
		rc, err := r.client.Enqueue(ctx, queue.Email{Kind: queue.KindPasswordReset, To: u.addr, Source: u.source, Trust: u.trust,
			Data: map[string]string{"reset_url": "https://app.example/reset/" + strconv.Itoa(u.n)}})
		r.mu.Lock()
		u.requests++
		key := string(rc.Outcome)
		if err != nil {
			key = "error:" + errorClass(err)
		} else if rc.Reason != "" {
			key += ":" + rc.Reason
		}
		u.outcomes[key]++
		r.mu.Unlock()
		select {
		case <-u.got:
			i = userMaxRerequests + 1
		case <-time.After(r.real(userRerequestAfter)):
		case <-ctx.Done():
			return
		}
	}
	select {
	case <-u.got:
	case <-ctx.Done():
		return
	}
	r.mu.Lock()
	if u.phase == phHistory {
		r.returners = append(r.returners, u)
	}
	at, id := u.reached, u.gotID
	r.mu.Unlock()
	if !u.confirms {
		return
	}
	delay := userConfirmMin + time.Duration(rand.Int64N(int64(userConfirmMax-userConfirmMin)))
	if !sleepUntil(ctx, at.Add(r.real(delay))) {
		return
	}
	if err := r.client.Confirm(ctx, id); err == nil {
		r.mu.Lock()
		u.confirmed = true
		r.mu.Unlock()
	}
}

// background sends notifications and verifications at spec.background
// per simulated minute each, to distinct recipients, and remembers when.
func (r *srun) background(ctx context.Context) {
	if r.spec.background <= 0 {
		return
	}
	interval := r.real(time.Duration(float64(time.Minute) / r.spec.background))
	next := time.Now()
	var wg sync.WaitGroup
	defer wg.Wait()
	for n := 0; ; n++ {
		if !sleepUntil(ctx, next) {
			return
		}
		next = next.Add(interval)
		for _, kind := range []string{queue.KindNotification, queue.KindVerifyEmail} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e := queue.Email{Kind: kind, To: "member" + strconv.Itoa(n) + "@" + legitDomain(n)}
				if kind == queue.KindNotification {
					e.Data = map[string]string{"subject": "Your weekly summary", "body": "Three new comments."}
				} else {
					e.Data = map[string]string{"verify_url": "https://app.example/verify/" + strconv.Itoa(n)}
					e.To = "new" + strconv.Itoa(n) + "@" + legitDomain(n+1)
					e.Source = sourceAddr("192", n)
				}
				// Registered by address before it is sent, so that its
				// arrival is never taken for a victim's.
				b := &bgReq{kind: kind, phase: int(r.phase.Load()), at: time.Now()}
				addr := strings.ToLower(e.To)
				r.mu.Lock()
				r.bg[addr] = b
				r.mu.Unlock()
				rc, err := r.client.Enqueue(context.WithoutCancel(ctx), e)
				if err != nil || !rc.Accepted() {
					r.mu.Lock()
					delete(r.bg, addr)
					r.mu.Unlock()
				}
			}()
		}
	}
}

// attack sends one attack request and counts its receipt under role.
func (r *srun) attack(ctx context.Context, role string, e queue.Email) {
	e.Kind = queue.KindPasswordReset
	if e.Data == nil {
		e.Data = map[string]string{"reset_url": "https://app.example/reset/drill"}
	}
	rc, err := r.client.Enqueue(ctx, e)
	if err != nil && ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	t := r.atkReq[role]
	if t == nil {
		t = newTally()
		r.atkReq[role] = t
	}
	r.asked[r.victimKey(e.To)]++
	r.atkSources[e.Source] = true
	r.mu.Unlock()
	t.add(rc, err)
	r.atk.add(rc, err)
}

// paced sends n requests spread evenly over the rest of ctx's life (or
// over d when ctx has no deadline) with par senders; mk builds the i-th.
func (r *srun) paced(ctx context.Context, n int, d time.Duration, par int, role string, mk func(i int) queue.Email) {
	start := time.Now()
	if dl, ok := ctx.Deadline(); ok && d <= 0 {
		d = time.Until(dl)
	}
	rate := float64(n) / max(d.Seconds(), 1e-3)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) || !sleepUntil(ctx, paced(start, i, rate)) {
					return
				}
				r.attack(ctx, role, mk(int(i)))
			}
		}()
	}
	wg.Wait()
}

// flood asks for n resets over n/2 victims from sources sources, each
// victim twice, half the attack apart: the second ask is a re-request of
// a held email, the attacker's best way into an open breaker.
func (r *srun) flood(ctx context.Context, n, sources int) {
	victims := max(n/2, 1)
	r.paced(ctx, n, 0, 16, "flood", func(i int) queue.Email {
		return queue.Email{To: "victim" + strconv.Itoa(i%victims) + "@" + DefaultAttackDomain, Source: sourceAddr(attackSourcePrefix, i%sources)}
	})
}

// steady asks perMinute resets a simulated minute to distinct victims,
// from sources sources in turn.
func (r *srun) steady(ctx context.Context, perMinute float64, sources int) {
	dl, _ := ctx.Deadline()
	n := int(perMinute * r.sim(time.Until(dl)).Minutes())
	r.paced(ctx, n, 0, 4, "steady", func(i int) queue.Email {
		return queue.Email{To: "victim" + strconv.Itoa(i) + "@" + DefaultAttackDomain, Source: sourceAddr(attackSourcePrefix, i%sources)}
	})
}

// frog is the boiling frog at its best: each breaker window it reads the
// breaker (as an attacker can infer from its own deliveries) and sends, to
// distinct victims, 0.9× of the most that trips nothing: under the surge
// threshold and the rate ceiling, under the new-recipient budget's rate,
// and no more than the legitimate volume, so that the redemption share
// stays above its collapse point. It pauses while the breaker is not
// closed.
func (r *srun) frog(ctx context.Context) {
	kp := r.g.Policy().KindPolicies[queue.KindPasswordReset]
	window := kp.Breaker.Window
	legit := r.spec.users / 60 * r.speed // requests per real second
	collapse := kp.Breaker.Redemption.Collapse
	n := 0
	for ctx.Err() == nil {
		st, err := r.g.Breaker(ctx, queue.KindPasswordReset)
		if err != nil || st.State != "closed" {
			if sleep(ctx, window) != nil {
				return
			}
			continue
		}
		lim := math.Inf(1)
		for _, v := range []float64{st.Threshold, st.Ceiling} {
			if v > 0 {
				lim = min(lim, v)
			}
		}
		if math.IsInf(lim, 1) {
			lim = float64(kp.Breaker.Floor.N) / kp.Breaker.Floor.Per.Seconds()
		}
		rate := 0.9*lim - legit
		if st.Budget > 0 && st.BudgetPeriod > 0 {
			rate = min(rate, 0.9*float64(st.Budget)/st.BudgetPeriod.Seconds()-legit)
			if float64(st.BudgetUsed) >= 0.9*float64(st.Budget) {
				rate = 0
			}
		}
		if collapse > 0 && collapse < 1 {
			rate = min(rate, 0.9*legit*(1/collapse-1))
		}
		count := int(rate * window.Seconds())
		if rate > 0 && count == 0 && rand.Float64() < rate*window.Seconds() {
			count = 1
		}
		wctx, cancel := context.WithTimeout(ctx, window)
		base := n
		r.paced(wctx, count, window, 4, "frog", func(i int) queue.Email {
			j := base + i
			return queue.Email{To: "victim" + strconv.Itoa(j) + "@" + DefaultAttackDomain, Source: sourceAddr(attackSourcePrefix, j%1000)}
		})
		<-wctx.Done()
		cancel()
		n += count
	}
}

// dos is one client at its own account, from one source, as fast as one
// connection goes.
func (r *srun) dos(ctx context.Context) {
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				r.attack(ctx, "dos", queue.Email{To: "mallory@example.com", Source: "198.51.100.66"})
			}
		}()
	}
	wg.Wait()
}

// holdfill trips the breaker with a short flood, then one source asks for
// distinct victims as fast as it can for the rest of the attack.
func (r *srun) holdfill(ctx context.Context) {
	fctx, cancel := context.WithTimeout(ctx, r.real(time.Minute))
	r.paced(fctx, 6000, 0, 16, "flood", func(i int) queue.Email {
		return queue.Email{To: "victim" + strconv.Itoa(i) + "@" + DefaultAttackDomain, Source: sourceAddr(attackSourcePrefix, i%1000)}
	})
	cancel()
	var wg sync.WaitGroup
	var n atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := n.Add(1)
				r.attack(ctx, "one-source", queue.Email{To: "parked" + strconv.FormatInt(i, 10) + "@" + DefaultAttackDomain, Source: "198.51.100.77"})
			}
		}()
	}
	wg.Wait()
}

// variants asks for resets to 128 provider aliases of each of 40 victims,
// each victim at one provider.
func (r *srun) variants(ctx context.Context) {
	rules := r.g.Policy().RecipientRules
	r.mu.Lock()
	r.victimKey = func(rc string) string { return guard.Canonical(rc, rules) }
	r.mu.Unlock()
	const victims, each = 40, 128
	sets := make([][]string, victims)
	for v := range victims {
		sets[v] = aliasVariants("victim"+strconv.Itoa(v)+"x", v%len(providers))
	}
	// Every victim is asked all through the attack, one variant at a time.
	r.paced(ctx, victims*each, 0, 8, "variants", func(i int) queue.Email {
		return queue.Email{To: sets[i%victims][i/victims], Source: sourceAddr(attackSourcePrefix, i%500)}
	})
}

// providers are the alias rules aliasVariants uses.
var providers = []string{"gmail", "proton", "fastmail", "icloud", "outlook", "yahoo"}

// aliasVariants returns 128 distinct addresses that reach local's mailbox
// at the provider'th of providers: Gmail dots, tags and googlemail.com;
// Proton separators, tags and its four domains; Fastmail subdomain
// addressing and tags; iCloud tags on icloud.com, me.com and mac.com;
// Outlook tags and case; Yahoo keywords.
func aliasVariants(local string, provider int) []string {
	var out []string
	seen := map[string]bool{}
	for i := 0; len(out) < 128; i++ {
		t := strconv.Itoa(i)
		var v string
		switch providers[provider] {
		case "gmail":
			v = dotted(local, i, ".") + [...]string{"", "+t" + t}[i/256%2] + [...]string{"@gmail.com", "@googlemail.com"}[i%2]
		case "proton":
			v = dotted(local, i/4, [...]string{".", "-", "_"}[i%3]) + "+p" + t + [...]string{"@proton.me", "@protonmail.com", "@protonmail.ch", "@pm.me"}[i%4]
		case "fastmail":
			v = "w" + t + "@" + local + ".fastmail.com"
			if i%2 == 1 {
				v = local + "+f" + t + "@fastmail.com"
			}
		case "icloud":
			v = local + "+i" + t + [...]string{"@icloud.com", "@me.com", "@mac.com"}[i%3]
		case "outlook":
			v = strings.ToUpper(local[:i%len(local)]) + local[i%len(local):] + "+o" + t + "@outlook.com"
		case "yahoo":
			v = local + "-k" + t + "@yahoo.com"
		}
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// dotted inserts sep into local where the bits of n say.
func dotted(local string, n int, sep string) string {
	var b strings.Builder
	for i, c := range local {
		if i > 0 && n>>(i-1)&1 == 1 {
			b.WriteString(sep)
		}
		b.WriteRune(c)
	}
	return b.String()
}

// unreached returns the guard's trace of up to n users who asked during
// the attack and were never reached: what each of their requests met.
func (r *srun) unreached(ctx context.Context, n int) []UnreachedUser {
	r.mu.Lock()
	var addrs []string
	for _, u := range r.users {
		if u.phase == phAttack && u.reached.IsZero() && len(addrs) < n {
			addrs = append(addrs, u.addr)
		}
	}
	r.mu.Unlock()
	var out []UnreachedUser
	for _, a := range addrs {
		tr, err := r.g.Trace(ctx, a)
		if err != nil {
			continue
		}
		uu := UnreachedUser{RcptHash: tr.RcptHash}
		for _, k := range tr.Kinds {
			if k.Kind != queue.KindPasswordReset {
				continue
			}
			var first time.Time
			for _, e := range k.Events {
				if first.IsZero() {
					first = e.Time
				}
				d := e.Stage + " " + e.Outcome
				if e.Reason != "" {
					d += ":" + e.Reason
				}
				uu.Decisions = append(uu.Decisions, fmt.Sprintf("+%.0fs %s", r.sim(e.Time.Sub(first)).Seconds(), d))
			}
		}
		out = append(out, uu)
	}
	return out
}

// release runs the operator's default release.
func (r *srun) release(ctx context.Context) error {
	st, err := r.g.Breaker(ctx, queue.KindPasswordReset)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.releaseAt = time.Now()
	r.heldAtRel = st.Held
	r.mu.Unlock()
	r.phase.Store(phRelease)
	res, err := r.g.Release(ctx, queue.KindPasswordReset, guard.ReleaseOptions{})
	r.mu.Lock()
	r.released = res
	r.mu.Unlock()
	return err
}
