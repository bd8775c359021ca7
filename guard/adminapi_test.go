package guard_test

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/adminapi"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
)

// TestAdminAPIContract drives the breaker endpoints with the operator
// tools' client, so the two sides of the JSON contract cannot drift.
func TestAdminAPIContract(t *testing.T) {
	srv := testutil.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rc.Close() })
	g, err := guard.New(guard.Config{Redis: rc})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(g.Handler())
	defer ts.Close()
	c, err := adminapi.New(adminapi.Config{BaseURL: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	ctx := context.Background()
	b, err := c.Trip(ctx, queue.KindPasswordReset, "drill")
	if err != nil || b.State != adminapi.StateOpen || b.Reason != guard.ReasonManual || b.Mode != "hold" || b.OpenedAt.IsZero() || b.Since.IsZero() {
		t.Fatalf("Trip = %+v, %v", b, err)
	}
	bs, err := c.Breakers(ctx)
	if err != nil || len(bs) != 3 || bs[1].Kind != queue.KindPasswordReset || bs[1].State != adminapi.StateOpen {
		t.Fatalf("Breakers = %+v, %v", bs, err)
	}
	if b, err = c.Reset(ctx, queue.KindPasswordReset); err != nil || b.State != adminapi.StateClosed || b.Reason != "" {
		t.Errorf("Reset = %+v, %v", b, err)
	}
	if r, err := c.Release(ctx, queue.KindPasswordReset, guard.ReleaseOptions{}); err != nil || r.Released != 0 {
		t.Errorf("Release = %+v, %v", r, err)
	}
	if n, err := c.Purge(ctx, queue.KindPasswordReset); err != nil || n != 0 {
		t.Errorf("Purge = %d, %v", n, err)
	}
}
