package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/keyfile"
	"github.com/floodgate-dev/floodgate/internal/redisx"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// TestThreeWorkersHoldGlobalCap runs three worker processes against one
// Redis and checks, at the sink, that together they send at the policy's
// global rate within ±10 % over a sustained run.
func TestThreeWorkersHoldGlobalCap(t *testing.T) {
	const rate, emails = 50, 300
	r := testutil.StartRedis(t)
	sink := testutil.StartSink(t, smtpsink.Config{MaxMessages: emails})
	// A small burst lets a slot that is claimed a little late not be lost
	// (GCRA); the first burst arrivals are left out of the sustained rate.
	const burst = 5
	policyDoc := fmt.Sprintf("global: { rate: %d/1s, burst: %d }\ndomains: { default: 100000/1m }\n", rate, burst)
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(policyDoc), 0o600); err != nil {
		t.Fatal(err)
	}

	// Queue everything first, so the workers are never short of work.
	rdb, err := redisx.Open(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	pol, err := guard.LoadPolicy(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	sec, err := keyfile.Load(testEnv, "", "", true)
	if err != nil {
		t.Fatal(err)
	}
	g, err := guard.New(guard.Config{Redis: rdb, Policy: pol, HashKey: sec.HashKey, Keyring: sec.Keyring})
	if err != nil {
		t.Fatal(err)
	}
	client, err := queue.NewClient(queue.Config{Redis: rdb, Keyring: sec.Keyring, Admitter: g, Kinds: pol.Kinds()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for i := range emails {
		rc, err := client.Enqueue(context.Background(), queue.Email{Kind: queue.KindNotification, To: fmt.Sprintf("u%d@example.com", i),
			Source: fmt.Sprintf("src%d", i), Data: map[string]string{"subject": "s", "body": "b"}})
		if err != nil || rc.Outcome != queue.Queued {
			t.Fatalf("enqueue %d: %+v, %v", i, rc, err)
		}
	}

	bin := workerBinary(t)
	for i := range 3 {
		cmd := exec.Command(bin, "-redis", r.URL(), "-smtp", sink.SMTPAddr(), "-smtp-tls", "none", "-http", "",
			"-policy", policyFile, "-from", "no-reply@example.test", "-concurrency", "4", "-log-level", "warn")
		var stderr strings.Builder
		cmd.Stderr, cmd.Env = &stderr, keyEnv()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
			if t.Failed() {
				t.Logf("worker %d stderr:\n%s", i, stderr.String())
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	msgs, err := sink.Wait(ctx, emails, smtpsink.Query{})
	if err != nil {
		t.Fatalf("sink has %d of %d: %v", sink.Stats().Received, emails, err)
	}
	// Newest first; the sustained rate runs from the arrival after the
	// initial burst to the last.
	first, last := msgs[len(msgs)-1-burst].ReceivedAt, msgs[0].ReceivedAt
	got := float64(len(msgs)-1-burst) / last.Sub(first).Seconds()
	t.Logf("3 workers: %d emails in %v: %.1f/s against a global cap of %d/s", len(msgs), last.Sub(first).Round(time.Millisecond), got, rate)
	if got > rate*1.1 || got < rate*0.9 {
		t.Errorf("sustained rate %.1f/s, want %d/s ±10%%", got, rate)
	}
	if st := sink.Stats(); st.Received != emails || st.DuplicateMessageIDs != 0 {
		t.Errorf("sink stats %+v: want exactly %d, no duplicates", st, emails)
	}
}
