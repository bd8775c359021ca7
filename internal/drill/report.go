package drill

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/adminapi"
	"github.com/floodgate-dev/floodgate/queue"
)

// Targets of the issue, reported by every drill.
const (
	TargetOpenWithin     = 5 * time.Second
	TargetLatencyFactor  = 2.0
	TargetMemoryGrowth   = 64 << 20
	TargetTotalDrillTime = 120 * time.Second
)

// Statuses of a [Target].
const (
	Pass = "PASS"
	Fail = "FAIL"
	NA   = "N/A"
)

// Report is the result of a drill. Its JSON form is what cmd/drill writes
// to -report.
type Report struct {
	// Mode is "embedded" or "deployment"; Stack says what ran.
	Mode  string       `json:"mode"`
	Stack string       `json:"stack"`
	Start time.Time    `json:"start"`
	Setup ReportConfig `json:"config"`
	// Phases are the measured phase lengths in seconds.
	Phases       map[string]float64 `json:"phases_seconds"`
	Attack       AttackReport       `json:"attack"`
	Legit        LegitReport        `json:"legit"`
	Breaker      BreakerReport      `json:"breaker"`
	Delivered    DeliveredReport    `json:"delivered"`
	Latency      LatencyReport      `json:"latency"`
	Redis        RedisReport        `json:"redis"`
	Conservation Conservation       `json:"conservation"`
	// Targets holds the targets and the drill's checks, each
	// PASS, FAIL or N/A.
	Targets      []Target `json:"targets"`
	TotalSeconds float64  `json:"total_seconds"`
	// Notes are remarks for the operator.
	Notes []string `json:"notes,omitempty"`
}

// ReportConfig records the drill's parameters.
type ReportConfig struct {
	Attack         int      `json:"attack"`
	Recipients     int      `json:"recipients"`
	Sources        int      `json:"sources"`
	AttackRate     float64  `json:"attack_rate"`
	Parallel       int      `json:"parallel"`
	AttackDomain   string   `json:"attack_domain"`
	NotifyRate     float64  `json:"notify_rate"`
	LegitResetRate float64  `json:"legit_reset_rate"`
	LegitDomains   []string `json:"legit_domains"`
	QuietSeconds   float64  `json:"quiet_seconds"`
	DrainSeconds   float64  `json:"drain_seconds"`
	Workers        int      `json:"workers,omitempty"`
	Concurrency    int      `json:"concurrency,omitempty"`
	Policy         string   `json:"policy"`
	CPUs           int      `json:"cpus"`
}

// AttackReport counts the attack's requests by receipt.
type AttackReport struct {
	Requested int64 `json:"requested"`
	Admitted  int64 `json:"admitted"`
	// Outcomes counts receipts by "outcome" or "outcome:reason".
	Outcomes map[string]int64 `json:"outcomes"`
	// Errors counts Enqueue errors by class (unavailable, invalid, ...).
	Errors     map[string]int64 `json:"errors,omitempty"`
	FirstError string           `json:"first_error,omitempty"`
	Seconds    float64          `json:"seconds"`
	// PerSecond is admission throughput: answered requests per second.
	PerSecond float64 `json:"admission_per_second"`
}

// LegitReport counts the legitimate traffic.
type LegitReport struct {
	Notifications StreamReport `json:"notifications"`
	Resets        StreamReport `json:"resets"`
}

// StreamReport counts one stream of legitimate requests.
type StreamReport struct {
	Requested int64            `json:"requested"`
	Outcomes  map[string]int64 `json:"outcomes"`
	Errors    map[string]int64 `json:"errors,omitempty"`
	Delivered int64            `json:"delivered"`
}

// BreakerReport is what the drill saw of the password_reset breaker.
type BreakerReport struct {
	Kind string `json:"kind"`
	// Available is false when the admin API has no breakers (404).
	Available bool   `json:"available"`
	Note      string `json:"note,omitempty"`
	// StateAtAttackStart is the state read last before the attack.
	StateAtAttackStart string `json:"state_at_attack_start,omitempty"`
	Opened             bool   `json:"opened"`
	// PolledOpenSeconds is from the attack's start to the first poll
	// (every 50 ms) that read it open.
	PolledOpenSeconds *float64 `json:"polled_open_seconds"`
	// OpenedAtSeconds is from the attack's start to the breaker's own
	// opened_at, when it reported one.
	OpenedAtSeconds *float64 `json:"opened_at_seconds"`
	// OpenSeconds is the time to open used for the target: OpenedAtSeconds
	// when it is consistent with the polls, else PolledOpenSeconds.
	OpenSeconds *float64          `json:"open_seconds"`
	AtOpen      *adminapi.Breaker `json:"at_open,omitempty"`
	Final       *adminapi.Breaker `json:"final,omitempty"`
	Transitions []Transition      `json:"transitions,omitempty"`
	Polls       int               `json:"polls"`
	LastError   string            `json:"last_error,omitempty"`
}

// Transition is a breaker state the drill's polls saw change.
type Transition struct {
	At time.Time `json:"at"`
	// Seconds is relative to the attack's start (negative before it).
	Seconds float64 `json:"seconds"`
	State   string  `json:"state"`
	Reason  string  `json:"reason,omitempty"`
}

// DeliveredReport counts what reached the sink during the drill.
type DeliveredReport struct {
	// SinkMessages are the messages the drill read at the sink;
	// SinkReceived is the sink's own counter over the drill.
	SinkMessages int64 `json:"sink_messages"`
	SinkReceived int64 `json:"sink_received"`
	// Attacked counts messages to the attack domain, over
	// AttackedRecipients distinct recipients, at most MaxPerRecipient each.
	Attacked           int64 `json:"attacked"`
	AttackedRecipients int   `json:"attacked_recipients"`
	MaxPerRecipient    int   `json:"max_per_recipient"`
	// Bound is what the policy allows to the attacked recipients.
	Bound              Bound `json:"bound"`
	LegitNotifications int64 `json:"legit_notifications"`
	LegitResets        int64 `json:"legit_resets"`
	// Foreign counts messages the drill did not send (deployment mode:
	// other traffic).
	Foreign             int64 `json:"foreign"`
	DuplicateMessageIDs int64 `json:"duplicate_message_ids"`
	// DKIMFailed counts messages with a DKIM result other than pass;
	// Unsigned those without a signature.
	DKIMFailed int64 `json:"dkim_failed"`
	Unsigned   int64 `json:"unsigned"`
}

// Bound is the most the policy lets through to the attacked recipients
// over the drill's window (attack plus drain): each cap's count times the
// number of its windows the drill spans.
type Bound struct {
	WindowSeconds float64 `json:"window_seconds"`
	// PerRecipient is the most one recipient may be admitted (dedup
	// window and per-recipient caps); Recipients that times the distinct
	// recipients attacked.
	PerRecipient int64 `json:"per_recipient"`
	Recipients   int64 `json:"recipients"`
	// Sources is the per-source caps times the distinct sources.
	Sources int64 `json:"sources"`
	// Admission is the least of the above and the requests.
	Admission int64 `json:"admission"`
	// DomainRate and GlobalRate are what the attack domain's send rate and
	// the global rate allow over the window.
	DomainRate int64 `json:"domain_rate"`
	GlobalRate int64 `json:"global_rate"`
	// Delivery is the least of Admission and the rates: the bound on
	// deliveries to attacked recipients.
	Delivery int64 `json:"delivery"`
}

// LatencyReport holds enqueue-to-sink latency per class and phase.
type LatencyReport struct {
	Notifications map[string]Latency `json:"notifications"`
	Resets        map[string]Latency `json:"resets"`
}

// Latency summarises enqueue-to-sink delivery latency of one class of
// legitimate email in one phase. An admitted email not delivered counts as
// infinitely late: a percentile it falls on is null.
type Latency struct {
	Admitted  int64    `json:"admitted"`
	Delivered int64    `json:"delivered"`
	P50Ms     *float64 `json:"p50_ms"`
	P99Ms     *float64 `json:"p99_ms"`
	MaxMs     *float64 `json:"max_ms"`
}

// RedisReport is Redis's INFO memory used_memory over the drill.
type RedisReport struct {
	Addr    string `json:"addr"`
	Version string `json:"version"`
	Before  int64  `json:"used_memory_before"`
	End     int64  `json:"used_memory_end"`
	Peak    int64  `json:"used_memory_peak_sampled"`
	Growth  int64  `json:"growth"`
	// AttackCPUSeconds is Redis's CPU time (user + system) during the
	// attack phase, and AttackCommands its busiest commands then: whether
	// Redis or the enqueuers bound admission throughput.
	AttackCPUSeconds float64       `json:"attack_cpu_seconds"`
	AttackCommands   []CommandLoad `json:"attack_commands,omitempty"`
}

// CommandLoad is one Redis command's share of the work (INFO
// commandstats).
type CommandLoad struct {
	Name          string  `json:"name"`
	Calls         int64   `json:"calls"`
	Seconds       float64 `json:"seconds"`
	MicrosPerCall float64 `json:"us_per_call"`
}

// Conservation checks that every request is accounted for: per kind,
// the guard's counts (deltas of /v1/stats over the drill) against the
// drill's receipts, the law requested = outcomes + in flight, in flight
// against the queue, and "sent" against the sink.
type Conservation struct {
	OK    bool                        `json:"ok"`
	Kinds map[string]KindConservation `json:"kinds"`
	// Sent is the guard's sent count over every kind; SinkMessages the
	// drill's messages at the sink.
	Sent         int64 `json:"sent"`
	SinkMessages int64 `json:"sink_messages"`
	// InFlight is the guard's in flight over every kind at the end, and
	// QueueOutstanding the tasks asynq holds (pending, active, scheduled,
	// retry); compared when the workers were stopped first.
	InFlight         int64    `json:"in_flight"`
	QueueOutstanding *int64   `json:"queue_outstanding"`
	Problems         []string `json:"problems,omitempty"`
	Remarks          []string `json:"remarks,omitempty"`
}

// KindConservation is one kind's accounting.
type KindConservation struct {
	// DrillRequested are the receipts the drill got, DrillErrors its
	// Enqueue errors (possibly decided but unanswered), DrillQueued the
	// admitted receipts.
	DrillRequested int64 `json:"drill_requested"`
	DrillErrors    int64 `json:"drill_errors"`
	DrillQueued    int64 `json:"drill_queued"`
	// The guard's counts over the drill.
	Requested int64                   `json:"requested"`
	Admitted  int64                   `json:"admitted"`
	Outcomes  map[queue.Outcome]int64 `json:"outcomes"`
	InFlight  int64                   `json:"in_flight"`
	// Accounted is the sum of Outcomes and InFlight; it must equal
	// Requested.
	Accounted int64 `json:"accounted"`
	// Deferred counts dispatch deferrals by reason and Retried temporary
	// send failures over the drill; neither is terminal.
	Deferred map[string]int64 `json:"deferred,omitempty"`
	Retried  int64            `json:"retried"`
}

// Target is one target of the issue or one check of the drill.
type Target struct {
	Name   string `json:"name"`
	Goal   string `json:"goal"`
	Value  string `json:"value"`
	Status string `json:"status"`
}

// Passed reports whether no target or check failed (N/A is not a
// failure).
func (r *Report) Passed() bool {
	for _, t := range r.Targets {
		if t.Status == Fail {
			return false
		}
	}
	return true
}

// computeBound returns the policy's bound on deliveries to the attacked
// recipients over window.
func computeBound(pol *guard.Policy, cfg *Config, window time.Duration) Bound {
	kp := pol.KindPolicies[queue.KindPasswordReset]
	windows := func(per time.Duration) int64 {
		if per <= 0 {
			return 1
		}
		return int64(math.Ceil(float64(window) / float64(per)))
	}
	reqs := int64(cfg.Attack)
	victims := min(reqs, int64(cfg.Recipients))
	sources := min(reqs, int64(cfg.Sources))
	b := Bound{WindowSeconds: window.Seconds()}
	b.PerRecipient = (reqs + int64(cfg.Recipients) - 1) / int64(cfg.Recipients)
	if kp.DedupWindow > 0 {
		b.PerRecipient = min(b.PerRecipient, windows(kp.DedupWindow))
	}
	for _, r := range kp.PerRecipient {
		b.PerRecipient = min(b.PerRecipient, int64(r.N)*windows(r.Per))
	}
	b.Recipients = victims * b.PerRecipient
	perSource := (reqs + int64(cfg.Sources) - 1) / int64(cfg.Sources)
	for _, r := range kp.PerSource {
		perSource = min(perSource, int64(r.N)*windows(r.Per))
	}
	b.Sources = sources * perSource
	b.Admission = min(reqs, b.Recipients, b.Sources)
	rate := func(l guard.Limit) int64 {
		if l.Rate.N <= 0 || l.Rate.Per <= 0 {
			return math.MaxInt64
		}
		return int64(l.EffectiveBurst()) + int64(math.Ceil(float64(l.Rate.N)*float64(window)/float64(l.Rate.Per)))
	}
	b.DomainRate = rate(pol.DomainLimit(strings.ToLower(cfg.AttackDomain)))
	b.GlobalRate = rate(pol.Global)
	b.Delivery = min(b.Admission, b.DomainRate, b.GlobalRate)
	return b
}

// latencyOf summarises latencies (sorted in place) of admitted emails.
func latencyOf(admitted int64, lat []time.Duration) Latency {
	slices.Sort(lat)
	l := Latency{Admitted: admitted, Delivered: int64(len(lat))}
	pick := func(q float64) *float64 {
		if admitted == 0 {
			return nil
		}
		rank := int64(math.Ceil(q * float64(admitted)))
		rank = max(rank, 1)
		if rank > int64(len(lat)) {
			return nil // falls on an email never delivered
		}
		return msp(lat[rank-1])
	}
	l.P50Ms, l.P99Ms = pick(0.50), pick(0.99)
	if len(lat) > 0 && int64(len(lat)) == admitted {
		l.MaxMs = msp(lat[len(lat)-1])
	}
	return l
}

func msp(d time.Duration) *float64 {
	v := math.Round(float64(d)/float64(time.Microsecond)) / 1000
	return &v
}

func secp(d time.Duration) *float64 {
	v := math.Round(d.Seconds()*1000) / 1000
	return &v
}

// fmtMs formats a latency in ms, or "never" for nil.
func fmtMs(p *float64) string {
	if p == nil {
		return "undelivered"
	}
	return fmt.Sprintf("%.0f ms", *p)
}

func fmtSec(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f s", *p)
}

// mib formats bytes as MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func formatCounts(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := sortedKeys(m)
	slices.SortStableFunc(keys, func(a, b string) int { return int(m[b] - m[a]) })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// WriteTable prints the report for a terminal.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }
	c := r.Setup
	p("floodgate flood drill (%s)", r.Mode)
	p("  stack\t%s", r.Stack)
	rate := "as fast as the machine takes them"
	if c.AttackRate > 0 {
		rate = fmt.Sprintf("at %.0f/s", c.AttackRate)
	}
	p("  attack\t%d password_reset requests over %d recipients @%s from %d sources, %s, %d enqueuers", c.Attack, c.Recipients, c.AttackDomain, c.Sources, rate, c.Parallel)
	p("  legitimate\t%.4g notifications/s and %.4g resets/s to %s, throughout", c.NotifyRate, c.LegitResetRate, strings.Join(c.LegitDomains, ", "))
	p("  phases\tsetup %.1f s, quiet %.1f s, attack %.1f s, drain %.1f s; total %.1f s on %d CPUs; policy %s",
		r.Phases["setup"], r.Phases["quiet"], r.Phases["attack"], r.Phases["drain"], r.TotalSeconds, c.CPUs, c.Policy)
	p("")
	p("admission (receipts)")
	p("  attack\t%d answered in %.1f s: %.0f requests/s", r.Attack.Requested, r.Attack.Seconds, r.Attack.PerSecond)
	p("  attack outcomes\t%s", formatCounts(r.Attack.Outcomes))
	if len(r.Attack.Errors) > 0 {
		p("  attack errors\t%s (first: %s)", formatCounts(r.Attack.Errors), r.Attack.FirstError)
	}
	p("  notifications\t%d: %s", r.Legit.Notifications.Requested, formatCounts(r.Legit.Notifications.Outcomes))
	p("  legit resets\t%d: %s", r.Legit.Resets.Requested, formatCounts(r.Legit.Resets.Outcomes))
	p("")
	b := r.Breaker
	p("breaker (%s)", b.Kind)
	if !b.Available {
		p("  breaker\tnot available (%s)", b.Note)
	} else {
		p("  at attack start\t%s", b.StateAtAttackStart)
		if b.Opened {
			p("  opened after\t%s (first poll reading open %s, opened_at %s)", fmtSec(b.OpenSeconds), fmtSec(b.PolledOpenSeconds), fmtSec(b.OpenedAtSeconds))
			if b.AtOpen != nil {
				p("  when it opened\treason %s, mode %s, rate %.3g/s, baseline %.3g/s, threshold %.3g/s", b.AtOpen.Reason, b.AtOpen.Mode,
					b.AtOpen.Rate, b.AtOpen.Baseline, b.AtOpen.Threshold)
			}
		} else {
			p("  opened\tnever during the drill")
		}
		if b.Final != nil {
			p("  at the end\t%s (reason %s), held %d, rate %.4g/s, baseline %.3g/s", b.Final.State, b.Final.Reason, b.Final.Held, b.Final.Rate, b.Final.Baseline)
		}
		var ts []string
		for _, t := range b.Transitions {
			s := fmt.Sprintf("%+.2fs %s", t.Seconds, t.State)
			if t.Reason != "" {
				s += "(" + t.Reason + ")"
			}
			ts = append(ts, s)
		}
		p("  transitions\t%s", strings.Join(ts, ", "))
	}
	p("")
	d := r.Delivered
	p("delivered (counted at the sink)")
	p("  to attacked recipients\t%d to %d recipients, at most %d each", d.Attacked, d.AttackedRecipients, d.MaxPerRecipient)
	p("  policy bound\t%d over %.0f s (admission %d: per recipient %d x %d recipients = %d, per source %d; domain rate %d; global rate %d)",
		d.Bound.Delivery, d.Bound.WindowSeconds, d.Bound.Admission, d.Bound.PerRecipient, min(int64(c.Recipients), int64(c.Attack)),
		d.Bound.Recipients, d.Bound.Sources, d.Bound.DomainRate, d.Bound.GlobalRate)
	p("  legitimate\t%d notifications, %d resets", d.LegitNotifications, d.LegitResets)
	p("  sink\t%d messages read, sink counter %d, %d foreign, %d duplicate Message-IDs, DKIM: %d failed, %d unsigned",
		d.SinkMessages, d.SinkReceived, d.Foreign, d.DuplicateMessageIDs, d.DKIMFailed, d.Unsigned)
	p("")
	p("latency enqueue -> sink\tadmitted\tdelivered\tp50\tp99\tmax")
	for _, cl := range []struct {
		name string
		m    map[string]Latency
	}{{"notifications", r.Latency.Notifications}, {"legit resets", r.Latency.Resets}} {
		for _, ph := range phaseNames {
			l, ok := cl.m[ph]
			if !ok {
				continue
			}
			if l.Admitted == 0 {
				p("  %s, %s\t0\t0\t-\t-\t-", cl.name, ph)
				continue
			}
			p("  %s, %s\t%d\t%d\t%s\t%s\t%s", cl.name, ph, l.Admitted, l.Delivered, fmtMs(l.P50Ms), fmtMs(l.P99Ms), fmtMs(l.MaxMs))
		}
	}
	p("")
	p("redis used_memory\tbefore %s, end %s (%+.1f MiB), sampled peak %s", mib(r.Redis.Before), mib(r.Redis.End), float64(r.Redis.Growth)/(1<<20), mib(r.Redis.Peak))
	if r.Attack.Seconds > 0 && r.Redis.AttackCPUSeconds > 0 {
		var cmds []string
		for _, c := range r.Redis.AttackCommands {
			cmds = append(cmds, fmt.Sprintf("%s %d calls %.1f s (%.1f us/call)", c.Name, c.Calls, c.Seconds, c.MicrosPerCall))
		}
		p("redis during the attack\tCPU %.1f s of %.1f s (%.0f%% of one core); %s", r.Redis.AttackCPUSeconds, r.Attack.Seconds,
			100*r.Redis.AttackCPUSeconds/r.Attack.Seconds, strings.Join(cmds, ", "))
	}
	p("")
	cons := r.Conservation
	p("conservation (guard /v1/stats over the drill)\trequested\tdrill\tadmitted\toutcomes+in flight\tin flight\toutcomes")
	for _, k := range sortedKeys(cons.Kinds) {
		kc := cons.Kinds[k]
		oc := map[string]int64{}
		for o, n := range kc.Outcomes {
			if n != 0 {
				oc[string(o)] = n
			}
		}
		p("  %s\t%d\t%d\t%d\t%d\t%d\t%s", k, kc.Requested, kc.DrillRequested, kc.Admitted, kc.Accounted, kc.InFlight, formatCounts(oc))
	}
	for _, k := range sortedKeys(cons.Kinds) {
		if kc := cons.Kinds[k]; len(kc.Deferred) > 0 || kc.Retried > 0 {
			p("  %s, not terminal\tdeferred: %s; retried %d", k, formatCounts(kc.Deferred), kc.Retried)
		}
	}
	out := "-"
	if cons.QueueOutstanding != nil {
		out = fmt.Sprint(*cons.QueueOutstanding)
	}
	p("  sent vs sink\t%d sent, %d drill messages at the sink; in flight %d, queue outstanding %s", cons.Sent, cons.SinkMessages, cons.InFlight, out)
	for _, pr := range cons.Problems {
		p("  PROBLEM\t%s", pr)
	}
	for _, rm := range cons.Remarks {
		p("  note\t%s", rm)
	}
	p("")
	p("targets and checks\tgoal\tvalue\tstatus")
	for _, t := range r.Targets {
		p("  %s\t%s\t%s\t%s", t.Name, t.Goal, t.Value, t.Status)
	}
	for _, n := range r.Notes {
		p("")
		p("note: %s", n)
	}
	return tw.Flush()
}
