package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/internal/worker"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// TestNoPlaintextAtRest: with the hash and payload keys, after emails were
// sent, failed permanently (archived), held and refused, no Redis key or
// value holds an address, a display name, a source or a reset link: every
// key of every type is scanned. (Recipient domains name the per-domain
// rates, as the policy does.)
func TestNoPlaintextAtRest(t *testing.T) {
	kr, err := queue.NewKeyring(queue.NewKey("k1"))
	if err != nil {
		t.Fatal(err)
	}
	e := newGuardedEnv(t, withGuard(`
kinds:
  password_reset: { dedup_window: 0, per_recipient: [1/1h] }
`, guard.Config{HashKey: []byte("0123456789abcdef0123456789abcdef"), Keyring: kr, DecisionSample: 1, MessageIDDomain: domain}),
		func(c *worker.Config, _ *smtpsink.Config) { c.Keyring = kr })
	ctx := context.Background()
	secret := func(to string) queue.Email {
		return queue.Email{Kind: queue.KindPasswordReset, To: to, Name: "Zelda Quux", Source: "198.51.100.77",
			Data: map[string]string{"reset_url": "https://app.example/reset/TOKEN-" + strings.SplitN(to, "@", 2)[0]}}
	}
	sent := e.enqueue(t, secret("alice@example.com"))
	failed := e.enqueue(t, secret("permfail+bob@example.com"))
	for _, r := range []queue.Receipt{sent, failed} {
		e.waitFor(t, r.ID, func(seq []queue.Outcome) bool { return len(seq) > 0 && seq[len(seq)-1].Terminal() })
	}
	// Capped (the recipient's window), then held by a tripped breaker.
	if r, err := e.client.Enqueue(ctx, secret("alice@example.com")); err != nil || r.Outcome != queue.Capped {
		t.Fatalf("alice again: %+v, %v; want capped", r, err)
	}
	if _, err := e.guard.Trip(ctx, queue.KindPasswordReset, ""); err != nil {
		t.Fatal(err)
	}
	if r, err := e.client.Enqueue(ctx, secret("carol@example.com")); err != nil || r.Outcome != queue.Held {
		t.Fatalf("carol: %+v, %v; want held", r, err)
	}
	if err := e.guard.Suppress(ctx, "dave@example.com", "manual"); err != nil {
		t.Fatal(err)
	}

	// The traces hold every decision above (bob's under his canonical
	// address, without the +tag): they are among the keys
	// scanned, and so is what Trace reads them into.
	hashKey := []byte("0123456789abcdef0123456789abcdef")
	traces := map[string]bool{}
	for _, to := range []string{"alice@example.com", "permfail@example.com", "carol@example.com"} {
		traces[rkeys.NewDigests(hashKey).Trace(queue.KindPasswordReset, to)] = false
	}
	needles := []string{"alice", "bob", "carol", "dave", "@example.com", "Zelda", "TOKEN-", "app.example", "198.51.100.77"}
	tr, err := e.guard.Trace(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(tr); len(tr.Kinds) != 1 || len(tr.Kinds[0].Sends) != 1 || strings.Contains(string(b), "alice") || strings.Contains(string(b), "TOKEN-") {
		t.Errorf("alice's trace %s: want one send, no address", b)
	}
	var n int
	iter := e.rdb.Scan(ctx, 0, "*", 500).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		n++
		if _, ok := traces[key]; ok {
			traces[key] = true
		}
		for _, v := range dump(t, e.rdb, key) {
			for _, needle := range needles {
				if bytes.Contains([]byte(v), []byte(needle)) {
					t.Errorf("key %q holds %q in plaintext: %.200q", key, needle, v)
				}
			}
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	for k, seen := range traces {
		if !seen {
			t.Errorf("trace key %q was not among the keys scanned", k)
		}
	}
	if n < 20 {
		t.Fatalf("scanned %d keys: the scenario stored less than it should", n)
	}
	t.Logf("scanned %d keys", n)
}

// dump returns a key's name and every value in it.
func dump(t *testing.T, rdb *redis.Client, key string) []string {
	t.Helper()
	ctx := context.Background()
	out := []string{key}
	typ, err := rdb.Type(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	switch typ {
	case "string":
		out = append(out, rdb.Get(ctx, key).Val())
	case "hash":
		for f, v := range rdb.HGetAll(ctx, key).Val() {
			out = append(out, f, v)
		}
	case "list":
		out = append(out, rdb.LRange(ctx, key, 0, -1).Val()...)
	case "set":
		out = append(out, rdb.SMembers(ctx, key).Val()...)
	case "zset":
		out = append(out, rdb.ZRange(ctx, key, 0, -1).Val()...)
	case "stream":
		for _, m := range rdb.XRange(ctx, key, "-", "+").Val() {
			for f, v := range m.Values {
				out = append(out, f, v.(string))
			}
		}
	default:
		t.Errorf("key %q of type %s not inspected", key, typ)
	}
	return out
}
