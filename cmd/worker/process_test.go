package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/internal/delivery"
	"github.com/floodgate-dev/floodgate/internal/redisx"
	"github.com/floodgate-dev/floodgate/internal/testutil"
	"github.com/floodgate-dev/floodgate/queue"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// writeKeys writes an RSA-2048 PKCS#1 key and an Ed25519 PKCS#8 key as PEM
// files, and returns their paths and public records.
func writeKeys(t *testing.T) (rsaPath, edPath string, sinkKeys *smtpsink.Keys) {
	t.Helper()
	dir := t.TempDir()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, ek, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edDER, err := x509.MarshalPKCS8PrivateKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	rsaPath, edPath = filepath.Join(dir, "rsa.pem"), filepath.Join(dir, "ed25519.pem")
	os.WriteFile(rsaPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), 0o600)
	os.WriteFile(edPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER}), 0o600)
	sinkKeys, _ = smtpsink.ParseKeys(strings.NewReader(""))
	for sel, path := range map[string]string{"s1": rsaPath, "s2": edPath} {
		k, err := delivery.LoadKey(sel, path)
		if err != nil {
			t.Fatal(err)
		}
		sinkKeys.Add(sel+"._domainkey.example.test", k.DNSRecord())
	}
	return rsaPath, edPath, sinkKeys
}

// TestWorkerRealRedisPEMKeys runs the worker as a user would against a
// real Redis: DKIM keys from PEM files, dual RSA + Ed25519 signatures.
func TestWorkerRealRedisPEMKeys(t *testing.T) {
	r := testutil.StartRedis(t)
	rsaPath, edPath, keys := writeKeys(t)
	sink := testutil.StartSink(t, smtpsink.Config{Keys: keys})
	cfg, err := parseConfig([]string{"-redis", r.URL(), "-smtp", sink.SMTPAddr(), "-smtp-tls", "none", "-http", "127.0.0.1:0",
		"-dkim-domain", "example.test", "-dkim-key", "s1=" + rsaPath, "-dkim-key", "s2=" + edPath}, testEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	up, done := make(chan started, 1), make(chan error, 1)
	go func() { done <- runWith(ctx, cfg, io.Discard, io.Discard, up) }()
	<-up
	rdb, _ := redisx.Open(r.URL())
	defer rdb.Close()
	client, _ := queue.NewClient(queue.Config{Redis: rdb, Unguarded: true})
	defer client.Close()
	if _, err := client.Enqueue(ctx, queue.Email{Kind: queue.KindVerifyEmail, To: "bob@example.test", Data: map[string]string{"verify_url": "https://app.example/v/1"}}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	msgs, err := sink.Wait(wctx, 1, smtpsink.Query{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range msgs[0].DKIM {
		got[d.Selector+"/"+d.Algorithm] = d.Result
	}
	if got["s1/rsa-sha256"] != "pass" || got["s2/ed25519-sha256"] != "pass" || len(got) != 2 {
		t.Errorf("DKIM results %v, want s1 rsa and s2 ed25519 passing", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSIGTERM builds the real binary, starts it with -dev, and checks that
// SIGTERM shuts it down cleanly with exit status 0.
func TestSIGTERM(t *testing.T) {
	cmd := exec.Command(workerBinary(t), "-dev", "-http", "127.0.0.1:0", "-dev-smtp", "127.0.0.1:0", "-dev-sink-http", "127.0.0.1:0")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	ready := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "Ctrl-C stops everything") {
			ready = true
			break
		}
	}
	if !ready {
		cmd.Process.Kill()
		t.Fatal("worker -dev did not print its banner")
	}
	go io.Copy(io.Discard, stdout)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("worker did not exit within 30s of SIGTERM")
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// workerBinary builds this command once per test run.
func workerBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "floodgate-worker-test")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "worker")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}
