package testutil

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of private redis-server processes on loopback,
// one master per node and no replicas, started for one test.
type Cluster struct {
	// Addrs are the masters' host:port addresses.
	Addrs []string
	// Nodes are the server processes, in the order of Addrs.
	Nodes []*Redis
}

// StartCluster starts a 3-master Redis Cluster (redis-server
// --cluster-enabled yes, joined with redis-cli --cluster create), waits
// until every node reports cluster_state:ok and knows all 16384 slots, and
// stops the servers when the test ends.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	const masters = 3
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli not found on PATH (install Debian's redis-tools): %v", err)
	}
	c := &Cluster{}
	for range masters {
		// nodes.conf is relative to the server's private --dir.
		r := StartRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(FreePort(t)), "--cluster-node-timeout", "5000")
		c.Nodes = append(c.Nodes, r)
		c.Addrs = append(c.Addrs, r.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	create := append([]string{"--cluster", "create"}, c.Addrs...)
	create = append(create, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, create...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, r := range c.Nodes {
		if err := waitClusterOK(ctx, r.Addr); err != nil {
			t.Fatalf("cluster node %s: %v%s", r.Addr, err, r.proc.LogTail(20))
		}
	}
	return c
}

// Client returns a cluster client for c, closed at test cleanup.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// waitClusterOK polls a node until it reports cluster_state:ok with every
// slot assigned; the gossip that gets it there has no event to wait on.
func waitClusterOK(ctx context.Context, addr string) error {
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rc.Close()
	var last string
	for ctx.Err() == nil {
		info, err := rc.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_ok:16384") {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = info
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("cluster not ok: %s", last)
}
