package guard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Sentinel errors of [CheckRedis]; match with errors.Is. Both come as a
// [*RedisSettingError].
var (
	// ErrEviction: a Redis server's maxmemory-policy lets it evict keys.
	ErrEviction = errors.New("guard: redis may evict keys")
	// ErrPolicyUnknown: a Redis server's maxmemory-policy could not be read
	// (CONFIG GET refused and INFO without maxmemory_policy).
	ErrPolicyUnknown = errors.New("guard: redis maxmemory-policy unknown")
)

// RequiredPolicy is the only maxmemory-policy floodgate runs with.
const RequiredPolicy = "noeviction"

// RedisSettingError reports a Redis server whose maxmemory-policy is not
// [RequiredPolicy], or could not be read. It matches [ErrEviction] or
// [ErrPolicyUnknown].
type RedisSettingError struct {
	// Addr is the server (on a cluster, the master) that was checked.
	Addr string
	// Policy is its maxmemory-policy; "" when it could not be read.
	Policy string
	// Maxmemory is its memory limit in bytes; 0 when none or unknown.
	Maxmemory int64
	// Detail says why the policy could not be read.
	Detail string
}

// Error implements error; it names the setting and the value to set.
func (e *RedisSettingError) Error() string {
	if e.Policy == "" {
		return fmt.Sprintf("guard: redis %s: cannot read maxmemory-policy (%s); floodgate needs maxmemory-policy %s, "+
			"check it with the provider", e.Addr, e.Detail, RequiredPolicy)
	}
	limit := ""
	if e.Maxmemory > 0 {
		limit = fmt.Sprintf(" with maxmemory %d bytes", e.Maxmemory)
	}
	return fmt.Sprintf("guard: redis %s: maxmemory-policy is %s%s; floodgate needs maxmemory-policy %s: "+
		"an evicting Redis silently drops rate-limit counters, idempotency claims and queued emails "+
		"(CONFIG SET maxmemory-policy %s, and set it in redis.conf)", e.Addr, e.Policy, limit, RequiredPolicy, RequiredPolicy)
}

// Unwrap returns [ErrPolicyUnknown] when the policy could not be read,
// [ErrEviction] otherwise.
func (e *RedisSettingError) Unwrap() error {
	if e.Policy == "" {
		return ErrPolicyUnknown
	}
	return ErrEviction
}

// RedisNode is what [CheckRedis] read from one server.
type RedisNode struct {
	// Addr is the server's address.
	Addr string
	// Policy is its maxmemory-policy, from CONFIG GET or else INFO; ""
	// when neither answered.
	Policy string
	// Maxmemory is its memory limit in bytes (INFO), 0 when none or
	// unknown.
	Maxmemory int64
	// AOF reports whether the append-only file is on.
	AOF bool
	// SavePoints is the RDB "save" setting, "" when there is none or it
	// could not be read.
	SavePoints string
	// PersistenceKnown reports whether AOF and SavePoints could both be
	// read (CONFIG GET save answered), or AOF is on.
	PersistenceKnown bool
}

// Persistent reports whether the server is known to write its data to disk:
// an append-only file or RDB save points.
func (n RedisNode) Persistent() bool { return n.AOF || n.SavePoints != "" }

// RedisReport is the result of [CheckRedis]: one node per server checked,
// every master on a cluster.
type RedisReport struct {
	Nodes []RedisNode
}

// Policies returns the distinct maxmemory-policy values of the nodes,
// sorted; "" stands for a node whose policy is unknown.
func (r RedisReport) Policies() []string {
	var out []string
	for _, n := range r.Nodes {
		if !slices.Contains(out, n.Policy) {
			out = append(out, n.Policy)
		}
	}
	slices.Sort(out)
	return out
}

// NotPersistent returns the addresses of the nodes known to have no
// persistence at all (neither an append-only file nor RDB save points): a
// restart of one of them loses every queued email, claim and counter on it.
// Nodes whose persistence could not be read are not listed.
func (r RedisReport) NotPersistent() []string {
	var out []string
	for _, n := range r.Nodes {
		if n.PersistenceKnown && !n.Persistent() {
			out = append(out, n.Addr)
		}
	}
	return out
}

// CheckRedis reads the settings floodgate depends on from every server
// behind rdb (each master of a *redis.ClusterClient, each shard of a
// *redis.Ring, else the one server) and reports them.
//
// floodgate keeps its queue, its idempotency claims and its rate-limit
// counters in Redis, so a server that evicts keys under memory pressure
// loses emails and lifts caps without a trace. CheckRedis returns a
// [*RedisSettingError] matching [ErrEviction] when a server's
// maxmemory-policy is anything but [RequiredPolicy] (volatile-* policies
// too: the counters and claims carry TTLs), and one matching
// [ErrPolicyUnknown] when the policy could be read neither with CONFIG GET
// (often disabled or renamed on managed Redis) nor from INFO's
// maxmemory_policy field; what to do then is the caller's choice (the
// commands refuse to start unless told the policy is noeviction). When a
// server does not answer at all, the error is an [*OpError] matching
// [ErrUnavailable]. The report holds what could be read, errors or not.
//
// Call it at start-up, before enqueuing; the worker also repeats it
// periodically. Persistence is reported, not required: see
// [RedisReport.NotPersistent].
func CheckRedis(ctx context.Context, rdb redis.UniversalClient) (RedisReport, error) {
	var (
		mu    sync.Mutex
		rep   RedisReport
		errs  []error
		check = func(ctx context.Context, c *redis.Client) error {
			n, err := checkNode(ctx, c, c.Options().Addr)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return nil
			}
			rep.Nodes = append(rep.Nodes, n)
			return nil
		}
	)
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, check)
	case *redis.Ring:
		err = c.ForEachShard(ctx, check)
	case *redis.Client:
		err = check(ctx, c)
	default:
		var n RedisNode
		if n, err = checkNode(ctx, rdb, "redis"); err == nil {
			rep.Nodes = append(rep.Nodes, n)
		}
	}
	if err != nil {
		return rep, opError(ctx, "check redis", err)
	}
	slices.SortFunc(rep.Nodes, func(a, b RedisNode) int { return strings.Compare(a.Addr, b.Addr) })
	// A server known to evict outweighs one that did not answer.
	for _, n := range rep.Nodes {
		if n.Policy != RequiredPolicy && n.Policy != "" {
			return rep, &RedisSettingError{Addr: n.Addr, Policy: n.Policy, Maxmemory: n.Maxmemory}
		}
	}
	if len(errs) > 0 {
		return rep, errs[0]
	}
	for _, n := range rep.Nodes {
		if n.Policy == "" {
			return rep, &RedisSettingError{Addr: n.Addr, Detail: "CONFIG GET refused, and INFO has no maxmemory_policy"}
		}
	}
	return rep, nil
}

// checkNode reads one server: INFO (memory and persistence), then CONFIG
// GET, which is authoritative when it answers. A server that does not
// answer is an *OpError; a refused command is not an error.
func checkNode(ctx context.Context, c redis.Cmdable, addr string) (RedisNode, error) {
	n := RedisNode{Addr: addr}
	info, err := c.Info(ctx).Result()
	if err != nil && !isReply(err) {
		return n, opError(ctx, "check redis "+addr, err)
	}
	fields := infoFields(info)
	n.Policy = fields["maxmemory_policy"]
	n.Maxmemory, _ = strconv.ParseInt(fields["maxmemory"], 10, 64)
	n.AOF = fields["aof_enabled"] == "1"
	n.PersistenceKnown = n.AOF

	var conf [3]string
	for i, param := range [...]string{"maxmemory-policy", "appendonly", "save"} {
		if conf[i], err = configGet(ctx, c, param); err != nil {
			return n, opError(ctx, "check redis "+addr, err)
		}
	}
	if conf[0] != "" {
		n.Policy = conf[0]
	}
	// appendonly is always yes or no when CONFIG GET answers; "save" is ""
	// both for no save points and for a refused CONFIG.
	if conf[1] != "" {
		n.AOF, n.SavePoints, n.PersistenceKnown = conf[1] == "yes", conf[2], true
	}
	return n, nil
}

// configGet returns one CONFIG GET value, "" when the server refuses the
// command (disabled or renamed) or does not know the parameter.
func configGet(ctx context.Context, c redis.Cmdable, param string) (string, error) {
	m, err := c.ConfigGet(ctx, param).Result()
	if err != nil {
		if isReply(err) {
			return "", nil
		}
		return "", err
	}
	return m[param], nil
}

// isReply reports whether err is the server's error reply (a refused
// command), not a connection failure.
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// infoFields parses INFO's "name:value" lines.
func infoFields(info string) map[string]string {
	m := map[string]string{}
	for line := range strings.Lines(info) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && !strings.HasPrefix(k, "#") {
			m[k] = v
		}
	}
	return m
}
