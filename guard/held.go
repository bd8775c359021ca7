package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/queue"
)

// heldBatch is how many held emails a release, purge or sweep handles per
// round trip.
const heldBatch = 256

// ReleaseOptions says which held emails [Guard.Release] releases.
type ReleaseOptions struct {
	// All releases every held email, not only those that would pass a lane
	// of the breaker now; each still goes through the recipient's caps and
	// is paced like the others.
	All bool
	// DryRun changes nothing and counts the held emails by what a release
	// would do with them ([ReleaseResult].Lanes).
	DryRun bool
	// Limit bounds how many are taken; zero means all.
	Limit int
}

// ReleaseResult is what [Guard.Release] did, or would do.
type ReleaseResult struct {
	// Released is how many emails were queued again.
	Released int `json:"released"`
	// Lanes counts the emails looked at by the lane they pass ("trusted",
	// "redeemed", "rerequest"), or "none" (no lane: kept held to expire,
	// or released by All), "expired" or "superseded" (the recipient got an
	// email admitted later).
	Lanes map[string]int `json:"lanes"`
	// Kept is how many stay held (no lane, without All).
	Kept int `json:"kept"`
	// Refused counts the released emails that admission refused again, by
	// "outcome:reason" (suppressed, capped, duplicate, expired).
	Refused map[string]int `json:"refused,omitempty"`
	// Interval is the pace of the released emails: one per Interval.
	Interval time.Duration `json:"interval_ns"`
	// DryRun reports whether nothing was changed.
	DryRun bool `json:"dry_run"`
}

// Release puts held emails of kind back in the queue. By default it
// releases only those that would pass a lane of the breaker now: requests
// that carried a trust signal, from sources (or source groups) whose emails
// were redeemed before the breaker opened, or to recipients who asked again
// while theirs was held; the others stay held until they expire and are
// then counted expired ([Guard.Sweep]). opts.All releases them all;
// opts.DryRun only counts.
//
// Each released email goes through the guard again, so caps still apply:
// one held at admission is admitted again with suppression, the dedup
// window and the per-recipient windows (it used no recipient quota; it
// used its source's and its group's when it was held, so no source can
// have more released than its cap); one superseded by a later email to its
// recipient, or past its expiry, is counted so instead; one held at
// dispatch was admitted already. Released emails go to the release queue
// ([queue.ReleaseQueue], below security mail in the worker's priorities),
// paced at the kind's baseline (at least its probe rate), and are marked so
// that dispatch does not hold them again; the global and per-domain rates
// and the idempotency claim still apply.
//
// A released email is not a new request: Stats moves it from held to in
// flight (or to its new outcome), so requested = outcomes + in flight
// still holds. A release interrupted between taking emails out of the held
// area and queueing them is finished by the next Release; they count as in
// flight meanwhile.
func (g *Guard) Release(ctx context.Context, kind string, opts ReleaseOptions) (ReleaseResult, error) {
	pl, err := g.plan("release", kind)
	if err != nil {
		return ReleaseResult{}, err
	}
	res := ReleaseResult{Lanes: map[string]int{}, Refused: map[string]int{}, DryRun: opts.DryRun}
	st, err := g.Breaker(ctx, kind)
	if err != nil {
		return res, err
	}
	rate := st.Baseline
	if p := pl.policy.Breaker.Probe; p.N > 0 {
		rate = max(rate, float64(p.N)/p.Per.Seconds())
	}
	res.Interval = time.Duration(float64(time.Second) / rate)
	if !opts.DryRun {
		n, err := g.finishRelease(ctx, pl)
		res.Released += n
		if err != nil {
			return res, err
		}
	}
	op := "release"
	switch {
	case opts.DryRun:
		op = "dry"
	case opts.All:
		op = "all"
	}
	start := time.Now()
	_, err = g.eachHeld(ctx, pl, op, opts.Limit, func(id string, body []byte, reply string) error {
		outcome, lane, _ := strings.Cut(reply, ":")
		switch outcome {
		case "dry":
			res.Lanes[lane]++
		case "kept":
			res.Kept++
			res.Lanes["none"]++
		case "queued":
			if lane == "" {
				lane = "none"
			}
			res.Lanes[lane]++
			at := start.Add(time.Duration(res.Released) * res.Interval)
			if err := g.enqueueReleased(ctx, pl, id, body, at); err != nil {
				return err
			}
			res.Released++
		case "expired":
			res.Lanes["expired"]++
		case "duplicate":
			if lane == "superseded" {
				res.Lanes["superseded"]++
				break
			}
			res.Refused[reply]++
		default:
			res.Refused[reply]++
		}
		return nil
	})
	g.log.LogAttrs(ctx, slog.LevelInfo, "breaker release", slog.String("kind", kind), slog.Bool("dry_run", opts.DryRun),
		slog.Bool("all", opts.All), slog.Int("released", res.Released), slog.Int("kept", res.Kept),
		slog.Any("lanes", res.Lanes), slog.Any("refused", res.Refused))
	return res, err
}

// Purge drops every held email of kind and returns how many; they are
// counted shed (reason purged) instead of held.
func (g *Guard) Purge(ctx context.Context, kind string) (int, error) {
	pl, err := g.plan("purge", kind)
	if err != nil {
		return 0, err
	}
	n, err := g.eachHeld(ctx, pl, "purge", 0, nil)
	g.log.LogAttrs(ctx, slog.LevelInfo, "breaker purge", slog.String("kind", kind), slog.Int("purged", n))
	return n, err
}

// Sweep takes the held emails past their expiry out of every kind's held
// area, counting them expired (reason held) instead of held, and returns
// how many. The worker runs it periodically; held emails that no sweep
// counts before the held area itself expires stay counted held.
func (g *Guard) Sweep(ctx context.Context) (int, error) {
	total := 0
	for _, k := range g.kindNames() {
		pl := g.plans[k]
		keys := []string{pl.heldKey}
		cursor := "0"
		for {
			r, err := pl.sweep.Run(ctx, g.rdb, keys, cursor, heldBatch).Slice()
			if err != nil {
				return total, opError(ctx, "sweep", err)
			}
			if len(r) != 2 {
				return total, &OpError{Op: "sweep", Err: fmt.Errorf("unexpected script reply %v", r)}
			}
			n, _ := r[1].(int64)
			total += int(n)
			if cursor = fmt.Sprint(r[0]); cursor == "0" {
				break
			}
		}
	}
	if total > 0 {
		g.log.LogAttrs(ctx, slog.LevelInfo, "held emails expired", slog.Int("expired", total))
	}
	return total, nil
}

// eachHeld runs the release script with op on up to limit held emails of
// pl (limit <= 0: all), a batch per round trip, and calls f with each one
// the script took or looked at, and its reply. It returns how many.
func (g *Guard) eachHeld(ctx context.Context, pl *plan, op string, limit int, f func(id string, body []byte, res string) error) (int, error) {
	if err := pl.release.Load(ctx, g.rdb).Err(); err != nil {
		return 0, opError(ctx, op, err)
	}
	taken := 0
	var cursor uint64
	for {
		kvs, next, err := g.rdb.HScan(ctx, pl.heldKey, cursor, "", heldBatch).Result()
		if err != nil {
			return taken, opError(ctx, op, err)
		}
		type item struct {
			id   string
			body []byte
			cmd  *redis.Cmd
		}
		items := make([]item, 0, len(kvs)/2)
		p := g.rdb.Pipeline()
		for i := 0; i+1 < len(kvs) && (limit <= 0 || taken+len(items) < limit); i += 2 {
			id, body := kvs[i], heldPayload(kvs[i+1])
			itemOp, rkey, ukey, tkey, rh, trust := op, pl.heldKey, pl.heldKey, rkeys.None, "", ""
			sk := sourceKeys{log: pl.heldKey, narrowLog: rkeys.None}
			if pp, err := g.keyring.Decode(body); err == nil {
				canon := Canonical(pp.To, g.policy.RecipientRules)
				rkey, ukey, rh, trust = g.recipientKey(pl.name, canon, pp.Account), g.dg.Suppression(canon), g.dg.RcptHash(canon), string(pp.Trust)
				tkey = g.traceKey(pl.name, canon, pp.Account, rkey)
				sk = pl.sourceKeysOf(g.dg, pp.Source)
			} else if op != "purge" {
				itemOp = "invalid"
			}
			keys := []string{rkey, ukey, rkeys.Claim(id), sk.log, sk.narrowLog, tkey}
			items = append(items, item{id, body, pl.release.EvalSha(ctx, p, keys, rkeys.EmailTag(id), id, itemOp, rh, trust)})
		}
		if len(items) > 0 {
			if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return taken, opError(ctx, op, err)
			}
		}
		for _, it := range items {
			res, err := it.cmd.Text()
			if err != nil {
				return taken, opError(ctx, op, err)
			}
			if res == "gone:" {
				continue
			}
			taken++
			if f != nil {
				if err := f(it.id, it.body, res); err != nil {
					return taken, err
				}
			}
		}
		cursor = next
		if cursor == 0 || (limit > 0 && taken >= limit) {
			return taken, nil
		}
	}
}

// heldPayload returns the encoded payload of a held entry: "a" or "d",
// the expiry and a space, then the payload (or, from earlier versions, the
// payload right after the letter).
func heldPayload(v string) []byte {
	if v == "" || (v[0] != 'a' && v[0] != 'd') {
		return []byte(v)
	}
	v = v[1:]
	if i := strings.IndexByte(v, ' '); i > 0 && !strings.HasPrefix(v, "{") {
		v = v[i+1:]
	}
	return []byte(v)
}

// enqueueReleased queues a released email on the release queue at at,
// marked as released so that dispatch does not hold it again, and takes it
// out of the releasing hash. A task id conflict means an earlier,
// interrupted release already queued it.
func (g *Guard) enqueueReleased(ctx context.Context, pl *plan, id string, body []byte, at time.Time) error {
	p, err := g.keyring.Decode(body)
	if err != nil {
		// The script refuses undecodable payloads; one here was changed
		// under us. Drop it from the releasing hash; it stays in flight.
		g.log.Warn("guard: release: undecodable payload", "kind", pl.name, "task_id", id, "err", err)
		return g.rdb.HDel(ctx, pl.releasing, id).Err()
	}
	p.Lane = laneRelease
	if body, err = g.keyring.Encode(p); err != nil {
		return fmt.Errorf("guard: release %s: %w", pl.name, err)
	}
	opts := append(queue.TaskOptions(p, pl.spec), asynq.Queue(queue.ReleaseQueue))
	if !at.IsZero() {
		opts = append(opts, asynq.ProcessAt(at))
	}
	_, err = g.queue.EnqueueContext(ctx, asynq.NewTask(queue.TypeEmail, body), opts...)
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("guard: release %s: enqueue: %w: %w", pl.name, ErrUnavailable, errors.New(err.Error()))
	}
	if err := g.rdb.HDel(ctx, pl.releasing, id).Err(); err != nil {
		return opError(ctx, "release", err)
	}
	return nil
}

// finishRelease queues the emails an interrupted release took out of the
// held area, and returns how many.
func (g *Guard) finishRelease(ctx context.Context, pl *plan) (int, error) {
	n := 0
	var cursor uint64
	for {
		kvs, next, err := g.rdb.HScan(ctx, pl.releasing, cursor, "", heldBatch).Result()
		if err != nil {
			return n, opError(ctx, "release", err)
		}
		for i := 0; i+1 < len(kvs); i += 2 {
			if err := g.enqueueReleased(ctx, pl, kvs[i], []byte(kvs[i+1]), time.Time{}); err != nil {
				return n, err
			}
			n++
		}
		if cursor = next; cursor == 0 {
			return n, nil
		}
	}
}
