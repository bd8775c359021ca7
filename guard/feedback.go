package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/queue"
)

var _ queue.Feedback = (*Guard)(nil)

// claimMeta is the length of a sent email's claim before its kind: the
// state byte, the redemption bucket and three digests (rkeys.ClaimSent).
const claimMeta = 1 + 10 + 27

// Confirm records that the link in sent email id was used (the reset or
// verification was completed). It counts the email in its kind's
// redemption bucket, from which the breaker learns what share of the
// kind's emails real users act on and trips when that share collapses
// (reason redemption), and gives the email's source and source group trust
// for the kind's trust period: they pass the redeemed lane of a breaker
// that opens later, and the source keeps its full cap ([KindPolicy]
// UntrustedAfter). An email takes one feedback: confirming it twice, or
// after a report, changes nothing.
//
// It returns [queue.ErrUnknownEmail] when no sent email has that id: never
// sent (held, refused, in flight), expired, or already given feedback; an
// [*OpError] when Redis does not answer.
func (g *Guard) Confirm(ctx context.Context, id string) error {
	return g.feedbackOp(ctx, "confirm", id)
}

// Report records that the recipient of sent email id says they did not ask
// for it: the recipient (or the email's account) is suppressed for the
// kind for [KindPolicy].ReportSuppress, the source and its group lose their
// trust, and the report counts towards the kind's reports trip (reason
// reports). Errors are those of [Guard.Confirm].
func (g *Guard) Report(ctx context.Context, id string) error { return g.feedbackOp(ctx, "report", id) }

func (g *Guard) feedbackOp(ctx context.Context, op, id string) error {
	ckey := rkeys.Claim(id)
	// The claim names the email's kind, whose script (and keys) the
	// feedback needs.
	v, err := g.rdb.Get(ctx, ckey).Result()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("guard: %s: %w", op, queue.ErrUnknownEmail)
	}
	if err != nil {
		return opError(ctx, op, err)
	}
	if len(v) <= claimMeta {
		return fmt.Errorf("guard: %s: %w", op, queue.ErrUnknownEmail)
	}
	pl, ok := g.plans[v[claimMeta:]]
	if !ok {
		return fmt.Errorf("guard: %s: %w", op, queue.ErrUnknownEmail)
	}
	keys := []string{ckey}
	s, err := pl.feedback.Run(ctx, g.rdb, keys, op, id, pl.trustTTL, pl.reportSup).Text()
	if err != nil {
		return opError(ctx, op, err)
	}
	res, sfx, _ := strings.Cut(s, "|")
	if sfx != "" {
		g.breakerReply(ctx, pl, sfx)
	}
	g.metrics.feedback.WithLabelValues(pl.name, op, res).Inc()
	g.log.LogAttrs(ctx, slog.LevelDebug, "guard feedback", slog.String("kind", pl.name), slog.String("op", op),
		slog.String("result", res), slog.String("task_id", id))
	switch res {
	case "confirmed", "reported":
		return nil
	case "already", "unknown":
		return fmt.Errorf("guard: %s: %w", op, queue.ErrUnknownEmail)
	}
	return &OpError{Op: op, Err: fmt.Errorf("unexpected script reply %q", s)}
}
