package guard

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/queue"
)

// Stats are the guard's decision counts, aggregated in Redis over every
// process that shares it.
type Stats struct {
	// Kinds holds the counts per kind; every kind of the policy is present.
	Kinds map[string]*KindStats `json:"kinds"`
	// Bounces holds the bounce and complaint counts and rates.
	Bounces BounceStats `json:"bounces"`
}

// KindStats are the counts of one kind. They satisfy the conservation law
//
//	Requested == sum(Outcomes) + InFlight
//
// where Outcomes holds terminal outcomes only, each request counted once:
// the refusals at admission, and sent, failed, expired, held and shed after
// it. A task redelivered after it was settled is counted in Redelivered,
// not again in Outcomes.
type KindStats struct {
	// Requested counts admission decisions.
	Requested int64 `json:"requested"`
	// Admitted counts emails queued by admission.
	Admitted int64 `json:"admitted"`
	// Outcomes counts terminal outcomes.
	Outcomes map[queue.Outcome]int64 `json:"outcomes"`
	// Reasons refines Outcomes, e.g. Reasons["capped"]["recipient"].
	Reasons map[queue.Outcome]map[string]int64 `json:"reasons"`
	// InFlight is Admitted minus the terminal outcomes after admission:
	// queued, being sent, waiting for a retry, or lost without a result.
	InFlight int64 `json:"in_flight"`
	// Deferred counts dispatch deferrals by reason (global, domain,
	// claimed); not terminal.
	Deferred map[string]int64 `json:"deferred"`
	// Retried counts temporary send failures; not terminal.
	Retried int64 `json:"retried"`
	// Ambiguous counts attempts whose result was ambiguous (the connection
	// was lost after the final dot: the relay may have accepted the
	// message), retried or, past the worker's bound, failed.
	Ambiguous int64 `json:"ambiguous"`
	// Redelivered counts dispatches of emails already sent.
	Redelivered int64 `json:"redelivered"`
	// Lanes counts the emails admitted through each lane of an open
	// breaker (LaneTrusted, LaneRerequest, LaneRedeemed); they are also
	// in Admitted.
	Lanes map[string]int64 `json:"lanes"`
	// TracesSkipped counts refusals about recipients with no history left
	// out of their trace once the kind's per-minute bound of new traces
	// was reached (Config.TraceNewPerMinute).
	TracesSkipped int64 `json:"traces_skipped,omitempty"`
	// Confirmed and Reported count feedback on sent emails ([Guard.Confirm],
	// [Guard.Report]).
	Confirmed int64 `json:"confirmed"`
	Reported  int64 `json:"reported"`
}

func newKindStats() *KindStats {
	return &KindStats{Outcomes: map[queue.Outcome]int64{}, Reasons: map[queue.Outcome]map[string]int64{}, Deferred: map[string]int64{},
		Lanes: map[string]int64{}}
}

// Stats returns the decision counts of every kind: the stats hash and the
// admitted counters, read in two round trips.
func (g *Guard) Stats(ctx context.Context) (Stats, error) {
	var hall *redis.MapStringStringCmd
	var kinds *redis.StringSliceCmd
	_, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		hall = p.HGetAll(ctx, rkeys.Stats)
		kinds = p.SMembers(ctx, rkeys.Kinds)
		return nil
	})
	if err != nil {
		return Stats{}, opError(ctx, "stats", err)
	}
	all := hall.Val()
	st := Stats{Kinds: map[string]*KindStats{}}
	for _, k := range g.kindNames() {
		st.Kinds[k] = newKindStats()
	}
	if names := kinds.Val(); len(names) > 0 {
		keys := make([]string, len(names))
		for i, k := range names {
			keys[i] = rkeys.Admitted(k)
		}
		vals, err := g.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return Stats{}, opError(ctx, "stats", err)
		}
		for i, v := range vals {
			if s, ok := v.(string); ok {
				all[names[i]+"|a:queued"] = s
			}
		}
	}
	for field, v := range all {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		kind, rest, ok := strings.Cut(field, "|")
		if !ok {
			continue
		}
		ks := st.Kinds[kind]
		if ks == nil {
			ks = newKindStats()
			st.Kinds[kind] = ks
		}
		stage, rest, _ := strings.Cut(rest, ":")
		outcome, reason, _ := strings.Cut(rest, ":")
		ks.add(stage, outcome, reason, n)
	}
	for _, ks := range st.Kinds {
		var settled int64
		for _, n := range ks.Outcomes {
			settled += n
		}
		ks.InFlight = ks.Requested - settled
	}
	if st.Bounces, err = g.BounceStats(ctx); err != nil {
		return Stats{}, err
	}
	return st, nil
}

func (ks *KindStats) add(stage, outcome, reason string, n int64) {
	terminal := func() {
		o := queue.Outcome(outcome)
		ks.Outcomes[o] += n
		if reason != "" {
			if ks.Reasons[o] == nil {
				ks.Reasons[o] = map[string]int64{}
			}
			ks.Reasons[o][reason] += n
		}
	}
	switch stage {
	case "a":
		ks.Requested += n
		if outcome == string(queue.Queued) {
			ks.Admitted += n
			return
		}
		terminal()
	case "l":
		ks.Lanes[outcome] += n
	case "t":
		ks.TracesSkipped += n
	case "f":
		switch outcome {
		case "confirmed":
			ks.Confirmed += n
		case "reported":
			ks.Reported += n
		}
	case "d":
		switch outcome {
		case "deferred":
			ks.Deferred[reason] += n
		case "retry":
			ks.Retried += n
		case "redelivered":
			ks.Redelivered += n
		default:
			terminal()
		}
		if reason == "ambiguous" && (outcome == "retry" || outcome == string(queue.Failed)) {
			ks.Ambiguous += n
		}
	}
}

// Decision is one entry of the decision log.
type Decision struct {
	// Time is when Redis recorded it.
	Time time.Time `json:"time"`
	// Stage is "admit", "dispatch" or "settle".
	Stage   string `json:"stage"`
	Kind    string `json:"kind"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	// TaskID is the email's id.
	TaskID string `json:"task_id"`
	// RcptHash identifies the recipient without naming it (see
	// internal/pii.Hash).
	RcptHash string `json:"rcpt_hash"`
}

// Decisions returns up to limit entries of the decision log, newest first.
// The log holds every refusal and a sample (Config.DecisionSample) of
// allowed decisions, bounded by Config.DecisionLogLen.
func (g *Guard) Decisions(ctx context.Context, limit int) ([]Decision, error) {
	if limit <= 0 {
		limit = 100
	}
	msgs, err := g.rdb.XRevRangeN(ctx, rkeys.Decisions, "+", "-", int64(limit)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, opError(ctx, "decisions", err)
	}
	out := make([]Decision, 0, len(msgs))
	for _, m := range msgs {
		d := Decision{}
		if msStr, _, ok := strings.Cut(m.ID, "-"); ok {
			if n, err := strconv.ParseInt(msStr, 10, 64); err == nil {
				d.Time = time.UnixMilli(n).UTC()
			}
		}
		str := func(k string) string { s, _ := m.Values[k].(string); return s }
		d.Stage, d.Kind, d.Outcome, d.Reason = str("stage"), str("kind"), str("outcome"), str("reason")
		d.TaskID, d.RcptHash = str("id"), str("rcpt")
		out = append(out, d)
	}
	return out, nil
}
