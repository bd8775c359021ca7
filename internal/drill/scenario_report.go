package drill

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/queue"
)

// frogReferencePerDay is what the breaker of a learned baseline without
// bounds delivered to the boiling frog, extrapolated to a day (+5.7% a
// window to the global cap in under two hours): the reference of the frog
// scenario's target.
const frogReferencePerDay = 16_000_000

// ScenarioReport is what one scenario measured. Times are simulated
// (the policy's time), unless named real.
type ScenarioReport struct {
	Scenario string `json:"scenario"`
	About    string `json:"about"`
	Quick    bool   `json:"quick"`
	// Speed is simulated seconds per real second: every duration of the
	// policy was divided by it, and the drill's own (users' delays,
	// phases) too.
	Speed float64 `json:"speed"`
	Time  string  `json:"time"`
	// Phases are the simulated minutes of each phase.
	Phases      map[string]float64 `json:"simulated_minutes"`
	RealSeconds float64            `json:"real_seconds"`
	// Users are the legitimate users by the phase they first asked in.
	Users      map[string]UserStats             `json:"users"`
	Attack     ScenarioAttack                   `json:"attack"`
	Background map[string]map[string]SimLatency `json:"background,omitempty"`
	Breaker    []SimTransition                  `json:"breaker_transitions"`
	// OpenedAfterMinutes is when the breaker first opened, in simulated
	// minutes after the attack began; nil when it never did.
	OpenedAfterMinutes *float64         `json:"opened_after_minutes"`
	Release            *ScenarioRelease `json:"release,omitempty"`
	// Unreached are the guard's traces of a few users who asked during the
	// attack and got nothing, to tell why.
	Unreached []UnreachedUser `json:"unreached,omitempty"`
	Redis     RedisReport     `json:"redis"`
	Targets   []Target        `json:"targets"`
	Notes     []string        `json:"notes,omitempty"`
	OK        bool            `json:"ok"`
}

// UserStats summarises legitimate users: reached is the first reset in
// their inbox; time to inbox runs from their first request.
type UserStats struct {
	Users          int            `json:"users"`
	Trusted        int            `json:"trusted_device"`
	Reached        int            `json:"reached"`
	ReachedIn5m    int            `json:"reached_within_5m"`
	ReachedIn5mPct float64        `json:"reached_within_5m_pct"`
	P50Seconds     *float64       `json:"time_to_inbox_p50_s"`
	P99Seconds     *float64       `json:"time_to_inbox_p99_s"`
	Requests       int            `json:"requests"`
	Confirmed      int            `json:"confirmed"`
	Outcomes       map[string]int `json:"outcomes"`
}

// ScenarioAttack is what the attack asked for and what reached victims.
type ScenarioAttack struct {
	Requested int64                       `json:"requested"`
	Outcomes  map[string]int64            `json:"outcomes"`
	Roles     map[string]map[string]int64 `json:"by_role,omitempty"`
	Sources   int                         `json:"sources"`
	Victims   int                         `json:"victims"`
	// Delivered counts emails at the sink to victims, by when they
	// arrived.
	Delivered        int64            `json:"delivered"`
	DeliveredByPhase map[string]int64 `json:"delivered_by_phase"`
	VictimsReached   int              `json:"victims_reached"`
	MaxPerVictim     int              `json:"max_per_victim"`
	// Bound is the policy's bound on deliveries to the victims for these
	// requests over the run (per-recipient, per-source, domain and global
	// caps), as in the flood drill.
	Bound Bound `json:"bound"`
}

// UnreachedUser is one unreached user's decisions, from [guard.Guard.Trace]
// (simulated seconds after the first), named by recipient hash.
type UnreachedUser struct {
	RcptHash  string   `json:"rcpt_hash"`
	Decisions []string `json:"decisions"`
}

// SimLatency is the time to inbox of background emails, simulated.
type SimLatency struct {
	Sent       int      `json:"sent"`
	Delivered  int      `json:"delivered"`
	P50Seconds *float64 `json:"p50_s"`
	P99Seconds *float64 `json:"p99_s"`
}

// SimTransition is a breaker state change, at a simulated time since the
// history began.
type SimTransition struct {
	AtSeconds float64 `json:"at_simulated_s"`
	State     string  `json:"state"`
	Reason    string  `json:"reason,omitempty"`
}

// ScenarioRelease is what a default release did.
type ScenarioRelease struct {
	Held     int64          `json:"held_at_release"`
	Released int            `json:"released"`
	Lanes    map[string]int `json:"lanes"`
	Kept     int            `json:"kept"`
	Refused  map[string]int `json:"refused,omitempty"`
	// LegitWaiting are users not reached when the release began whose
	// requests were still within the kind's TTL; LegitReached those of
	// them reached after it.
	LegitWaiting int `json:"legit_waiting"`
	LegitReached int `json:"legit_reached_after"`
	// AttackHeld is the held emails that were not legitimate users';
	// AttackDelivered the victims' deliveries after the release began.
	AttackHeld      int64   `json:"attack_held"`
	AttackDelivered int64   `json:"attack_delivered_after"`
	AttackShare     float64 `json:"attack_delivered_share"`
}

func (r *srun) report(began time.Time) *ScenarioReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	sp := r.spec
	rep := &ScenarioReport{Scenario: r.name, Quick: r.quick, About: sp.doc, Speed: r.speed,
		Time: fmt.Sprintf("compressed %g×: every duration of the policy divided by %g (windows of the recipient logs kept ≥ 1 s), warm-up %s",
			r.speed, r.speed, warmupNote(sp)),
		Phases:      map[string]float64{"history": sp.history.Minutes(), "attack": sp.attack.Minutes(), "after": sp.after.Minutes()},
		RealSeconds: round3(time.Since(began).Seconds()), Users: map[string]UserStats{}}
	// Users.
	byPhase := map[int][]*user{}
	for _, u := range r.users {
		byPhase[u.phase] = append(byPhase[u.phase], u)
	}
	for ph, us := range byPhase {
		s := UserStats{Users: len(us), Outcomes: map[string]int{}}
		var lat []time.Duration
		for _, u := range us {
			s.Requests += u.requests
			if u.trust != queue.TrustNone {
				s.Trusted++
			}
			if u.confirmed {
				s.Confirmed++
			}
			for k, n := range u.outcomes {
				s.Outcomes[k] += n
			}
			if u.reached.IsZero() {
				continue
			}
			s.Reached++
			d := r.sim(u.reached.Sub(u.first))
			lat = append(lat, d)
			if d <= userReachedWithin {
				s.ReachedIn5m++
			}
		}
		s.ReachedIn5mPct = pct(s.ReachedIn5m, s.Users)
		s.P50Seconds, s.P99Seconds = quantile(lat, len(us), 0.5), quantile(lat, len(us), 0.99)
		rep.Users[scenarioPhaseNames[ph]] = s
	}
	// Attack.
	a := ScenarioAttack{Outcomes: map[string]int64{}, Roles: map[string]map[string]int64{}, DeliveredByPhase: map[string]int64{},
		Sources: len(r.atkSources), Victims: len(r.asked), VictimsReached: len(r.victims)}
	r.atk.mu.Lock()
	a.Requested = r.atk.requested
	maps.Copy(a.Outcomes, r.atk.outcomes)
	for k, n := range r.atk.errors {
		a.Outcomes["error:"+k] += n
	}
	r.atk.mu.Unlock()
	for role, t := range r.atkReq {
		t.mu.Lock()
		a.Roles[role] = maps.Clone(t.outcomes)
		t.mu.Unlock()
	}
	for ph, n := range r.delivered {
		if n > 0 {
			a.DeliveredByPhase[scenarioPhaseNames[ph]] = n
		}
		a.Delivered += n
	}
	for _, n := range r.victims {
		a.MaxPerVictim = max(a.MaxPerVictim, n)
	}
	if a.Requested > 0 {
		cfg := Config{Attack: int(a.Requested), Recipients: max(a.Victims, 1), Sources: max(a.Sources, 1), AttackDomain: DefaultAttackDomain}
		a.Bound = computeBound(r.policy, &cfg, sp.attack+sp.after)
	}
	rep.Attack = a
	// Background.
	if len(r.bg) > 0 {
		rep.Background = map[string]map[string]SimLatency{}
		lat := map[string]map[int][]time.Duration{}
		sent := map[string]map[int]int{}
		for _, b := range r.bg {
			if lat[b.kind] == nil {
				lat[b.kind], sent[b.kind] = map[int][]time.Duration{}, map[int]int{}
			}
			sent[b.kind][b.phase]++
			if b.done {
				lat[b.kind][b.phase] = append(lat[b.kind][b.phase], r.sim(b.lat))
			}
		}
		for kind, byPh := range sent {
			rep.Background[kind] = map[string]SimLatency{}
			for ph, n := range byPh {
				l := lat[kind][ph]
				rep.Background[kind][scenarioPhaseNames[ph]] = SimLatency{Sent: n, Delivered: len(l), P50Seconds: quantile(l, n, 0.5), P99Seconds: quantile(l, n, 0.99)}
			}
		}
	}
	rep.Breaker = slices.Clone(r.breaker)
	if !r.firstOpen.IsZero() {
		m := round3(r.sim(r.firstOpen.Sub(r.attackStart)).Minutes())
		rep.OpenedAfterMinutes = &m
	}
	if sp.release {
		rel := &ScenarioRelease{Held: r.heldAtRel, Released: r.released.Released, Lanes: r.released.Lanes, Kept: r.released.Kept,
			Refused: r.released.Refused, AttackDelivered: r.delivered[phRelease]}
		ttl := r.policy.KindPolicies[queue.KindPasswordReset].TTL
		legitHeld := int64(0)
		for _, u := range r.users {
			if u.first.After(r.releaseAt) || (!u.reached.IsZero() && u.reached.Before(r.releaseAt)) {
				continue
			}
			if r.sim(r.releaseAt.Sub(u.first)) > ttl {
				continue
			}
			rel.LegitWaiting++
			legitHeld++
			if !u.reached.IsZero() {
				rel.LegitReached++
			}
		}
		rel.AttackHeld = max(r.heldAtRel-legitHeld, 0)
		if rel.AttackHeld > 0 {
			rel.AttackShare = float64(rel.AttackDelivered) / float64(rel.AttackHeld)
		}
		rep.Release = rel
	}
	return rep
}

func warmupNote(sp spec) string {
	if sp.coldstart {
		return "the policy's own (a fresh deployment)"
	}
	return fmt.Sprintf("set to the history (%s) so that the attack meets a breaker that has learned", sp.history)
}

func pct(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return math.Round(float64(n)*1000/float64(of)) / 10
}

// quantile returns the q-quantile in seconds of lat among of requests
// (the undelivered count as later than any), nil when it falls on one
// undelivered.
func quantile(lat []time.Duration, of int, q float64) *float64 {
	if of == 0 {
		return nil
	}
	slices.Sort(lat)
	rank := max(int(math.Ceil(q*float64(of))), 1)
	if rank > len(lat) {
		return nil
	}
	s := round3(lat[rank-1].Seconds())
	return &s
}

// Scenario targets.
const (
	targetReachedPct  = 95.0
	targetP99         = 3 * time.Minute
	targetColdstart   = 99.0
	targetReleaseLeak = 0.01
)

func (rep *ScenarioReport) add(name, goal, value string, ok bool) {
	st := Fail
	if ok {
		st = Pass
	}
	rep.Targets = append(rep.Targets, Target{Name: name, Goal: goal, Value: value, Status: st})
}

func (rep *ScenarioReport) addNA(name, goal, value string) {
	rep.Targets = append(rep.Targets, Target{Name: name, Goal: goal, Value: value, Status: NA})
}

// usersTarget: users who asked during the attack reached within five
// minutes, at least min percent.
func usersTarget(rep *ScenarioReport, min float64) {
	u, ok := rep.Users["attack"]
	if !ok || u.Users == 0 {
		rep.addNA("legitimate users reached", fmt.Sprintf(">= %g%% within 5m", min), "no users during the attack")
		return
	}
	rep.add("legitimate users reached", fmt.Sprintf(">= %g%% within 5m", min),
		fmt.Sprintf("%.1f%% (%d of %d; %d reached in all)", u.ReachedIn5mPct, u.ReachedIn5m, u.Users, u.Reached), u.ReachedIn5mPct >= min)
}

func victimsTarget(rep *ScenarioReport) {
	a := rep.Attack
	rep.add("victims' deliveries", "<= policy bound", fmt.Sprintf("%d <= %d", a.Delivered, a.Bound.Delivery), a.Delivered <= a.Bound.Delivery)
}

func p99Target(rep *ScenarioReport, goal time.Duration) {
	u := rep.Users["attack"]
	v := "undelivered"
	if u.P99Seconds != nil {
		v = fmtSimSec(*u.P99Seconds)
	}
	rep.add("time to inbox p99", "<= "+goal.String(), v, u.P99Seconds != nil && *u.P99Seconds <= goal.Seconds())
}

func floodTargets(r *srun, rep *ScenarioReport) {
	rep.add("breaker opens", "during the attack", openedValue(rep), rep.OpenedAfterMinutes != nil)
	usersTarget(rep, targetReachedPct)
	p99Target(rep, targetP99)
	victimsTarget(rep)
}

func releaseTargets(r *srun, rep *ScenarioReport) {
	floodTargets(r, rep)
	rel := rep.Release
	if rel.LegitWaiting == 0 {
		rep.addNA("release reaches waiting users", "100%", "no user was waiting")
	} else {
		rep.add("release reaches waiting users", "100%", fmt.Sprintf("%d of %d", rel.LegitReached, rel.LegitWaiting), rel.LegitReached == rel.LegitWaiting)
	}
	rep.add("release leaks to victims", fmt.Sprintf("<= %g%% of held attack", targetReleaseLeak*100),
		fmt.Sprintf("%d of %d (%.2f%%)", rel.AttackDelivered, rel.AttackHeld, rel.AttackShare*100), rel.AttackShare <= targetReleaseLeak)
	for _, kind := range []string{queue.KindVerifyEmail, queue.KindNotification} {
		q, d := rep.Background[kind]["history"], rep.Background[kind]["release"]
		name := kind + " p99 during release"
		switch {
		case q.P99Seconds == nil || d.Sent == 0:
			rep.addNA(name, "<= 2x quiet", "not measured")
		case d.P99Seconds == nil:
			rep.add(name, "<= 2x quiet", fmt.Sprintf("undelivered (%d of %d)", d.Sent-d.Delivered, d.Sent), false)
		default:
			rep.add(name, "<= 2x quiet", fmt.Sprintf("%s vs %s", fmtSimSec(*d.P99Seconds), fmtSimSec(*q.P99Seconds)),
				*d.P99Seconds <= 2*max(*q.P99Seconds, r.sim(time.Millisecond).Seconds()))
		}
	}
}

func frogTargets(r *srun, rep *ScenarioReport) {
	ref := int64(frogReferencePerDay * r.spec.attack.Hours() / 24)
	a := rep.Attack
	rep.add("frog delivered", fmt.Sprintf("<= 1%% of the unbounded baseline's %d", ref), fmt.Sprintf("%d", a.Delivered), a.Delivered*100 <= ref)
	kp := r.policy.KindPolicies[queue.KindPasswordReset]
	budget := dailyBudget(r, kp)
	rep.add("frog within the daily budget", fmt.Sprintf("<= %d new recipients a day", budget), fmt.Sprintf("%d over %s", a.Delivered, r.spec.attack),
		float64(a.Delivered) <= float64(budget)*math.Max(r.spec.attack.Hours()/24, 1))
	usersTarget(rep, targetReachedPct)
}

// dailyBudget is the reset kind's new-recipient budget for the baseline
// the breaker learned.
func dailyBudget(r *srun, kp guard.KindPolicy) int64 {
	c := kp.Breaker.Ceilings
	if c.NewRecipients.N > 0 {
		return int64(float64(c.NewRecipients.N) * float64(24*time.Hour) / float64(c.NewRecipients.Per))
	}
	perMin := r.spec.users
	return int64(max(float64(c.NewRecipientsMin.N)*float64(24*time.Hour)/float64(c.NewRecipientsMin.Per), c.NewRecipientsFactor*perMin*24*60))
}

func floorTargets(r *srun, rep *ScenarioReport) {
	rep.add("stopped", "breaker opens within 1h of the attack", openedValue(rep), rep.OpenedAfterMinutes != nil && *rep.OpenedAfterMinutes <= 60)
	victimsTarget(rep)
	usersTarget(rep, targetReachedPct)
}

func dosTargets(r *srun, rep *ScenarioReport) {
	changed := 0
	for _, t := range rep.Breaker {
		if t.AtSeconds >= r.spec.history.Seconds() && t.State != "closed" {
			changed++
		}
	}
	rep.add("breaker unchanged", "no transition", fmt.Sprintf("%d transitions during and after the attack", changed), changed == 0)
	usersTarget(rep, 100)
	h, u := rep.Users["history"], rep.Users["attack"]
	if h.P99Seconds == nil || u.P99Seconds == nil {
		rep.add("time to inbox p99", "<= 2x quiet", "undelivered", false)
	} else {
		rep.add("time to inbox p99", "<= 2x quiet", fmt.Sprintf("%s vs %s", fmtSimSec(*u.P99Seconds), fmtSimSec(*h.P99Seconds)),
			*u.P99Seconds <= 2*max(*h.P99Seconds, r.sim(10*time.Millisecond).Seconds()))
	}
}

func coldstartTargets(r *srun, rep *ScenarioReport) {
	u := rep.Users["attack"]
	rep.add("organic resets delivered", fmt.Sprintf(">= %g%%", targetColdstart), fmt.Sprintf("%.1f%% (%d of %d)", pct(u.Reached, u.Users), u.Reached, u.Users),
		pct(u.Reached, u.Users) >= targetColdstart)
	rep.add("breaker stays closed", "never opens", openedValue(rep), rep.OpenedAfterMinutes == nil)
}

func holdfillTargets(r *srun, rep *ScenarioReport) {
	kp := r.policy.KindPolicies[queue.KindPasswordReset]
	w := r.spec.attack + r.spec.after
	limit := int64(math.MaxInt64)
	for _, rt := range kp.PerSource {
		limit = min(limit, int64(rt.N)*int64(math.Ceil(float64(w)/float64(rt.Per))))
	}
	var took, asked int64
	for k, n := range rep.Attack.Roles["one-source"] {
		asked += n
		if o, _, _ := strings.Cut(k, ":"); o != string(queue.Capped) && o != string(queue.Duplicate) {
			took += n
		}
	}
	rep.add("one source's share of the hold", fmt.Sprintf("<= its cap %d", limit), fmt.Sprintf("%d of %d requests took a slot", took, asked), took <= limit)
	victimsTarget(rep)
	usersTarget(rep, targetReachedPct)
}

func variantsTargets(r *srun, rep *ScenarioReport) {
	kp := r.policy.KindPolicies[queue.KindPasswordReset]
	w := r.spec.attack + r.spec.after
	limit := int64(math.MaxInt64)
	for _, rt := range kp.PerRecipient {
		limit = min(limit, int64(rt.N)*int64(math.Ceil(float64(w)/float64(rt.Per))))
	}
	rep.add("emails per person", fmt.Sprintf("<= per-recipient cap %d", limit),
		fmt.Sprintf("max %d (%d emails to %d people from %d variants)", rep.Attack.MaxPerVictim, rep.Attack.Delivered, rep.Attack.VictimsReached, 40*128),
		int64(rep.Attack.MaxPerVictim) <= limit)
	usersTarget(rep, targetReachedPct)
}

func openedValue(rep *ScenarioReport) string {
	if rep.OpenedAfterMinutes == nil {
		return "never opened"
	}
	reason := ""
	for _, t := range rep.Breaker {
		if t.State == "open" {
			reason = " (" + t.Reason + ")"
			break
		}
	}
	return fmt.Sprintf("after %.1f min%s", *rep.OpenedAfterMinutes, reason)
}

func fmtSimSec(s float64) string { return fmt.Sprintf("%.1f s", s) }

// WriteText writes the report as a table.
func (rep *ScenarioReport) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario %s: %s\n", rep.Scenario, rep.About)
	fmt.Fprintf(tw, "time\t%s; %g simulated min in %.1f real s\n", rep.Time, rep.Phases["history"]+rep.Phases["attack"]+rep.Phases["after"], rep.RealSeconds)
	for _, ph := range scenarioPhaseNames {
		u, ok := rep.Users[ph]
		if !ok {
			continue
		}
		fmt.Fprintf(tw, "users asking in %s\t%d (%d trusted device): %d reached, %.1f%% within 5m, inbox p50 %s p99 %s, %d requests, %d confirmed\n",
			ph, u.Users, u.Trusted, u.Reached, u.ReachedIn5mPct, optSec(u.P50Seconds), optSec(u.P99Seconds), u.Requests, u.Confirmed)
	}
	a := rep.Attack
	if a.Requested > 0 {
		fmt.Fprintf(tw, "attack\t%d requests to %d victims from %d sources; %d delivered to %d victims (max %d each; bound %d)\n",
			a.Requested, a.Victims, a.Sources, a.Delivered, a.VictimsReached, a.MaxPerVictim, a.Bound.Delivery)
		fmt.Fprintf(tw, "attack outcomes\t%s\n", fmtCounts(a.Outcomes))
	}
	var tr []string
	for _, t := range rep.Breaker {
		s := fmt.Sprintf("%.0fs %s", t.AtSeconds, t.State)
		if t.Reason != "" {
			s += "(" + t.Reason + ")"
		}
		tr = append(tr, s)
	}
	fmt.Fprintf(tw, "breaker\t%s\n", strings.Join(tr, " → "))
	if rel := rep.Release; rel != nil {
		fmt.Fprintf(tw, "release\t%d held, %d released %v, %d kept; %d of %d waiting users reached; %d of %d held attack emails delivered\n",
			rel.Held, rel.Released, rel.Lanes, rel.Kept, rel.LegitReached, rel.LegitWaiting, rel.AttackDelivered, rel.AttackHeld)
	}
	fmt.Fprintf(tw, "redis memory\tpeak %s, growth %+.1f MiB\n", mib(rep.Redis.Peak), float64(rep.Redis.Growth)/(1<<20))
	for _, t := range rep.Targets {
		fmt.Fprintf(tw, "%s\t%s: %s (goal %s)\n", t.Status, t.Name, t.Value, t.Goal)
	}
	for _, u := range rep.Unreached {
		fmt.Fprintf(tw, "unreached user %s\t%s\n", u.RcptHash, strings.Join(u.Decisions, ", "))
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(tw, "note\t%s\n", n)
	}
	return tw.Flush()
}

func optSec(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmtSimSec(*p)
}

func fmtCounts(m map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
