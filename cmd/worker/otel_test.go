package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// The worker traces as its OTEL_* environment says: with the console
// exporter, the spans of an email it delivered are written to its standard
// error by the time it has stopped, under OTEL_SERVICE_NAME, and hold no
// address.
func TestWorkerTracesFromEnv(t *testing.T) {
	r := testutil.StartRedis(t)
	sink := testutil.StartSink(t, smtpsink.Config{})
	env := func(k string) string {
		switch k {
		case "OTEL_TRACES_EXPORTER":
			return "console"
		case "OTEL_SERVICE_NAME":
			return "worker-under-test"
		}
		return testEnv(k)
	}
	cfg, err := parseConfig([]string{"-redis", r.URL(), "-smtp", sink.SMTPAddr(), "-smtp-tls", "none", "-http", "",
		"-from", "no-reply@example.test"}, env, &lockedBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	up, done := make(chan started, 1), make(chan error, 1)
	go func() { done <- runWith(ctx, cfg, &lockedBuffer{}, &stderr, up) }()
	select {
	case <-up:
	case err := <-done:
		cancel()
		t.Fatalf("run: %v", err)
	}

	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	client, err := queue.NewClient(queue.Config{Redis: rdb, Unguarded: true, Keyring: cfg.Secrets.Keyring})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	const to = "grace.hopper@example.test"
	if _, err := client.Enqueue(ctx, queue.Email{Kind: queue.KindPasswordReset, To: to,
		Data: map[string]string{"reset_url": "https://app.example/r/abc"}}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	if _, err := sink.Wait(wctx, 1, smtpsink.Query{To: to}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	out := stderr.String()
	for _, want := range []string{`"Name":"floodgate.process"`, `"Name":"smtp.send"`, `"Name":"guard.dispatch"`, `"Name":"guard.settle"`, "worker-under-test"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %s", want)
		}
	}
	if strings.Contains(out, "grace.hopper") {
		t.Errorf("stderr names the recipient:\n%s", out)
	}
}
