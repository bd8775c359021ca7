package drill

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/adminapi"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// Observation intervals.
const (
	breakerPoll = 50 * time.Millisecond
	memoryPoll  = 500 * time.Millisecond
	sinkPoll    = 250 * time.Millisecond
)

// breakerWatch polls one kind's breaker through the admin API.
type breakerWatch struct {
	admin *adminapi.Client
	kind  string

	mu          sync.Mutex
	polled      bool // at least one answer, or a definite "not available"
	available   bool
	lastErr     string
	polls       int
	attackStart time.Time
	atStart     *adminapi.Breaker
	openAtStart bool // open when the attack started: no time to open
	firstOpen   time.Time
	openAtFirst adminapi.Breaker
	last        adminapi.Breaker
	transitions []Transition
}

// run polls until ctx ends or the API says there is no breaker.
func (w *breakerWatch) run(ctx context.Context) {
	t := time.NewTicker(breakerPoll)
	defer t.Stop()
	for {
		if !w.poll(ctx) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poll reads the breaker once and reports whether polling should go on.
func (w *breakerWatch) poll(ctx context.Context) bool {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	b, err := w.admin.Breaker(pctx, w.kind)
	cancel()
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		w.lastErr = err.Error()
		if errors.Is(err, adminapi.ErrNotFound) {
			w.polled, w.available = true, false
			return false
		}
		return true
	}
	w.polls++
	if !w.polled || b.State != w.last.State {
		w.transitions = append(w.transitions, Transition{At: now, State: b.State, Reason: b.Reason})
	}
	w.polled, w.available, w.last = true, true, b
	if !w.attackStart.IsZero() && !w.openAtStart && w.firstOpen.IsZero() && (b.State == adminapi.StateOpen) {
		w.firstOpen, w.openAtFirst = now, b
	}
	return true
}

// markAttack records the attack's start and the breaker's state then.
func (w *breakerWatch) markAttack(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.attackStart = t
	if w.polled && w.available {
		b := w.last
		w.atStart = &b
		// Already open (an earlier drill?): there is no time to open.
		w.openAtStart = (b.State == adminapi.StateOpen)
	}
}

// memWatch samples Redis's used_memory and keeps the peak.
type memWatch struct {
	rdb  redis.UniversalClient
	mu   sync.Mutex
	peak int64
}

func (m *memWatch) run(ctx context.Context) {
	t := time.NewTicker(memoryPoll)
	defer t.Stop()
	for {
		if n, err := usedMemory(ctx, m.rdb); err == nil {
			m.mu.Lock()
			m.peak = max(m.peak, n)
			m.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *memWatch) max() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peak
}

// usedMemory returns INFO memory's used_memory.
func usedMemory(ctx context.Context, rdb redis.UniversalClient) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("drill: INFO memory has no used_memory")
}

// delivered is one message at the sink that is not to an attacked
// recipient: matched to a legitimate request by its Message-ID later.
type delivered struct {
	id string
	at time.Time
}

// sinkWatch reads the sink's new messages as they arrive, newest first,
// so that a sink whose store is smaller than the drill's deliveries still
// counts all of them.
type sinkWatch struct {
	sink         sinkAPI
	attackDomain string // "@attacked.example", lower case
	// interval is how often it reads the sink; zero means sinkPoll.
	interval time.Duration
	// onMessage, when set, sees every new message, oldest first, with the
	// watch's lock held: it must not block.
	onMessage func(*smtpsink.Message)

	mu         sync.Mutex
	newest     string // the sink id of the newest message seen
	baseline   int64  // the sink's Received count at the start
	attack     int64
	perVictim  map[string]int
	other      []delivered
	messageIDs map[string]int
	total      int64
	dkimFail   int64
	unsigned   int64
	lastErr    string
}

func newSinkWatch(sink sinkAPI, attackDomain string) *sinkWatch {
	return &sinkWatch{sink: sink, attackDomain: "@" + strings.ToLower(attackDomain),
		perVictim: map[string]int{}, messageIDs: map[string]int{}}
}

// start marks the messages already at the sink as not the drill's.
func (w *sinkWatch) start(ctx context.Context) error {
	st, err := w.sink.Stats(ctx)
	if err != nil {
		return err
	}
	msgs, err := w.sink.Messages(ctx, smtpsink.Query{Limit: 1})
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.baseline = st.Received
	if len(msgs) > 0 {
		w.newest = msgs[0].ID
	}
	return nil
}

func (w *sinkWatch) run(ctx context.Context) {
	t := time.NewTicker(cmp.Or(w.interval, sinkPoll))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.poll(ctx); err != nil && ctx.Err() == nil {
			w.mu.Lock()
			w.lastErr = err.Error()
			w.mu.Unlock()
		}
	}
}

// poll reads the messages that arrived since the last poll. It fetches
// the newest few and widens the window until it reaches one already seen.
func (w *sinkWatch) poll(ctx context.Context) error {
	w.mu.Lock()
	newest := w.newest
	w.mu.Unlock()
	var fresh []smtpsink.Message
	for limit := 256; ; limit *= 4 {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		msgs, err := w.sink.Messages(pctx, smtpsink.Query{Limit: limit})
		cancel()
		if err != nil {
			return err
		}
		cut := len(msgs)
		for i, m := range msgs {
			if m.ID == newest {
				cut = i
				break
			}
		}
		// Seen the boundary, or fetched everything the sink holds (the
		// boundary was evicted, so all of these are new).
		if cut < len(msgs) || len(msgs) < limit || limit >= 4*sinkCapacity {
			fresh = msgs[:cut]
			break
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.newest = fresh[0].ID
	for i := len(fresh) - 1; i >= 0; i-- {
		w.add(&fresh[i])
	}
	return nil
}

func (w *sinkWatch) add(m *smtpsink.Message) {
	w.total++
	if w.onMessage != nil {
		w.onMessage(m)
	}
	if m.MessageID != "" {
		w.messageIDs[m.MessageID]++
	}
	for _, d := range m.DKIM {
		if d.Result == smtpsink.ResultNone {
			w.unsigned++
			break
		}
		if d.Result != smtpsink.ResultPass {
			w.dkimFail++
			break
		}
	}
	for _, r := range m.RcptTo {
		if strings.HasSuffix(strings.ToLower(r), w.attackDomain) {
			w.attack++
			w.perVictim[strings.ToLower(r)]++
			return
		}
	}
	w.other = append(w.other, delivered{id: emailID(m.MessageID), at: m.ReceivedAt})
}

// emailID returns the floodgate email id of a Message-ID "<id@domain>".
func emailID(messageID string) string {
	s := strings.TrimPrefix(strings.TrimSpace(messageID), "<")
	id, _, _ := strings.Cut(s, "@")
	return id
}

// sinkCounts is what the sink saw during the drill.
type sinkCounts struct {
	total, attack, received, dkimFail, unsigned int64
	duplicates                                  int64 // messages whose Message-ID arrived before
	victims, maxPerVictim                       int
	other                                       []delivered
	lastErr                                     string
}

// counts reads the sink's final counters, then the messages that arrived
// since the last poll, and returns everything seen. With workers still
// running, messages read may exceed the counter read before them.
func (w *sinkWatch) counts(ctx context.Context) (sinkCounts, error) {
	st, err := w.sink.Stats(ctx)
	if err != nil {
		return sinkCounts{}, err
	}
	if err := w.poll(ctx); err != nil {
		return sinkCounts{}, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	c := sinkCounts{total: w.total, attack: w.attack, received: st.Received - w.baseline, dkimFail: w.dkimFail, unsigned: w.unsigned,
		victims: len(w.perVictim), other: w.other, lastErr: w.lastErr}
	for _, n := range w.messageIDs {
		c.duplicates += int64(n - 1)
	}
	for _, n := range w.perVictim {
		c.maxPerVictim = max(c.maxPerVictim, n)
	}
	return c, nil
}

// redisLoad is Redis's CPU time and per-command counts at one moment.
type redisLoad struct {
	cpu  float64 // seconds, user + system
	cmds map[string]cmdStat
}

type cmdStat struct{ calls, usec int64 }

// readRedisLoad reads INFO cpu and commandstats.
func readRedisLoad(ctx context.Context, rdb redis.UniversalClient) (redisLoad, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := rdb.Info(ctx, "cpu", "commandstats").Result()
	if err != nil {
		return redisLoad{}, err
	}
	l := redisLoad{cmds: map[string]cmdStat{}}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "used_cpu_user:"); ok {
			f, _ := strconv.ParseFloat(v, 64)
			l.cpu += f
		} else if v, ok := strings.CutPrefix(line, "used_cpu_sys:"); ok {
			f, _ := strconv.ParseFloat(v, 64)
			l.cpu += f
		} else if v, ok := strings.CutPrefix(line, "cmdstat_"); ok {
			name, fields, _ := strings.Cut(v, ":")
			var c cmdStat
			for _, f := range strings.Split(fields, ",") {
				k, val, _ := strings.Cut(f, "=")
				switch k {
				case "calls":
					c.calls, _ = strconv.ParseInt(val, 10, 64)
				case "usec":
					c.usec, _ = strconv.ParseInt(val, 10, 64)
				}
			}
			l.cmds[name] = c
		}
	}
	return l, nil
}

// since returns what Redis did between a and l: CPU seconds and the
// busiest commands by time, at most n.
func (l redisLoad) since(a redisLoad, n int) (float64, []CommandLoad) {
	var out []CommandLoad
	for name, c := range l.cmds {
		d := cmdStat{calls: c.calls - a.cmds[name].calls, usec: c.usec - a.cmds[name].usec}
		if d.calls <= 0 {
			continue
		}
		out = append(out, CommandLoad{Name: name, Calls: d.calls, Seconds: float64(d.usec) / 1e6,
			MicrosPerCall: float64(int64(float64(d.usec)/float64(d.calls)*10+0.5)) / 10})
	}
	slices.SortFunc(out, func(x, y CommandLoad) int { return cmp.Compare(y.Seconds, x.Seconds) })
	if len(out) > n {
		out = out[:n]
	}
	return l.cpu - a.cpu, out
}
