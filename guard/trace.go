package guard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/queue"
)

// Trace is what the guard knows about one recipient: the decisions about
// its emails still inside their windows, the state of its caps, its
// suppression, its held emails and what became of each send. It names the
// recipient by its hash only.
type Trace struct {
	// RcptHash names the recipient as logs do ([Guard.HashRecipient]).
	RcptHash string `json:"rcpt_hash"`
	// At is the Redis time the trace was read at; cap states are as of it.
	At time.Time `json:"at"`
	// Suppression is the recipient's suppression list entry, if any: it
	// lasts until removed.
	Suppression *Suppression `json:"suppression,omitempty"`
	// Kinds has one entry per kind with anything to say, sorted by kind.
	Kinds []KindTrace `json:"kinds"`
}

// KindTrace is a recipient's trace for one kind.
type KindTrace struct {
	Kind string `json:"kind"`
	// Events are the decisions, oldest first.
	Events []TraceEvent `json:"events"`
	// Caps are the dedup window and the per-recipient windows, as the
	// recipient's log has them (caps that key on an account are the
	// account's, and not shown here).
	Caps []CapState `json:"caps"`
	// ReportedUntil is set while the recipient is suppressed for the kind
	// because it reported one of its emails.
	ReportedUntil *time.Time `json:"reported_until,omitempty"`
	// Held are the recipient's emails held by the breaker now.
	Held []HeldEmail `json:"held,omitempty"`
	// Sends are the emails dispatched to the relay, oldest first.
	Sends []SendResult `json:"sends,omitempty"`
}

// TraceEvent is one decision about one email.
type TraceEvent struct {
	Time time.Time `json:"time"`
	// Stage is "admit", "dispatch", "settle" or "release".
	Stage string `json:"stage"`
	// Outcome and Reason are the decision, as in the decision log:
	// admission and release give queued, duplicate, capped, held, shed,
	// suppressed (and expired, failed on release); dispatch dispatched,
	// deferred, duplicate, expired, held or shed; settle sent, failed,
	// expired or retry.
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	// ID is the email's id; empty for an admission whose email has not
	// reached a later stage yet (the recipient log keeps only a tag).
	ID string `json:"id,omitempty"`
}

// CapState is one cap of a kind for one recipient.
type CapState struct {
	// Cap is "dedup" or "per_recipient".
	Cap    string        `json:"cap"`
	Limit  int           `json:"limit"`
	Window time.Duration `json:"window_ns"`
	// Per is Window written as a duration ("1h0m0s").
	Per string `json:"window"`
	// Used counts the admissions inside the window.
	Used int `json:"used"`
	// Full reports whether the next request is refused by this cap.
	Full bool `json:"full"`
	// FreesAt is when the oldest admission inside the window leaves it:
	// when a full cap admits again. Unset when the window is empty.
	FreesAt *time.Time `json:"frees_at,omitempty"`
}

// HeldEmail is an email of the recipient parked by the breaker.
type HeldEmail struct {
	ID string `json:"id"`
	// Stage is where it was held: "admit" or "dispatch".
	Stage     string    `json:"stage"`
	ExpiresAt time.Time `json:"expires_at"`
}

// SendResult is what became of one email the guard let go to the relay.
type SendResult struct {
	ID string `json:"id"`
	// MessageID is the email's Message-ID header ("<id@domain>"), when the
	// guard knows the workers' domain (Config.MessageIDDomain).
	MessageID string `json:"message_id,omitempty"`
	// Attempts counts the dispatched attempts.
	Attempts   int       `json:"attempts"`
	Dispatched time.Time `json:"dispatched"`
	// Result is the newest settle outcome (sent, failed, expired, retry),
	// empty while the attempt has not been settled; Reason its reason
	// (an SMTP class such as smtp_451, hard_bounce, ambiguous).
	Result    string     `json:"result,omitempty"`
	Reason    string     `json:"reason,omitempty"`
	SettledAt *time.Time `json:"settled_at,omitempty"`
	// Feedback is "confirmed" (its link was used) or "reported" (its
	// recipient did not ask for it), while the email's claim lasts.
	Feedback string `json:"feedback,omitempty"`
}

// stages names the trace's stage letters.
var stages = map[byte]string{'a': "admit", 'd': "dispatch", 's': "settle", 'r': "release"}

// traceEntry is one parsed line of a [rkeys.Trace] value.
type traceEntry struct {
	ms      int64
	stage   byte
	outcome string
	reason  string
	after   string // admission entries: the tag of the newest admission before it, or "-"
	id      string
}

// parseTrace reads a trace value ([rkeys.Trace]: oldest first, each
// line after its newline) into entries oldest first: the newest entry and
// the older ones whose lines, each with its newline, fit in
// [rkeys.TraceKeep] bytes, so that what it shows does not depend on when
// a script cut the value. The text before the first newline (an entry
// the cut split) and malformed lines are skipped.
func parseTrace(v string) []traceEntry {
	var out []traceEntry
	budget := rkeys.TraceKeep
	for first := true; ; first = false {
		i := strings.LastIndexByte(v, '\n')
		if i < 0 {
			break
		}
		line := v[i+1:]
		v = v[:i]
		if !first {
			if budget -= len(line) + 1; budget < 0 {
				break
			}
		}
		if len(line) < 2 {
			continue
		}
		stage := line[0]
		f := strings.SplitN(line[1:], " ", 4)
		if stages[stage] == "" || len(f) < 3 || (stage == 'a' && len(f) < 4) {
			continue
		}
		ms, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		e := traceEntry{ms: ms, stage: stage}
		e.outcome, e.reason, _ = strings.Cut(f[1], ":")
		if stage == 'a' {
			e.after, e.id = f[2], f[3]
		} else {
			e.id = strings.Join(f[2:], " ")
		}
		out = append(out, e)
	}
	slices.Reverse(out)
	return out
}

// admission is one entry of a recipient log: the email's tag and the
// admission's time in seconds since [rkeys.LogEpoch].
type admission struct {
	tag string
	sec int64
}

// parseRecipientLog reads a recipient log, oldest first; reported is the
// end (seconds since the epoch) of a report's suppression, 0 if none.
func parseRecipientLog(v string) (log []admission, reported int64) {
	if strings.HasPrefix(v, "S") {
		n, _ := strconv.ParseInt(v[1:], 10, 64)
		return nil, n
	}
	for i := 0; i+19 <= len(v); i += 19 {
		sec, err := strconv.ParseInt(v[i+9:i+19], 10, 64)
		if err != nil {
			break
		}
		log = append(log, admission{v[i : i+9], sec})
	}
	slices.Reverse(log)
	return log, 0
}

func epochSec(s int64) time.Time { return time.Unix(rkeys.LogEpoch+s, 0).UTC() }
func epochMS(ms int64) time.Time { return time.UnixMilli(rkeys.LogEpoch*1000 + ms).UTC() }

// Trace returns what the guard knows about addr (see [Trace]), read in two
// round trips; an address never seen gives a trace without kinds. addr is
// canonicalised and hashed as admission does. Errors are
// [ErrInvalidAddress] and [*OpError].
func (g *Guard) Trace(ctx context.Context, addr string) (*Trace, error) {
	norm, err := queue.NormalizeAddress(strings.TrimSpace(addr))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidAddress, err)
	}
	canon := Canonical(norm, g.policy.RecipientRules)
	kinds := g.kindNames()
	// Per kind: the trace, the recipient log and the held marker; then the
	// suppression. Every key shares the hash tag, so MGET works on a
	// cluster too.
	keys := make([]string, 0, 3*len(kinds)+1)
	for _, k := range kinds {
		rkey := g.dg.Recipient(k, canon)
		keys = append(keys, g.dg.Trace(k, canon), rkey, rkeys.HeldMarker(rkey))
	}
	keys = append(keys, g.dg.Suppression(canon))
	p := g.rdb.Pipeline()
	tcmd := p.Time(ctx)
	mcmd := p.MGet(ctx, keys...)
	if _, err := p.Exec(ctx); err != nil {
		return nil, opError(ctx, "trace", err)
	}
	now := tcmd.Val()
	vals := mcmd.Val()
	str := func(i int) string { s, _ := vals[i].(string); return s }
	tr := &Trace{RcptHash: g.dg.RcptHash(canon), At: now.UTC(), Kinds: []KindTrace{}}
	if s := str(len(keys) - 1); s != "" {
		e := parseSuppression(g.dg.SuppressionField(canon), s)
		tr.Suppression = &e
	}
	nows := now.Unix() - rkeys.LogEpoch

	type pending struct {
		kind           int // index in tr.Kinds
		held, claims   []string
		heldC, claimsC *redis.SliceCmd
	}
	var work []*pending
	for i, k := range kinds {
		entries := parseTrace(str(3 * i))
		log, reported := parseRecipientLog(str(3*i + 1))
		marker := str(3*i + 2)
		kt := KindTrace{Kind: k, Events: mergeEvents(entries, log), Caps: capStates(g.policy.KindPolicies[k], log, nows)}
		if reported > nows {
			t := epochSec(reported)
			kt.ReportedUntil = &t
		}
		if len(kt.Events) == 0 && len(kt.Caps) == 0 && kt.ReportedUntil == nil && marker == "" {
			continue
		}
		w := &pending{}
		kt.Sends = g.sends(entries)
		seen := map[string]bool{}
		for _, e := range entries {
			if e.outcome == "held" && e.reason == "breaker" && !seen[e.id] {
				seen[e.id] = true
				w.held = append(w.held, e.id)
			}
		}
		for _, s := range kt.Sends {
			w.claims = append(w.claims, rkeys.Claim(s.ID))
		}
		w.kind = len(tr.Kinds)
		tr.Kinds = append(tr.Kinds, kt)
		work = append(work, w)
	}
	// Second round trip: which held emails are still held, and the
	// feedback on each send (kept in its claim).
	p = g.rdb.Pipeline()
	n := 0
	for _, w := range work {
		if len(w.held) > 0 {
			w.heldC = p.HMGet(ctx, rkeys.Held(tr.Kinds[w.kind].Kind), w.held...)
			n++
		}
		if len(w.claims) > 0 {
			w.claimsC = p.MGet(ctx, w.claims...)
			n++
		}
	}
	if n > 0 {
		if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, opError(ctx, "trace", err)
		}
	}
	for _, w := range work {
		kt := &tr.Kinds[w.kind]
		if w.heldC != nil {
			for j, v := range w.heldC.Val() {
				s, _ := v.(string)
				if h, ok := parseHeld(w.held[j], s); ok {
					kt.Held = append(kt.Held, h)
				}
			}
		}
		if w.claimsC != nil {
			for j, v := range w.claimsC.Val() {
				s, _ := v.(string)
				switch {
				case strings.HasPrefix(s, rkeys.ClaimConfirmed):
					kt.Sends[j].Feedback = "confirmed"
				case strings.HasPrefix(s, rkeys.ClaimReported):
					kt.Sends[j].Feedback = "reported"
				}
			}
		}
	}
	return tr, nil
}

// parseHeld reads a held entry: "a" or "d", the expiry (unix ms), a space
// and the payload.
func parseHeld(id, v string) (HeldEmail, bool) {
	if v == "" {
		return HeldEmail{}, false
	}
	h := HeldEmail{ID: id, Stage: "admit"}
	if v[0] == 'd' {
		h.Stage = "dispatch"
	}
	if exp, _, ok := strings.Cut(v[1:], " "); ok {
		if n, err := strconv.ParseInt(exp, 10, 64); err == nil {
			h.ExpiresAt = time.UnixMilli(n).UTC()
		}
	}
	return h, true
}

// mergeEvents interleaves the trace's entries with the plain admissions
// that only the recipient log records (seconds, a tag, no id). An
// admission goes right after the last entry that must precede it: an
// admission entry that names an earlier admission (or none) as the newest
// before it, or an entry of an earlier second. So within its second it
// comes before the other stages' entries: the admission scripts' entries
// say exactly where they stand, the others are the email's own later
// stages or, rarely, another email's. Ids are filled in from the later
// stages.
func mergeEvents(entries []traceEntry, log []admission) []TraceEvent {
	type ev struct {
		TraceEvent
		tag, after string
		admit      bool // an admission entry (after is set)
	}
	evs := make([]ev, 0, len(entries)+len(log))
	ids := map[string]string{}
	traced := map[string]bool{} // admissions the trace has itself
	for _, e := range entries {
		tag := rkeys.EmailTag(e.id)
		ids[tag] = e.id
		if e.outcome == "queued" && (e.stage == 'a' || e.stage == 'r') {
			traced[tag] = true
		}
		evs = append(evs, ev{TraceEvent{Time: epochMS(e.ms), Stage: stages[e.stage], Outcome: e.outcome, Reason: e.reason, ID: e.id},
			tag, e.after, e.stage == 'a'})
	}
	order := map[string]int{} // tag -> position in the recipient log, oldest first
	for i, a := range log {
		order[a.tag] = i
	}
	prev := -1 // where the previous admission went
	for i, a := range log {
		if traced[a.tag] {
			for j := range evs {
				if evs[j].tag == a.tag && evs[j].Outcome == "queued" && (evs[j].Stage == "admit" || evs[j].Stage == "release") {
					prev = max(prev, j)
				}
			}
			continue
		}
		at := prev + 1
		for j := prev + 1; j < len(evs); j++ {
			e := evs[j]
			if e.tag == a.tag {
				break // its own email's later stages
			}
			n, known := order[e.after]
			before := e.admit && (!known || n < i)
			if before || e.Time.Unix()-rkeys.LogEpoch < a.sec {
				at = j + 1
			}
		}
		e := ev{TraceEvent: TraceEvent{Time: epochSec(a.sec), Stage: "admit", Outcome: "queued", ID: ids[a.tag]}, tag: a.tag}
		evs = slices.Insert(evs, at, e)
		prev = at
	}
	out := make([]TraceEvent, len(evs))
	for i, e := range evs {
		out[i] = e.TraceEvent
	}
	return out
}

// capStates evaluates a kind's dedup window and per-recipient windows
// against a recipient log at nows (seconds since the epoch), as the
// admission script does: a window counts the admissions at most its length
// old.
func capStates(kp KindPolicy, log []admission, nows int64) []CapState {
	if len(log) == 0 {
		return nil
	}
	var out []CapState
	state := func(name string, limit int, per time.Duration) CapState {
		s := CapState{Cap: name, Limit: limit, Window: per, Per: per.String()}
		p := secs(per)
		var oldest []int64 // newest first
		for i := len(log) - 1; i >= 0; i-- {
			if nows-log[i].sec <= p {
				oldest = append(oldest, log[i].sec)
			}
		}
		s.Used = len(oldest)
		s.Full = s.Used >= limit
		if s.Used > 0 {
			// Full: when the limit-th newest leaves; otherwise the oldest.
			at := oldest[len(oldest)-1]
			if s.Full {
				at = oldest[limit-1]
			}
			t := epochSec(at + p + 1)
			s.FreesAt = &t
		}
		return s
	}
	if kp.DedupWindow > 0 {
		out = append(out, state("dedup", 1, kp.DedupWindow))
	}
	for _, r := range kp.PerRecipient {
		out = append(out, state("per_recipient", r.N, r.Per))
	}
	return out
}

// sends lists the emails the trace shows dispatched, oldest first, with
// their newest settle result.
func (g *Guard) sends(entries []traceEntry) []SendResult {
	var out []SendResult
	at := map[string]int{}
	for _, e := range entries {
		switch {
		case e.stage == 'd' && e.outcome == "dispatched":
			i, ok := at[e.id]
			if !ok {
				s := SendResult{ID: e.id, Dispatched: epochMS(e.ms)}
				if g.msgDomain != "" {
					s.MessageID = "<" + e.id + "@" + g.msgDomain + ">"
				}
				out = append(out, s)
				i = len(out) - 1
				at[e.id] = i
			}
			out[i].Attempts++
		case e.stage == 's':
			if i, ok := at[e.id]; ok {
				t := epochMS(e.ms)
				out[i].Result, out[i].Reason, out[i].SettledAt = e.outcome, e.reason, &t
			}
		}
	}
	return out
}
