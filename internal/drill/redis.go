package drill

import (
	"context"
	"errors"
	"fmt"

	"github.com/floodgate-dev/floodgate/internal/redisproc"
)

// ErrNoRedisServer is returned in embedded mode when redis-server is not
// installed. miniredis is no substitute: its Lua is too slow for the
// drill's figures to mean anything.
var ErrNoRedisServer = errors.New("drill: redis-server not found on PATH: install it (Debian: apt-get install redis-server) or run against a deployment with -redis, -api and -sink")

// startRedis starts bin (redis-server; "" looks it up) on a free loopback
// port with persistence off and waits until it answers.
func startRedis(ctx context.Context, bin string) (*redisproc.Proc, error) {
	p, err := redisproc.Start(ctx, redisproc.Options{Bin: bin})
	switch {
	case errors.Is(err, redisproc.ErrNotFound):
		return nil, ErrNoRedisServer
	case err != nil:
		return nil, fmt.Errorf("drill: %w", err)
	}
	return p, nil
}
