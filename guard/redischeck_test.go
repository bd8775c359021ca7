package guard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/testutil"
)

// CheckRedis against real servers started with each setting: the
// maxmemory-policy is read with CONFIG GET, from INFO when CONFIG is
// renamed away, and reported unknown when INFO is gone too.
func TestCheckRedis(t *testing.T) {
	cases := []struct {
		name       string
		args       []string
		wantErr    error
		wantPolicy string
		persistent bool
		known      bool // persistence could be read
	}{
		{"defaults", nil, nil, "noeviction", false, true},
		{"allkeys-lru", []string{"--maxmemory", "20mb", "--maxmemory-policy", "allkeys-lru"}, ErrEviction, "allkeys-lru", false, true},
		{"volatile-ttl", []string{"--maxmemory-policy", "volatile-ttl"}, ErrEviction, "volatile-ttl", false, true},
		{"aof", []string{"--appendonly", "yes"}, nil, "noeviction", true, true},
		{"rdb", []string{"--save", "900 1"}, nil, "noeviction", true, true},
		{"no CONFIG, lru from INFO", []string{"--maxmemory-policy", "allkeys-lru", "--rename-command", "CONFIG", ""}, ErrEviction, "allkeys-lru", false, false},
		{"no CONFIG, INFO knows", []string{"--rename-command", "CONFIG", ""}, nil, "noeviction", false, false},
		{"no CONFIG, aof from INFO", []string{"--appendonly", "yes", "--rename-command", "CONFIG", ""}, nil, "noeviction", true, true},
		{"neither CONFIG nor INFO", []string{"--rename-command", "CONFIG", "", "--rename-command", "INFO", ""}, ErrPolicyUnknown, "", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := testutil.StartRedis(t, c.args...)
			rep, err := CheckRedis(context.Background(), r.Client(t))
			if !errors.Is(err, c.wantErr) || (err == nil) != (c.wantErr == nil) {
				t.Fatalf("CheckRedis = %v, want %v", err, c.wantErr)
			}
			if len(rep.Nodes) != 1 {
				t.Fatalf("report has %d nodes, want 1", len(rep.Nodes))
			}
			n := rep.Nodes[0]
			if n.Addr != r.Addr || n.Policy != c.wantPolicy || n.Persistent() != c.persistent || n.PersistenceKnown != c.known {
				t.Errorf("node %+v, want addr %s, policy %q, persistent %v, persistence known %v", n, r.Addr, c.wantPolicy, c.persistent, c.known)
			}
			if wantListed := c.known && !c.persistent; slices.Contains(rep.NotPersistent(), r.Addr) != wantListed {
				t.Errorf("NotPersistent() = %v, want %s listed: %v", rep.NotPersistent(), r.Addr, wantListed)
			}
			var se *RedisSettingError
			if c.wantErr != nil {
				if !errors.As(err, &se) || se.Addr != r.Addr {
					t.Fatalf("error %v is not a *RedisSettingError for %s", err, r.Addr)
				}
				for _, want := range []string{r.Addr, "maxmemory-policy", "noeviction", c.wantPolicy} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not name %q", err, want)
					}
				}
			}
		})
	}
}

// A policy changed at run time is seen by the next check.
func TestCheckRedisSeesConfigSet(t *testing.T) {
	r := testutil.StartRedis(t)
	rc := r.Client(t)
	ctx := context.Background()
	if _, err := CheckRedis(ctx, rc); err != nil {
		t.Fatal(err)
	}
	if err := rc.ConfigSet(ctx, "maxmemory-policy", "allkeys-random").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckRedis(ctx, rc); !errors.Is(err, ErrEviction) || !strings.Contains(err.Error(), "allkeys-random") {
		t.Fatalf("after CONFIG SET: %v, want ErrEviction naming allkeys-random", err)
	}
}

// A server that does not answer is ErrUnavailable, not a setting error.
func TestCheckRedisUnreachable(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), MaxRetries: -1})
	defer rc.Close()
	_, err := CheckRedis(context.Background(), rc)
	var se *RedisSettingError
	if !errors.Is(err, ErrUnavailable) || errors.As(err, &se) {
		t.Fatalf("CheckRedis on a closed port = %v, want ErrUnavailable", err)
	}
}

// On a cluster every master is checked: one evicting master is named.
func TestCheckRedisCluster(t *testing.T) {
	cl := testutil.StartCluster(t)
	cc := cl.Client(t)
	ctx := context.Background()
	rep, err := CheckRedis(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Nodes) != len(cl.Addrs) || len(rep.NotPersistent()) != len(cl.Addrs) {
		t.Fatalf("report %+v, want %d masters, none persistent", rep, len(cl.Addrs))
	}
	bad := cl.Nodes[1]
	if err := bad.Client(t).ConfigSet(ctx, "maxmemory-policy", "allkeys-lfu").Err(); err != nil {
		t.Fatal(err)
	}
	rep, err = CheckRedis(ctx, cc)
	var se *RedisSettingError
	if !errors.As(err, &se) || se.Addr != bad.Addr || se.Policy != "allkeys-lfu" {
		t.Fatalf("CheckRedis = %v, want the evicting master %s named", err, bad.Addr)
	}
	if got := rep.Policies(); !slices.Equal(got, []string{"allkeys-lfu", "noeviction"}) {
		t.Errorf("Policies() = %v", got)
	}
}
