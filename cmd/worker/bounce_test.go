package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/redisx"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// startDev runs `worker -dev` in-process with every listener on a free
// port, and stops it at cleanup.
func startDev(t *testing.T, extra ...string) started {
	t.Helper()
	args := append([]string{"-dev", "-http", "127.0.0.1:0", "-dev-smtp", "127.0.0.1:0", "-dev-sink-http", "127.0.0.1:0",
		"-bounce-smtp", "127.0.0.1:0"}, extra...)
	cfg, err := parseConfig(args, testEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan started, 1)
	done := make(chan error, 1)
	go func() { done <- runWith(ctx, cfg, io.Discard, io.Discard, up) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case s := <-up:
		return s
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	}
	return started{}
}

// devClient enqueues through the guard, as cmd/enqueue does.
func devClient(t *testing.T, s started) *queue.Client {
	t.Helper()
	rdb, err := redisx.Open(s.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	sec := s.Stack.Secrets
	g, err := guard.New(guard.Config{Redis: rdb, HashKey: sec.HashKey, Keyring: sec.Keyring})
	if err != nil {
		t.Fatal(err)
	}
	client, err := queue.NewClient(queue.Config{Redis: rdb, Admitter: g, Kinds: g.Policy().Kinds(), Keyring: sec.Keyring})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

// sendDSN delivers a DSN about rcpt to the return path rp at the bounce
// receiver, as the recipient's relay would.
func sendDSN(t *testing.T, addr, rp, rcpt, status string) error {
	t.Helper()
	return testutil.SendFromNull(t, addr, testutil.DSN(rp, rcpt, status), rp)
}

// getUntil polls GET url until its body contains want (the worker counts
// sent emails once a second).
func getUntil(t *testing.T, url, want string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && strings.Contains(string(body), want) {
			return string(body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s = %d, body lacks %q:\n%s", url, resp.StatusCode, want, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBounceLoop: in -dev, an email to the sink's bounce+ address is sent
// with its VERP return path, the sink's DSN reaches the embedded bounce
// receiver, and the next enqueue to that address is suppressed.
func TestBounceLoop(t *testing.T) {
	s := startDev(t)
	if s.BounceAddr == "" {
		t.Fatal("-dev started no bounce receiver")
	}
	client := devClient(t, s)
	ctx := context.Background()
	const to = "bounce+gone@example.test"
	start := time.Now()
	r, err := client.Enqueue(ctx, queue.Email{Kind: queue.KindPasswordReset, To: to, Data: map[string]string{"reset_url": "https://app.example/r/1"}})
	if err != nil || r.Outcome != queue.Queued {
		t.Fatalf("enqueue: %+v, %v", r, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	msgs, err := s.Stack.Sink.Wait(wctx, 1, smtpsink.Query{To: to})
	if err != nil {
		t.Fatal(err)
	}
	rp := msgs[0].MailFrom
	if !strings.HasPrefix(rp, "bounces+") || !strings.HasSuffix(rp, "@bounce.example.test") || strings.Contains(rp, "gone") {
		t.Fatalf("return path %q, want bounces+<token>@bounce.example.test naming no address", rp)
	}
	// The receiver records the DSN before it answers the final dot, so a
	// delivered report has done its work.
	reps, err := s.Stack.Sink.WaitReports(wctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if reps[0].Status != smtpsink.ReportDelivered || reps[0].To != rp || reps[0].Type != smtpsink.ReportBounce {
		t.Fatalf("report %+v, want a bounce delivered to %s", reps[0], rp)
	}
	r, err = client.Enqueue(ctx, queue.Email{Kind: queue.KindPasswordReset, To: to, Data: map[string]string{"reset_url": "https://app.example/r/2"}})
	if err != nil || r.Outcome != queue.Suppressed {
		t.Fatalf("enqueue after the DSN: %+v, %v; want suppressed", r, err)
	}
	t.Logf("enqueue to suppressed enqueue: %v", time.Since(start))

	base := "http://" + s.HTTPAddr
	body := getUntil(t, base+"/v1/suppressions?address="+url.QueryEscape(to), `"suppressed":true`)
	var sup struct{ Entry guard.Suppression }
	if err := json.Unmarshal([]byte(body), &sup); err != nil || sup.Entry.Source != guard.SourceDSN || sup.Entry.Reason != "hard_bounce" {
		t.Errorf("suppression entry %s: want hard_bounce from dsn", body)
	}
	getUntil(t, base+"/metrics", `floodgate_kind_bounce_rate{kind="password_reset"} 1`)
	getUntil(t, base+"/metrics", `floodgate_bounces_total{domain="other",kind="password_reset",source="dsn",type="hard"} 1`)
	body = getUntil(t, base+"/v1/stats", `"bounces"`)
	var st guard.Stats
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if k := st.Bounces.Kinds[queue.KindPasswordReset]; k == nil || k.Hard != 1 || k.Sent != 1 || k.BounceRate != 1 {
		t.Errorf("/v1/stats bounces of password_reset = %+v, want 1 sent, 1 hard, rate 1", k)
	}

	// A forged return path is refused at RCPT and changes nothing.
	forged := rp[:len("bounces+")+10] + strings.Repeat("a", 46) + "@bounce.example.test"
	if err := sendDSN(t, s.BounceAddr, forged, "other@example.test", "5.1.1"); err == nil || !strings.Contains(err.Error(), "550") {
		t.Errorf("forged DSN: %v, want 550", err)
	}
	r, err = client.Enqueue(ctx, queue.Email{Kind: queue.KindPasswordReset, To: "other@example.test", Data: map[string]string{"reset_url": "https://app.example/r/3"}})
	if err != nil || r.Outcome != queue.Queued {
		t.Errorf("enqueue to the forged DSN's recipient: %+v, %v; want queued", r, err)
	}

	// complain+: the sink's abuse report suppresses the recipient too.
	const angry = "complain+angry@example.test"
	n := queue.Email{Kind: queue.KindNotification, To: angry, Data: map[string]string{"subject": "s", "body": "b"}}
	if r, err = client.Enqueue(ctx, n); err != nil || r.Outcome != queue.Queued {
		t.Fatalf("enqueue to %s: %+v, %v", angry, r, err)
	}
	if reps, err = s.Stack.Sink.WaitReports(wctx, 2); err != nil {
		t.Fatal(err)
	}
	if reps[0].Status != smtpsink.ReportDelivered || reps[0].Type != smtpsink.ReportComplaint {
		t.Fatalf("report %+v, want a complaint delivered", reps[0])
	}
	if r, err = client.Enqueue(ctx, n); err != nil || r.Outcome != queue.Suppressed {
		t.Errorf("enqueue after the complaint: %+v, %v; want suppressed", r, err)
	}
}

func mailgunEvent(key, token, rcpt string) string {
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(ts + token))
	b, _ := json.Marshal(map[string]any{
		"signature":  map[string]string{"timestamp": ts, "token": token, "signature": hex.EncodeToString(mac.Sum(nil))},
		"event-data": map[string]any{"id": token, "event": "failed", "severity": "permanent", "recipient": rcpt},
	})
	return string(b)
}

// TestWebhookListeners: provider webhooks answer on -http without the
// admin token (their own signatures authenticate them) and on
// -webhooks-http, which serves nothing else.
func TestWebhookListeners(t *testing.T) {
	const key = "mailgun-signing-key-0123"
	env := map[string]string{"FLOODGATE_ADMIN_TOKEN": "admin-token", "FLOODGATE_MAILGUN_SIGNING_KEY": key}
	cfg, err := parseConfig([]string{"-dev", "-http", "127.0.0.1:0", "-dev-smtp", "127.0.0.1:0", "-dev-sink-http", "127.0.0.1:0",
		"-bounce-smtp", "127.0.0.1:0", "-webhooks-http", "127.0.0.1:0"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan started, 1)
	done := make(chan error, 1)
	go func() { done <- runWith(ctx, cfg, io.Discard, io.Discard, up) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	var s started
	select {
	case s = <-up:
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	}
	if s.WebhooksAddr == "" {
		t.Fatal("-webhooks-http not started")
	}
	do := func(method, url, body, token string) int {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	admin, hooks := "http://"+s.HTTPAddr, "http://"+s.WebhooksAddr
	tests := []struct {
		name, method, url, body, token string
		want                           int
	}{
		{"admin API without the token", "GET", admin + "/v1/stats", "", "", 401},
		{"admin API with the token", "GET", admin + "/v1/stats", "", "admin-token", 200},
		{"signed webhook on -http, no token", "POST", admin + "/v1/webhooks/mailgun", mailgunEvent(key, "t1", "a@example.test"), "", 200},
		{"signed webhook on -webhooks-http", "POST", hooks + "/v1/webhooks/mailgun", mailgunEvent(key, "t2", "b@example.test"), "", 200},
		{"forged webhook", "POST", hooks + "/v1/webhooks/mailgun", mailgunEvent("wrong-key-000000000", "t3", "c@example.test"), "", 401},
		{"unconfigured provider", "POST", hooks + "/v1/webhooks/sendgrid", "[]", "", 404},
		{"admin API on -webhooks-http", "GET", hooks + "/v1/stats", "", "admin-token", 404},
		{"metrics on -webhooks-http", "GET", hooks + "/metrics", "", "", 404},
	}
	for _, tt := range tests {
		if got := do(tt.method, tt.url, tt.body, tt.token); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
	client := devClient(t, s)
	for to, want := range map[string]queue.Outcome{"a@example.test": queue.Suppressed, "b@example.test": queue.Suppressed, "c@example.test": queue.Queued} {
		r, err := client.Enqueue(context.Background(), queue.Email{Kind: queue.KindVerifyEmail, To: to, Data: map[string]string{"verify_url": "https://app.example/v"}})
		if err != nil || r.Outcome != want {
			t.Errorf("enqueue to %s: %+v, %v; want %s", to, r, err, want)
		}
	}
}

func TestBounceConfigErrors(t *testing.T) {
	base := []string{"-redis", "redis://127.0.0.1:1", "-smtp", "127.0.0.1:2525", "-smtp-tls", "none", "-http", "", "-from", "a@example.test"}
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{append(base, "-bounce-smtp", "127.0.0.1:0"), nil, "-bounce-domain"},
		{append(base, "-bounce-domain", "bounce.example.test"), nil, "secret"},
		{append(base, "-bounce-domain", "bounce.example.test"), map[string]string{"FLOODGATE_BOUNCE_SECRET": "short"}, "at least 16"},
		{append(base, "-webhooks-http", "127.0.0.1:0"), nil, "provider"},
		{base, map[string]string{"FLOODGATE_SENDGRID_KEY": "bm90IGEga2V5"}, "SendGrid key"},
		{append(base, "-bounce-domain", "bounce.example.test", "-bounce-prefix", "much-too-long"),
			map[string]string{"FLOODGATE_BOUNCE_SECRET": "0123456789abcdef0123"}, "prefix"},
	}
	for _, tt := range tests {
		cfg, err := parseConfig(tt.args, func(k string) string {
			if v, ok := tt.env[k]; ok {
				return v
			}
			return testEnv(k)
		}, io.Discard)
		if err == nil {
			err = run(context.Background(), cfg, io.Discard, io.Discard)
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("worker %v: error %v, want one mentioning %q", tt.args, err, tt.want)
		}
	}
}
