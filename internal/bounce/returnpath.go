package bounce

import (
	"time"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/verp"
	"github.com/floodgate-dev/floodgate/queue"
)

// ReturnPath returns the worker's return path function: the VERP address
// of each email, its token minted for the canonical recipient under the
// policy's recipient rules (nil means the default policy), or "" (the
// plain envelope sender) for an email whose id the token cannot carry.
func ReturnPath(c *verp.Codec, policy *guard.Policy, now func() time.Time) func(*queue.Payload) string {
	if policy == nil {
		policy = guard.DefaultPolicy()
	}
	if now == nil {
		now = time.Now
	}
	rules := policy.RecipientRules
	return func(p *queue.Payload) string {
		addr, err := c.Address(p.ID, p.Kind, guard.Canonical(p.To, rules), now())
		if err != nil {
			return ""
		}
		return addr
	}
}
