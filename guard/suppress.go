package guard

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/queue"
)

// Suppression is one entry of the suppression list. The list stores a
// digest of the canonical recipient, never the address.
type Suppression struct {
	// Hash names the recipient as logs and the decision log do (its
	// rcpt_hash, see [Guard.HashRecipient]).
	Hash string `json:"hash"`
	// Reason is why the recipient is suppressed, e.g. "hard_bounce",
	// "complaint", "manual".
	Reason string `json:"reason"`
	// Since is when the entry was added.
	Since time.Time `json:"since"`
	// Source is where the entry came from (Source* constants); empty for
	// entries written before sources were recorded.
	Source string `json:"source,omitempty"`
}

// Sources of suppression entries.
const (
	// SourceSMTP: the relay refused the recipient during the SMTP session.
	SourceSMTP = "smtp"
	// SourceDSN: a delivery status notification (RFC 3464) or another
	// bounce reached the bounce receiver.
	SourceDSN = "dsn"
	// SourceARF: a complaint (RFC 5965 feedback report) reached the bounce
	// receiver.
	SourceARF = "arf"
	// SourceSES, SourceSendGrid, SourceMailgun: a provider's webhook.
	SourceSES      = "ses"
	SourceSendGrid = "sendgrid"
	SourceMailgun  = "mailgun"
	// SourceManual: an operator, through the admin API or Suppress.
	SourceManual = "manual"
)

// suppression validates addr and returns its key and its field in the
// suppression hash.
func (g *Guard) suppression(addr string) (key, field string, err error) {
	norm, err := queue.NormalizeAddress(strings.TrimSpace(addr))
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrInvalidAddress, err)
	}
	canon := Canonical(norm, g.policy.RecipientRules)
	return g.dg.Suppression(canon), g.dg.SuppressionField(canon), nil
}

// Suppress adds addr (every variant of it under the policy's recipient
// rules) to the suppression list: admission refuses it with outcome
// suppressed, for every kind, until [Guard.Unsuppress]. reason is a short
// token; empty means "manual". The entry's source is [SourceManual].
// Adding an address again replaces its reason and source.
func (g *Guard) Suppress(ctx context.Context, addr, reason string) error {
	return g.SuppressFrom(ctx, addr, reason, SourceManual)
}

// SuppressFrom is [Guard.Suppress] with the entry's source, a short token
// such as [SourceDSN].
func (g *Guard) SuppressFrom(ctx context.Context, addr, reason, source string) error {
	if reason == "" {
		reason = "manual"
	}
	if token(reason) != reason {
		return fmt.Errorf("guard: suppress: reason %q must be up to 32 lower-case letters, digits or '_'", reason)
	}
	if source == "" || token(source) != source {
		return fmt.Errorf("guard: suppress: source %q must be up to 32 lower-case letters, digits or '_'", source)
	}
	k, f, err := g.suppression(addr)
	if err != nil {
		return err
	}
	v := reason + "|" + strconv.FormatInt(g.now().UnixMilli(), 10) + "|" + source
	_, err = g.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, k, v, 0)
		p.HSet(ctx, rkeys.Suppressions, f, v)
		return nil
	})
	if err != nil {
		return opError(ctx, "suppress", err)
	}
	return nil
}

// Unsuppress removes addr from the suppression list. Removing an address
// that is not listed is not an error.
func (g *Guard) Unsuppress(ctx context.Context, addr string) error {
	_, err := g.unsuppress(ctx, addr)
	return err
}

func (g *Guard) unsuppress(ctx context.Context, addr string) (bool, error) {
	k, f, err := g.suppression(addr)
	if err != nil {
		return false, err
	}
	var del *redis.IntCmd
	_, err = g.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		del = p.Del(ctx, k)
		p.HDel(ctx, rkeys.Suppressions, f)
		return nil
	})
	if err != nil {
		return false, opError(ctx, "unsuppress", err)
	}
	return del.Val() > 0, nil
}

// Suppressed reports whether addr is on the suppression list.
func (g *Guard) Suppressed(ctx context.Context, addr string) (bool, error) {
	_, ok, err := g.LookupSuppression(ctx, addr)
	return ok, err
}

// LookupSuppression returns the suppression entry of addr and whether there
// is one.
func (g *Guard) LookupSuppression(ctx context.Context, addr string) (Suppression, bool, error) {
	k, f, err := g.suppression(addr)
	if err != nil {
		return Suppression{}, false, err
	}
	v, err := g.rdb.Get(ctx, k).Result()
	if errors.Is(err, redis.Nil) {
		return Suppression{}, false, nil
	}
	if err != nil {
		return Suppression{}, false, opError(ctx, "suppressed", err)
	}
	return parseSuppression(f, v), true, nil
}

// ListSuppressions returns up to about count entries from cursor (0 to
// start) and the cursor of the next page, 0 at the end.
func (g *Guard) ListSuppressions(ctx context.Context, cursor uint64, count int) ([]Suppression, uint64, error) {
	kv, next, err := g.rdb.HScan(ctx, rkeys.Suppressions, cursor, "", int64(count)).Result()
	if err != nil {
		return nil, 0, opError(ctx, "list suppressions", err)
	}
	out := make([]Suppression, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, parseSuppression(kv[i], kv[i+1]))
	}
	return out, next, nil
}

// parseSuppression reads "<reason>|<unix ms>[|<source>]"; entries written
// before sources were recorded have none.
func parseSuppression(field, v string) Suppression {
	reason, rest, _ := strings.Cut(v, "|")
	since, source, _ := strings.Cut(rest, "|")
	s := Suppression{Hash: rkeys.RcptHashOfField(field), Reason: reason, Source: source}
	if n, err := strconv.ParseInt(since, 10, 64); err == nil {
		s.Since = time.UnixMilli(n).UTC()
	}
	return s
}
