package deploy

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/floodgate-dev/floodgate/internal/delivery"
	"github.com/floodgate-dev/floodgate/internal/keyfile"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// setupScript returns the one-time setup commands documented in the header
// comment of docker-compose.yml: the indented block after "One-time setup".
func setupScript(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var script []string
	seen := false
	for _, line := range strings.Split(string(b), "\n") {
		text, ok := strings.CutPrefix(line, "#")
		if !ok {
			break
		}
		if strings.Contains(text, "One-time setup") {
			seen = true
			continue
		}
		if !seen {
			continue
		}
		if cmd, ok := strings.CutPrefix(text, "   "); ok && strings.TrimSpace(cmd) != "" {
			script = append(script, cmd)
			continue
		}
		if strings.TrimSpace(text) != "" && len(script) > 0 {
			break // the prose after the block
		}
	}
	if len(script) == 0 {
		t.Fatal(`docker-compose.yml: no indented setup commands after "One-time setup" in the header comment`)
	}
	return strings.Join(script, "\n") + "\n"
}

// hostPath maps a path inside service s's container to the file under dir
// (standing for the compose project directory) that s's bind mounts expose
// there.
func hostPath(t *testing.T, dir string, s service, containerPath string) string {
	t.Helper()
	for _, v := range s.Volumes {
		rel, ok := strings.CutPrefix(containerPath, strings.TrimSuffix(v.Target, "/")+"/")
		if ok && strings.HasPrefix(v.Source, "./") {
			return filepath.Join(dir, filepath.FromSlash(v.Source), filepath.FromSlash(rel))
		}
	}
	t.Fatalf("no bind mount of the project directory holds %s (volumes %v)", containerPath, s.Volumes)
	return ""
}

// TestDocumentedKeySetup runs the documented key commands with the real
// openssl and checks that the worker could sign with the key, the sink
// accepts the record, and the record verifies the signature.
func TestDocumentedKeySetup(t *testing.T) {
	script := setupScript(t)
	dir := t.TempDir()
	cmd := exec.Command("/bin/sh", "-eu", "-c", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("setup commands failed: %v\n%s\nscript:\n%s", err, out, script)
	}

	// Where the services read the files the commands made.
	c := loadCompose(t)
	w := c.Services["worker"]
	_, wargs := binary(t, "worker", w)
	wflags := flags(t, wargs)
	if len(wflags["-dkim-key"]) != 1 || len(wflags["-dkim-domain"]) != 1 {
		t.Fatalf("worker flags %q: want one -dkim-key and one -dkim-domain", wargs)
	}
	selector, keyPath, _ := strings.Cut(wflags["-dkim-key"][0], "=")
	wantName := selector + "._domainkey." + wflags["-dkim-domain"][0]
	sink := c.Services["smtpsink"]
	_, sargs := binary(t, "smtpsink", sink)
	sflags := flags(t, sargs)
	if len(sflags["-dkim-keys"]) != 1 {
		t.Fatalf("smtpsink flags %q: want one -dkim-keys", sargs)
	}

	// The key the worker loads with -dkim-key.
	pemFile := hostPath(t, dir, w, keyPath)
	raw, err := os.ReadFile(pemFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte("BEGIN PRIVATE KEY")) {
		t.Errorf("%s is not a PKCS#8 PEM key", pemFile)
	}
	// The worker's own loader and signer, as -dkim-key and -dkim-domain use them.
	key, err := delivery.LoadKey(selector, pemFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := key.Signer.(ed25519.PrivateKey); !ok {
		t.Errorf("%s holds a %T, want the Ed25519 key the comment promises", pemFile, key.Signer)
	}
	signer, err := delivery.NewSigner(wflags["-dkim-domain"][0], []delivery.Key{key})
	if err != nil {
		t.Fatal(err)
	}
	// The containers run as uid 65532, not as the file's owner.
	if info, err := os.Stat(pemFile); err != nil {
		t.Error(err)
	} else if info.Mode().Perm()&0o004 == 0 {
		t.Errorf("%s mode = %v; the containers' user cannot read it", pemFile, info.Mode())
	}

	// The record smtpsink loads with -dkim-keys.
	txtFile := hostPath(t, dir, sink, sflags["-dkim-keys"][0])
	keys, err := smtpsink.LoadKeys(txtFile)
	if err != nil {
		t.Fatal(err)
	}
	if keys.Len() != 1 {
		t.Fatalf("%s holds %d records, want 1", txtFile, keys.Len())
	}
	line, err := os.ReadFile(txtFile)
	if err != nil {
		t.Fatal(err)
	}
	name, record, _ := strings.Cut(strings.TrimSpace(string(line)), " ")
	if name != wantName {
		t.Errorf("%s names %q, want %q (the worker's -dkim-key selector and -dkim-domain)", txtFile, name, wantName)
	}

	// Sign as the worker does and verify against the record.
	msg := "From: no-reply@example.test\r\nTo: alice@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
	signed, err := signer.Sign([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(signed), &dkim.VerifyOptions{
		LookupTXT: func(domain string) ([]string, error) {
			if domain != name {
				t.Errorf("verifier looked up %q, but %s publishes %q", domain, txtFile, name)
			}
			return []string{record}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("verifying a message signed with keys/s1.pem against keys/dkim.txt: %+v", vs)
	}

	// worker.env: the admin token and the two keys, as the worker loads them.
	env := map[string]string{}
	raw, err = os.ReadFile(filepath.Join(dir, "worker.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	if len(env["FLOODGATE_ADMIN_TOKEN"]) < 32 {
		t.Errorf("worker.env: admin token %d characters, want a random one", len(env["FLOODGATE_ADMIN_TOKEN"]))
	}
	sec, err := keyfile.Load(func(k string) string { return env[k] }, "", "", true)
	if err != nil {
		t.Fatalf("worker.env keys: %v", err)
	}
	if len(sec.HashKey) != 32 || sec.Keyring == nil {
		t.Errorf("worker.env keys: hash key %d bytes, keyring %v", len(sec.HashKey), sec.Keyring)
	}
}
