package delivery

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

const testDomain = "example.com"

func loadTestKey(t testing.TB, selector, file string) Key {
	t.Helper()
	k, err := LoadKey(selector, filepath.Join("testdata", "keys", file))
	if err != nil {
		t.Fatalf("LoadKey(%s): %v", file, err)
	}
	return k
}

func testKeys(t testing.TB) (rsaKey, edKey Key) {
	t.Helper()
	return loadTestKey(t, "rsa2025", "rsa2048_pkcs1.pem"), loadTestKey(t, "ed2025", "ed25519.pem")
}

// lookupFor serves each key's DNSRecord at selector._domainkey.testDomain.
func lookupFor(keys ...Key) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		for _, k := range keys {
			if name == k.Selector+"._domainkey."+testDomain {
				return []string{k.DNSRecord()}, nil
			}
		}
		return nil, fmt.Errorf("no TXT record for %s", name)
	}
}

// verifyGo verifies with go-msgauth and returns one error (nil = pass) per
// signature.
func verifyGo(t *testing.T, msg []byte, keys ...Key) []error {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: lookupFor(keys...)})
	if err != nil {
		t.Fatalf("dkim.VerifyWithOptions: %v", err)
	}
	errs := make([]error, len(vs))
	for i, v := range vs {
		errs[i] = v.Err
	}
	return errs
}

// dkimpyScript verifies every DKIM-Signature of each message with dkimpy.
// It reads {"records": {name: TXT}, "messages": [base64]} on stdin, answers
// DNS queries from records through dkimpy's dnsfunc hook, and prints one
// JSON list of booleans per message. One process serves many messages
// because importing dkimpy is slow.
const dkimpyScript = `
import base64, dkim, json, sys
req = json.load(sys.stdin)
records = req["records"]
def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return records.get(name.rstrip('.'), '').encode()
def verify(d, i):
    try:
        return bool(d.verify(idx=i, dnsfunc=dnsfunc))
    except dkim.ValidationError:
        return False
out = []
for m in req["messages"]:
    d = dkim.DKIM(base64.b64decode(m))
    n = sum(1 for k, v in d.headers if k.lower() == b'dkim-signature')
    out.append([verify(d, i) for i in range(n)])
print(json.dumps(out))
`

// verifyDkimpy runs the independent verifier dkimpy (python3-dkim) on msgs
// and returns, per message, whether each signature verifies.
func verifyDkimpy(t *testing.T, msgs [][]byte, keys ...Key) [][]bool {
	t.Helper()
	req := struct {
		Records  map[string]string `json:"records"`
		Messages [][]byte          `json:"messages"`
	}{Records: map[string]string{}, Messages: msgs}
	for _, k := range keys {
		req.Records[k.Selector+"._domainkey."+testDomain] = k.DNSRecord()
	}
	in, _ := json.Marshal(req)
	cmd := exec.Command("/usr/bin/python3", "-c", dkimpyScript)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, stderr.String())
	}
	var res [][]bool
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(msgs) {
		t.Fatalf("dkimpy output %q: %v", out, err)
	}
	return res
}

// signatureTags parses the DKIM-Signature fields of msg.
func signatureTags(t *testing.T, msg []byte) []map[string]string {
	t.Helper()
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	unfolded := strings.ReplaceAll(string(head), "\r\n ", " ")
	var out []map[string]string
	for _, line := range strings.Split(unfolded, "\r\n") {
		name, value, _ := strings.Cut(line, ":")
		if !strings.EqualFold(name, "DKIM-Signature") {
			continue
		}
		tags := map[string]string{}
		for _, kv := range strings.Split(value, ";") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			tags[strings.TrimSpace(k)] = strings.Join(strings.Fields(v), "")
		}
		out = append(out, tags)
	}
	return out
}

func signedTestMessage(t *testing.T, keys ...Key) []byte {
	t.Helper()
	m := goldenCases()["multipart"]
	raw, err := Build(&m)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(testDomain, keys)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	signed, err := s.Sign(raw)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if !bytes.HasSuffix(signed, raw) {
		t.Fatal("Sign changed the message instead of prepending")
	}
	return signed
}

func TestSignVerify(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	tests := []struct {
		name string
		keys []Key
	}{
		{"rsa", []Key{rsaKey}},
		{"ed25519", []Key{edKey}},
		{"dual", []Key{rsaKey, edKey}},
	}
	signed := make([][]byte, len(tests))
	for i, tt := range tests {
		signed[i] = signedTestMessage(t, tt.keys...)
	}
	py := verifyDkimpy(t, signed, rsaKey, edKey)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signed := signed[i]
			checkWire(t, signed)

			tags := signatureTags(t, signed)
			if len(tags) != len(tt.keys) {
				t.Fatalf("%d DKIM-Signature fields, want %d", len(tags), len(tt.keys))
			}
			for i, tg := range tags {
				k := tt.keys[i]
				if tg["c"] != "relaxed/relaxed" {
					t.Errorf("c=%q, want relaxed/relaxed", tg["c"])
				}
				if _, ok := tg["l"]; ok {
					t.Errorf("signature has l=%s", tg["l"])
				}
				if tg["a"] != k.Algorithm() || tg["s"] != k.Selector || tg["d"] != testDomain {
					t.Errorf("a=%s s=%s d=%s, want %s %s %s", tg["a"], tg["s"], tg["d"], k.Algorithm(), k.Selector, testDomain)
				}
				h := strings.ToLower(tg["h"])
				count := map[string]int{}
				for _, f := range strings.Split(h, ":") {
					count[f]++
				}
				// Each of these occurs once in the message, so listing it
				// twice over-signs it.
				for _, f := range []string{"from", "to", "subject", "date", "message-id", "content-type", "mime-version"} {
					if count[f] < 2 {
						t.Errorf("h=%s does not over-sign %s", h, f)
					}
				}
				for _, f := range []string{"list-unsubscribe", "list-unsubscribe-post"} {
					if count[f] == 0 {
						t.Errorf("h=%s does not sign %s (RFC 8058)", h, f)
					}
				}
			}

			for i, err := range verifyGo(t, signed, tt.keys...) {
				if err != nil {
					t.Errorf("go-msgauth: signature %d: %v", i, err)
				}
			}
			res := py[i]
			if len(res) != len(tt.keys) {
				t.Fatalf("dkimpy saw %d signatures, want %d", len(res), len(tt.keys))
			}
			for i, ok := range res {
				if !ok {
					t.Errorf("dkimpy: signature %d (%s) does not verify", i, tt.keys[i].Algorithm())
				}
			}
		})
	}
}

func TestSignTampering(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	signed := signedTestMessage(t, rsaKey, edKey)
	sigEnd := bytes.Index(signed, []byte("\r\nDate:")) + 2
	tests := []struct {
		name   string
		tamper func([]byte) []byte
	}{
		{"second Subject after signatures", func(m []byte) []byte {
			return concat(m[:sigEnd], []byte("Subject: Urgent: verify your account\r\n"), m[sigEnd:])
		}},
		{"second From at the end of the header", func(m []byte) []byte {
			return bytes.Replace(m, []byte("Content-Type: multipart"), []byte("From: attacker@evil.example\r\nContent-Type: multipart"), 1)
		}},
		{"added Cc", func(m []byte) []byte {
			return concat(m[:sigEnd], []byte("Cc: victim@example.net\r\n"), m[sigEnd:])
		}},
		{"modified To", func(m []byte) []byte {
			return bytes.Replace(m, []byte("<zoe@example.org>"), []byte("<eve@example.org>"), 1)
		}},
		{"modified body", func(m []byte) []byte {
			return bytes.Replace(m, []byte("Bonjour"), []byte("Bonsoir"), 1)
		}},
		{"appended body", func(m []byte) []byte {
			return concat(m, []byte("extra line\r\n"))
		}},
	}
	msgs := make([][]byte, len(tests))
	for i, tt := range tests {
		msgs[i] = tt.tamper(bytes.Clone(signed))
		if bytes.Equal(msgs[i], signed) {
			t.Fatalf("%s: tampering did not change the message", tt.name)
		}
	}
	py := verifyDkimpy(t, msgs, rsaKey, edKey)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for j, err := range verifyGo(t, msgs[i], rsaKey, edKey) {
				if err == nil {
					t.Errorf("go-msgauth: signature %d still verifies", j)
				}
			}
			if len(py[i]) != 2 {
				t.Errorf("dkimpy saw %d signatures, want 2", len(py[i]))
			}
			for j, ok := range py[i] {
				if ok {
					t.Errorf("dkimpy: signature %d still verifies", j)
				}
			}
		})
	}
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestSignRelaxedSurvivesRewrapping(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	signed := signedTestMessage(t, rsaKey, edKey)
	// Relays may refold headers and change whitespace runs; relaxed
	// canonicalization must absorb that.
	msg := bytes.Replace(signed, []byte("MIME-Version: 1.0"), []byte("MIME-Version:    1.0 "), 1)
	for i, err := range verifyGo(t, msg, rsaKey, edKey) {
		if err != nil {
			t.Errorf("signature %d: %v", i, err)
		}
	}
}

func TestSignConcurrent(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	s, err := NewSigner(testDomain, []Key{rsaKey, edKey})
	if err != nil {
		t.Fatal(err)
	}
	m := baseMessage()
	raw, _ := Build(&m)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			signed, err := s.Sign(raw)
			if err == nil {
				var vs []*dkim.Verification
				vs, err = dkim.VerifyWithOptions(bytes.NewReader(signed), &dkim.VerifyOptions{LookupTXT: lookupFor(rsaKey, edKey)})
				for _, v := range vs {
					err = errors.Join(err, v.Err)
				}
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestLoadKey(t *testing.T) {
	for _, tt := range []struct {
		file, alg string
	}{
		{"rsa2048_pkcs1.pem", "rsa-sha256"},
		{"rsa2048_pkcs8.pem", "rsa-sha256"},
		{"ed25519.pem", "ed25519-sha256"},
	} {
		k := loadTestKey(t, "sel", tt.file)
		if got := k.Algorithm(); got != tt.alg {
			t.Errorf("LoadKey(%s).Algorithm() = %q, want %q", tt.file, got, tt.alg)
		}
	}
	pkcs1, pkcs8 := loadTestKey(t, "s", "rsa2048_pkcs1.pem"), loadTestKey(t, "s", "rsa2048_pkcs8.pem")
	if pkcs1.DNSRecord() != pkcs8.DNSRecord() {
		t.Error("PKCS#1 and PKCS#8 encodings of one key give different DNS records")
	}
}

func TestLoadKeyErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, file, want string
	}{
		{"rsa 1024", "testdata/keys/rsa1024.pem", "1024 bits"},
		{"garbage", "testdata/keys/garbage.pem", "parse PKCS#8"},
		{"not PEM", "testdata/keys/README", "no PEM block"},
		{"missing", filepath.Join(dir, "nope.pem"), "no such file"},
		{"encrypted PKCS#8", "testdata/keys/encrypted_pkcs8.pem", "encrypted"},
		{"encrypted PKCS#1", "testdata/keys/encrypted_pkcs1.pem", "encrypted"},
		{"ecdsa", "testdata/keys/ecdsa.pem", "unsupported key type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadKey("sel", tt.file)
			if err == nil {
				t.Fatalf("LoadKey(%s) = nil error", tt.file)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.file) || !strings.Contains(msg, tt.want) {
				t.Errorf("LoadKey(%s) = %q, want the path and %q", tt.file, msg, tt.want)
			}
			// No key material in the error.
			if data, rerr := os.ReadFile(tt.file); rerr == nil {
				if block, _ := pem.Decode(data); block != nil {
					b64 := base64.StdEncoding.EncodeToString(block.Bytes)
					if strings.Contains(msg, b64[:16]) || strings.Contains(msg, b64[len(b64)-16:]) {
						t.Errorf("error %q contains key material", msg)
					}
				}
			}
		})
	}
	if _, err := ParseKeyPEM("bad selector!", []byte("x")); err == nil || !strings.Contains(err.Error(), "selector") {
		t.Errorf("ParseKeyPEM with a bad selector = %v", err)
	}
}

func TestGenerateKeyAndDNSRecord(t *testing.T) {
	ed, err := GenerateKey("dev", "ed25519")
	if err != nil {
		t.Fatal(err)
	}
	rec := ed.DNSRecord()
	p, ok := strings.CutPrefix(rec, "v=DKIM1; k=ed25519; p=")
	if !ok {
		t.Fatalf("DNSRecord() = %q", rec)
	}
	raw, err := base64.StdEncoding.DecodeString(p)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		t.Fatalf("ed25519 p= decodes to %d bytes (%v), want the raw 32-byte key", len(raw), err)
	}
	r, err := GenerateKey("devrsa", "rsa")
	if err != nil {
		t.Fatal(err)
	}
	if bits := r.Signer.(*rsa.PrivateKey).N.BitLen(); bits != 2048 || !strings.HasPrefix(r.DNSRecord(), "v=DKIM1; k=rsa; p=MII") {
		t.Errorf("rsa key %d bits, record %q", bits, r.DNSRecord())
	}
	if _, err := GenerateKey("dev", "dsa"); err == nil {
		t.Error("GenerateKey(dsa) = nil error")
	}
	// A generated key signs and verifies like a loaded one.
	signed := signedTestMessage(t, r, ed)
	for i, err := range verifyGo(t, signed, r, ed) {
		if err != nil {
			t.Errorf("signature %d: %v", i, err)
		}
	}
}

func TestNewSignerErrors(t *testing.T) {
	rsaKey, edKey := testKeys(t)
	small := loadRaw1024(t)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tests := []struct {
		name   string
		domain string
		keys   []Key
	}{
		{"no keys", testDomain, nil},
		{"bad domain", "exa mple.com", []Key{rsaKey}},
		{"duplicate selector", testDomain, []Key{rsaKey, {Selector: rsaKey.Selector, Signer: edKey.Signer}}},
		{"empty selector", testDomain, []Key{{Signer: edKey.Signer}}},
		{"nil signer", testDomain, []Key{{Selector: "x"}}},
		{"small rsa", testDomain, []Key{{Selector: "x", Signer: small}}},
		{"ecdsa", testDomain, []Key{{Selector: "x", Signer: ec}}},
	}
	for _, tt := range tests {
		if _, err := NewSigner(tt.domain, tt.keys); err == nil {
			t.Errorf("NewSigner(%s) = nil error", tt.name)
		}
	}
	s, _ := NewSigner(testDomain, []Key{edKey})
	if _, err := s.Sign([]byte("no header terminator")); err == nil {
		t.Error("Sign of a message without a header section = nil error")
	}
}

// loadRaw1024 parses the 1024-bit test key without LoadKey, which refuses it.
func loadRaw1024(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	data, err := os.ReadFile("testdata/keys/rsa1024.pem")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func BenchmarkSign(b *testing.B) {
	rsaKey, edKey := testKeys(b)
	m := goldenCases()["multipart"]
	raw, err := Build(&m)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		keys []Key
	}{
		{"rsa", []Key{rsaKey}},
		{"ed25519", []Key{edKey}},
		{"both", []Key{rsaKey, edKey}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := NewSigner(testDomain, bc.keys)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Sign(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
