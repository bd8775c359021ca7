package guard

import (
	"context"
	"encoding/hex"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
)

// Benchmarks run side by side against the same private Redis. Figures:
//
//	go test ./guard -run '^$' -bench . -benchtime 200000x -count 3
//
// Every op uses a new recipient (the flood case) and one of 100,000 sources.

const benchParallelism = 8 // goroutines per GOMAXPROCS

// benchPolicy is the default policy with the reset breaker's surge floor
// above any benchmark's rate: the breaker counts and checks every request
// but stays closed, so a flood of distinct recipients measures admission,
// not the held area (BenchmarkAdmitBreaker measures an open breaker).
const benchPolicy = "kinds: { password_reset: { breaker: { learn: { warmup: 0 }, floor: 1000000/1s, ceilings: { rate: off, new_recipients: off } } } }\n"

// serverTime returns the Redis CPU time spent in EVALSHA so far
// (INFO commandstats), so a benchmark can report server µs per op, which
// the client's load on a small machine does not distort.
func serverTime(b *testing.B, rc *redis.Client) (calls, usec int64) {
	info, err := rc.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:")
		if !ok {
			continue
		}
		for kv := range strings.SplitSeq(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				calls = n
			case "usec":
				usec = n
			}
		}
	}
	return calls, usec
}

// reportServerTime runs f and reports the server's EVALSHA µs per call.
func reportServerTime(b *testing.B, rc *redis.Client, f func()) {
	c0, u0 := serverTime(b, rc)
	f()
	b.StopTimer()
	c1, u1 := serverTime(b, rc)
	if c1 > c0 {
		b.ReportMetric(float64(u1-u0)/float64(c1-c0), "srv-µs/call")
	}
}

func benchClient(b *testing.B, addr string) *redis.Client {
	rc := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
	b.Cleanup(func() { rc.Close() })
	return rc
}

// BenchmarkAdmit compares one admission decision with every cap on (dedup,
// two per-recipient windows, a per-source window, suppression, breaker,
// stats, sampled decision log) to go-redis/redis_rate's Allow with one limit.
func BenchmarkAdmit(b *testing.B) {
	srv := testutil.StartRedis(b)
	rc := benchClient(b, srv.Addr)
	ctx := context.Background()

	var seq atomic.Int64 // recipients stay distinct across runs
	// guard: IPv4 sources, each in a /24 of its own (every per-source and
	// per-group log is a new key: the worst case); guard_principal: non-IP
	// sources, which have no group.
	for _, name := range []string{"guard", "guard_principal"} {
		b.Run(name, func(b *testing.B) {
			rc.FlushAll(ctx) // both start from an empty data set
			g := guardOn(b, rc, benchPolicy, Config{})
			b.SetParallelism(benchParallelism)
			b.ReportAllocs()
			b.ResetTimer()
			reportServerTime(b, rc, func() {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						a := benchAdmission(&seq, nil)
						if name == "guard_principal" {
							a.Source = "user:" + a.Source
						}
						if _, err := g.Admit(ctx, a); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}

	b.Run("redis_rate", func(b *testing.B) {
		rc.FlushAll(ctx)
		lim := redis_rate.NewLimiter(rc)
		limit := redis_rate.PerHour(3)
		b.SetParallelism(benchParallelism)
		b.ReportAllocs()
		b.ResetTimer()
		reportServerTime(b, rc, func() {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := seq.Add(1)
					if _, err := lim.Allow(ctx, "rl:user"+strconv.FormatInt(i, 10)+"@example.com", limit); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	})
}

// BenchmarkEnqueue compares queue.Client.Enqueue with the guard as its
// admitter to the same without a guard and to plain asynq.Client.Enqueue.
func BenchmarkEnqueue(b *testing.B) {
	srv := testutil.StartRedis(b)
	rc := benchClient(b, srv.Addr)
	ctx := context.Background()
	data := map[string]string{"reset_url": "https://app.example/reset?token=0123456789abcdef"}
	var seq atomic.Int64 // recipients stay distinct across runs

	enqueue := func(b *testing.B, adm queue.Admitter) {
		rc.FlushAll(ctx)
		c, err := queue.NewClient(queue.Config{Redis: rc, Admitter: adm, Unguarded: adm == nil})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.SetParallelism(benchParallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := seq.Add(1)
				r, err := c.Enqueue(ctx, queue.Email{Kind: queue.KindPasswordReset, To: "user" + strconv.FormatInt(i, 10) + "@example.com",
					Source: "10.1." + strconv.FormatInt(i%100000, 10), Data: data})
				if err != nil || !r.Accepted() {
					b.Errorf("Enqueue = %+v, %v", r, err)
					return
				}
			}
		})
	}
	b.Run("queue+guard", func(b *testing.B) {
		g := guardOn(b, rc, benchPolicy, Config{})
		enqueue(b, g)
	})
	// The guard may live on a Redis of its own: admission and asynq's
	// enqueue then run on two servers instead of queueing on one.
	b.Run("queue+guard-own-redis", func(b *testing.B) {
		own := benchClient(b, testutil.StartRedis(b).Addr)
		enqueue(b, guardOn(b, own, benchPolicy, Config{}))
	})
	b.Run("queue", func(b *testing.B) { enqueue(b, nil) })
	b.Run("asynq", func(b *testing.B) {
		rc.FlushAll(ctx)
		c := asynq.NewClientFromRedisClient(rc)
		b.SetParallelism(benchParallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := seq.Add(1)
				p := &queue.Payload{ID: newID(), Kind: queue.KindPasswordReset, To: "user" + strconv.FormatInt(i, 10) + "@example.com", Data: data,
					EnqueuedAt: time.Now(), ExpiresAt: time.Now().Add(30 * time.Minute)}
				body, _ := p.Encode()
				if _, err := c.EnqueueContext(ctx, asynq.NewTask(queue.TypeEmail, body), asynq.Queue("floodgate-security"), asynq.TaskID(p.ID)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkDispatch measures one dispatch decision plus its Settle(Sent):
// claim, breaker, global and per-domain GCRA.
func BenchmarkDispatch(b *testing.B) {
	srv := testutil.StartRedis(b)
	rc := benchClient(b, srv.Addr)
	g := guardOn(b, rc, "global: 1000000/1s\ndomains: { default: 1000000/1s }\n", Config{})
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p := &queue.Payload{V: 1, ID: newID(), Kind: queue.KindPasswordReset, To: "user@example.com", ExpiresAt: exp}
			v, err := g.Dispatch(ctx, p, "a")
			if err != nil || !v.Allow {
				b.Errorf("Dispatch = %+v, %v", v, err)
				return
			}
			if err := g.Settle(ctx, p, "a", queue.Sent, ""); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// Split-layout prototype, for BenchmarkClusterAdmit only: the admission of
// the default reset policy as one script per slot (recipient, source,
// kind), sent in one pipeline. It checks the same caps but, unlike the
// shipped script, cannot count the final outcome atomically; see doc.go.
var (
	splitRecipient = redis.NewScript(`
local cur = redis.call('MGET', KEYS[1], KEYS[2])
local rlog = cur[1] or ''
local t = redis.call('TIME')
local nows = t[1] - 1577836800
if cur[2] then return 'suppressed' end
if #rlog >= 19 and nows - tonumber(string.sub(rlog, 10, 19)) <= 120 then return 'duplicate' end
if #rlog >= 57 and nows - tonumber(string.sub(rlog, 48, 57)) <= 3600 then return 'capped' end
if #rlog >= 190 and nows - tonumber(string.sub(rlog, 181, 190)) <= 86400 then return 'capped' end
redis.call('SET', KEYS[1], ARGV[1] .. string.format('%010d', nows) .. string.sub(rlog, 1, 171), 'PX', 86401000)
return 'ok'`)
	splitSource = redis.NewScript(`
local slog = redis.call('GET', KEYS[1]) or ''
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if #slog >= 120 and now - struct.unpack('>I6', slog, 115) < 3600000 then return 'capped' end
redis.call('SET', KEYS[1], struct.pack('>I6', now) .. string.sub(slog, 1, 114), 'PX', 3600000)
return 'ok'`)
	splitKind = redis.NewScript(`
local b = redis.call('GET', KEYS[1])
redis.call('INCR', KEYS[2])
if b == 'open' then return 'open' end
return 'ok'`)
)

// BenchmarkClusterAdmit runs admission on a 3-master Redis Cluster: the
// shipped layout (every key under one hash tag, one script on one node)
// against the split prototype (three scripts on the slots of the
// recipient, the source and the kind, in one pipeline).
func BenchmarkClusterAdmit(b *testing.B) {
	cl := testutil.StartCluster(b)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs, PoolSize: 64})
	b.Cleanup(func() { cc.Close() })
	ctx := context.Background()
	var seq atomic.Int64

	b.Run("one_tag", func(b *testing.B) {
		g := guardOn(b, cc, benchPolicy, Config{})
		b.SetParallelism(benchParallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := g.Admit(ctx, benchAdmission(&seq, nil)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})

	b.Run("split", func(b *testing.B) {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			for _, s := range []*redis.Script{splitRecipient, splitSource, splitKind} {
				if err := s.Load(ctx, c).Err(); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		b.SetParallelism(benchParallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := seq.Add(1)
				to := "user" + strconv.FormatInt(i, 10) + "@example.com"
				rd := hex.EncodeToString([]byte(rkeys.Recipient(queue.KindPasswordReset, to)[5:]))
				sd := hex.EncodeToString([]byte(rkeys.Source(queue.KindPasswordReset, "10.0."+strconv.FormatInt(i%100000, 10))[5:]))
				p := cc.Pipeline()
				r := splitRecipient.EvalSha(ctx, p, []string{"{r" + rd + "}", "{r" + rd + "}u"}, rkeys.EmailTag(newID()))
				s := splitSource.EvalSha(ctx, p, []string{"{s" + sd + "}"})
				k := splitKind.EvalSha(ctx, p, []string{"{k:password_reset}b", "{k:password_reset}n"})
				if _, err := p.Exec(ctx); err != nil {
					b.Error(err)
					return
				}
				_, _, _ = r.Val(), s.Val(), k.Val()
			}
		})
	})
}

// benchAdmission returns a reset admission for a recipient never seen
// before in this run, from one of 100,000 sources.
func benchAdmission(seq *atomic.Int64, payload []byte) *queue.Admission {
	i := seq.Add(1)
	return &queue.Admission{ID: newID(), Kind: queue.KindPasswordReset, Payload: payload,
		To: "user" + strconv.FormatInt(i, 10) + "@example.com", Source: benchSource(i)}
}

// benchSource returns an IPv4 source in a /24 of its own for a long run of
// i, so that every per-source and per-group window is checked and written
// and none refuses.
func benchSource(i int64) string {
	return "10." + strconv.FormatInt(i>>8&255, 10) + "." + strconv.FormatInt(i&255, 10) + "." + strconv.FormatInt(i>>16&255, 10)
}
