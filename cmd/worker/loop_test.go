package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/keyfile"
	"github.com/floodgate-dev/floodgate/internal/redisx"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// processLoop is a worker binary with its bounce receiver on a private
// Redis, sending to a sink whose reports go back to that receiver.
type processLoop struct {
	sink       *smtpsink.Server
	g          *guard.Guard
	client     *queue.Client
	bounceAddr string
}

// startProcessLoop starts redis-server, the sink, and the worker binary
// with -bounce-domain and -bounce-smtp on a free port, which it reads from
// the worker's log; then points the sink's reports at it.
func startProcessLoop(t *testing.T) *processLoop {
	t.Helper()
	r := testutil.StartRedis(t)
	sink := testutil.StartSink(t, smtpsink.Config{})

	cmd := exec.Command(workerBinary(t), "-redis", r.URL(), "-smtp", sink.SMTPAddr(), "-smtp-tls", "none", "-http", "",
		"-from", "no-reply@example.test", "-bounce-domain", "bounce.example.test", "-bounce-smtp", "127.0.0.1:0",
		"-log-json", "-log-level", "info")
	cmd.Env = append(keyEnv(), "FLOODGATE_BOUNCE_SECRET=process-loop-secret-0123456789abcdef")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		logMu sync.Mutex
		log   bytes.Buffer
	)
	addr := make(chan string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			log.Write(append(sc.Bytes(), '\n'))
			logMu.Unlock()
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "bounce receiver listening" {
				addr <- line.Addr
			}
		}
		close(addr)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		<-copied
		if t.Failed() {
			logMu.Lock()
			t.Logf("worker log:\n%s", log.String())
			logMu.Unlock()
		}
	})
	a, ok := <-addr
	if !ok {
		t.Fatal("the worker exited before its bounce receiver listened")
	}
	if err := sink.SetBounceRelay(a); err != nil {
		t.Fatal(err)
	}

	rdb, err := redisx.Open(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	sec, err := keyfile.Load(testEnv, "", "", true)
	if err != nil {
		t.Fatal(err)
	}
	g, err := guard.New(guard.Config{Redis: rdb, HashKey: sec.HashKey, Keyring: sec.Keyring})
	if err != nil {
		t.Fatal(err)
	}
	client, err := queue.NewClient(queue.Config{Redis: rdb, Admitter: g, Kinds: g.Policy().Kinds(), Keyring: sec.Keyring})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return &processLoop{sink: sink, g: g, client: client, bounceAddr: a}
}

func (l *processLoop) enqueue(t *testing.T, to string) queue.Receipt {
	t.Helper()
	r, err := l.client.Enqueue(context.Background(), queue.Email{Kind: queue.KindPasswordReset, To: to,
		Data: map[string]string{"reset_url": "https://app.example/r/1"}})
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	return r
}

// refused returns the bounce receiver's refusals by reason.
func (l *processLoop) refused(t *testing.T) map[string]int64 {
	t.Helper()
	fs, err := l.g.BounceStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return fs.Refused[guard.SourceDSN]
}

func (l *processLoop) suppressed(t *testing.T, addr string) bool {
	t.Helper()
	_, ok, err := l.g.LookupSuppression(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestBounceLoopProcesses closes the loop through the real pieces, each
// over its own connection: the worker process sends to the sink with its
// VERP return path, the sink's DSN goes over SMTP to the worker's bounce
// receiver, and the next enqueue to that address is suppressed. It logs
// the time from the first enqueue to the suppressed one.
func TestBounceLoopProcesses(t *testing.T) {
	l := startProcessLoop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const runs = 5
	var took []time.Duration
	for i := range runs {
		// One domain a run: bounce+ tags canonicalise away.
		to := fmt.Sprintf("bounce+x@r%d.example.test", i)
		start := time.Now()
		if r := l.enqueue(t, to); r.Outcome != queue.Queued {
			t.Fatalf("run %d: first enqueue %+v, want queued", i, r)
		}
		// The receiver records the DSN before it answers the final dot, so
		// once the sink has it delivered the suppression is in Redis.
		reps, err := l.sink.WaitReports(ctx, i+1)
		if err != nil {
			t.Fatalf("run %d: %v (reports %+v)", i, err, l.sink.Reports())
		}
		if rep := reps[0]; rep.Status != smtpsink.ReportDelivered || rep.Recipients[0] != to || !strings.HasPrefix(rep.To, "bounces+") {
			t.Fatalf("run %d: report %+v, want a DSN about %s delivered to the return path", i, rep, to)
		}
		if r := l.enqueue(t, to); r.Outcome != queue.Suppressed {
			t.Fatalf("run %d: enqueue after the DSN %+v, want suppressed", i, r)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	t.Logf("enqueue → sent → DSN → suppressed enqueue, %d runs: min %v, median %v, max %v",
		runs, took[0].Round(time.Millisecond), took[runs/2].Round(time.Millisecond), took[runs-1].Round(time.Millisecond))
	if n := l.refused(t); len(n) != 0 {
		t.Errorf("the loop's own DSNs were refused: %v", n)
	}
}

// TestHostileDSNsToWorker sends hostile reports to the worker process's
// bounce receiver, with its production limits: each is counted under its
// reason and suppresses nobody. internal/bounce tests the same refusals
// against the server alone.
func TestHostileDSNsToWorker(t *testing.T) {
	l := startProcessLoop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const alice, mallory = "alice@example.test", "mallory@example.test"
	if r := l.enqueue(t, alice); r.Outcome != queue.Queued {
		t.Fatalf("enqueue: %+v", r)
	}
	msgs, err := l.sink.Wait(ctx, 1, smtpsink.Query{To: alice})
	if err != nil {
		t.Fatal(err)
	}
	rp := msgs[0].MailFrom
	local, domain, _ := strings.Cut(rp, "@")
	forged := local[:len(local)-4] + "aaaa@" + domain
	if forged == rp {
		forged = local[:len(local)-4] + "bbbb@" + domain
	}
	// A genuine DSN of the sink's, about a bounce+ recipient, replayed to
	// alice's return path.
	if r := l.enqueue(t, "bounce+x@example.test"); r.Outcome != queue.Queued {
		t.Fatalf("enqueue: %+v", r)
	}
	reps, err := l.sink.WaitReports(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	before := l.refused(t)

	huge := append(testutil.DSN(rp, alice, "5.1.1"), bytes.Repeat([]byte("x\r\n"), 100<<10)...)
	tests := []struct {
		name, rcpt string
		msg        []byte
		code       int
		reason     string
	}{
		{"forged token", forged, testutil.DSN(forged, alice, "5.1.1"), 550, "forged"},
		{"over 256 KiB", rp, huge, 552, "too_large"},
		{"another recipient", rp, testutil.DSN(rp, mallory, "5.1.1"), 0, "recipient_mismatch"},
		{"another recipient, replayed DSN", rp, reps[0].Raw, 0, "recipient_mismatch"},
	}
	want := map[string]int64{}
	for _, tt := range tests {
		err := testutil.SendFromNull(t, l.bounceAddr, tt.msg, tt.rcpt)
		if testutil.SMTPCode(err) != tt.code || tt.code == 0 && err != nil {
			t.Errorf("%s: send = %v, want code %d", tt.name, err, tt.code)
		}
		want[tt.reason]++
	}
	after := l.refused(t)
	for reason, n := range want {
		if got := after[reason] - before[reason]; got != n {
			t.Errorf("refused[%s] grew by %d, want %d (all: %v)", reason, got, n, after)
		}
	}
	for _, a := range []string{alice, mallory} {
		if l.suppressed(t, a) {
			t.Errorf("hostile DSNs suppressed %s", a)
		}
	}
	if r := l.enqueue(t, mallory); r.Outcome != queue.Queued {
		t.Errorf("enqueue to %s after the hostile DSNs: %+v, want queued", mallory, r)
	}
	fs, err := l.g.BounceStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if k := fs.Kinds[queue.KindPasswordReset]; k == nil || k.Hard != 1 || k.Soft != 0 || k.Complaints != 0 {
		t.Errorf("password_reset feedback %+v, want only the bounce+ recipient's hard bounce", k)
	}
}
