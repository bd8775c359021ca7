package guard

import (
	"context"
	"encoding/hex"
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
	// Hash is the hex digest the entry is stored under.
	Hash string `json:"hash"`
	// Reason is why the recipient is suppressed, e.g. "hard_bounce",
	// "complaint", "manual".
	Reason string `json:"reason"`
	// Since is when the entry was added.
	Since time.Time `json:"since"`
}

// suppressionField validates addr and returns its field in the suppression
// hash.
func (g *Guard) suppressionField(addr string) (string, error) {
	norm, err := queue.NormalizeAddress(strings.TrimSpace(addr))
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidAddress, err)
	}
	return rkeys.SuppressionField(Canonical(norm, g.policy.RecipientRules)), nil
}

// Suppress adds addr (every variant of it under the policy's recipient
// rules) to the suppression list: admission refuses it with outcome
// suppressed, for every kind, until [Guard.Unsuppress]. reason is a short
// token; empty means "manual". Adding an address again replaces its reason.
func (g *Guard) Suppress(ctx context.Context, addr, reason string) error {
	if reason == "" {
		reason = "manual"
	}
	if token(reason) != reason {
		return fmt.Errorf("guard: suppress: reason %q must be up to 32 lower-case letters, digits or '_'", reason)
	}
	f, err := g.suppressionField(addr)
	if err != nil {
		return err
	}
	v := reason + "|" + strconv.FormatInt(g.now().UnixMilli(), 10)
	if err := g.rdb.HSet(ctx, rkeys.Suppressions, f, v).Err(); err != nil {
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
	f, err := g.suppressionField(addr)
	if err != nil {
		return false, err
	}
	n, err := g.rdb.HDel(ctx, rkeys.Suppressions, f).Result()
	if err != nil {
		return false, opError(ctx, "unsuppress", err)
	}
	return n > 0, nil
}

// Suppressed reports whether addr is on the suppression list.
func (g *Guard) Suppressed(ctx context.Context, addr string) (bool, error) {
	_, ok, err := g.LookupSuppression(ctx, addr)
	return ok, err
}

// LookupSuppression returns the suppression entry of addr and whether there
// is one.
func (g *Guard) LookupSuppression(ctx context.Context, addr string) (Suppression, bool, error) {
	f, err := g.suppressionField(addr)
	if err != nil {
		return Suppression{}, false, err
	}
	v, err := g.rdb.HGet(ctx, rkeys.Suppressions, f).Result()
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

func parseSuppression(field, v string) Suppression {
	reason, since, _ := strings.Cut(v, "|")
	s := Suppression{Hash: hex.EncodeToString([]byte(field)), Reason: reason}
	if n, err := strconv.ParseInt(since, 10, 64); err == nil {
		s.Since = time.UnixMilli(n).UTC()
	}
	return s
}
