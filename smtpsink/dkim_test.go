package smtpsink

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

// testKeys is a signing key pair of each type and their published records.
type testKeys struct {
	rsa     *rsa.PrivateKey
	ed      ed25519.PrivateKey
	rsaTXT  string
	edTXT   string
	records *Keys
}

func newTestKeys(t testing.TB) testKeys {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := testKeys{
		rsa:    rk,
		ed:     edKey,
		rsaTXT: "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der),
		edTXT:  "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(edPub),
	}
	k.records = &Keys{}
	k.records.Add("rsa1._domainkey.example.org", k.rsaTXT)
	k.records.Add("ed1._domainkey.example.org", k.edTXT)
	return k
}

// sign adds a relaxed/relaxed DKIM-Signature to msg.
func sign(t *testing.T, msg []byte, selector string, signer crypto.Signer) []byte {
	t.Helper()
	return signB(t, msg, selector, signer)
}

func signB(t testing.TB, msg []byte, selector string, signer crypto.Signer) []byte {
	t.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, bytes.NewReader(msg), &dkim.SignOptions{
		Domain:                 "example.org",
		Selector:               selector,
		Signer:                 signer,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             []string{"From", "To", "Subject", "Date", "Message-ID", "Content-Type", "MIME-Version"},
	})
	if err != nil {
		t.Fatalf("dkim.Sign: %v", err)
	}
	return out.Bytes()
}

func TestDKIMVerification(t *testing.T) {
	keys := newTestKeys(t)
	s := startSink(t, Config{Keys: keys.records})
	base := newMessage("Reset your password", "<r1@example.org>", "Follow the link.")

	dual := sign(t, sign(t, base, "rsa1", keys.rsa), "ed1", keys.ed)
	tampered := bytes.Replace(sign(t, base, "rsa1", keys.rsa), []byte("Subject: Reset"), []byte("Subject: Reste"), 1)
	bodyTampered := bytes.Replace(sign(t, base, "ed1", keys.ed), []byte("Follow"), []byte("Ignore"), 1)
	unknown := sign(t, base, "gone", keys.ed)

	tests := []struct {
		name string
		msg  []byte
		want []DKIMResult // Error is checked for presence only
	}{
		{"unsigned", base, []DKIMResult{{Result: ResultNone}}},
		{"rsa", sign(t, base, "rsa1", keys.rsa), []DKIMResult{
			{Domain: "example.org", Selector: "rsa1", Algorithm: "rsa-sha256", Result: ResultPass},
		}},
		{"ed25519", sign(t, base, "ed1", keys.ed), []DKIMResult{
			{Domain: "example.org", Selector: "ed1", Algorithm: "ed25519-sha256", Result: ResultPass},
		}},
		{"dual, header order", dual, []DKIMResult{
			{Domain: "example.org", Selector: "ed1", Algorithm: "ed25519-sha256", Result: ResultPass},
			{Domain: "example.org", Selector: "rsa1", Algorithm: "rsa-sha256", Result: ResultPass},
		}},
		{"header tampered", tampered, []DKIMResult{
			{Domain: "example.org", Selector: "rsa1", Algorithm: "rsa-sha256", Result: ResultFail, Error: "x"},
		}},
		{"body tampered", bodyTampered, []DKIMResult{
			{Domain: "example.org", Selector: "ed1", Algorithm: "ed25519-sha256", Result: ResultFail, Error: "x"},
		}},
		{"no key", unknown, []DKIMResult{
			{Domain: "example.org", Selector: "gone", Algorithm: "ed25519-sha256", Result: ResultPermError, Error: "x"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Reset()
			mustSend(t, s, "r@example.com", tt.msg)
			got := s.Messages(Query{})[0].DKIM
			if len(got) != len(tt.want) {
				t.Fatalf("DKIM = %+v, want %+v", got, tt.want)
			}
			for i, w := range tt.want {
				g := got[i]
				if (g.Error != "") != (w.Error != "") {
					t.Errorf("DKIM[%d].Error = %q, want error %v", i, g.Error, w.Error != "")
				}
				g.Error, w.Error = "", ""
				if g != w {
					t.Errorf("DKIM[%d] = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestDKIMWithoutKeys(t *testing.T) {
	keys := newTestKeys(t)
	s := startSink(t, Config{})
	mustSend(t, s, "r@example.com", sign(t, newMessage("s", "", "b"), "ed1", keys.ed))
	got := s.Messages(Query{})[0].DKIM
	if len(got) != 1 || got[0].Result != ResultPermError || !strings.Contains(got[0].Error, "no key") {
		t.Errorf("DKIM with nil Keys = %+v, want permerror for want of a key", got)
	}
}

func TestDKIMKeyAddedWhileRunning(t *testing.T) {
	keys := newTestKeys(t)
	records := &Keys{}
	s := startSink(t, Config{Keys: records})
	msg := sign(t, newMessage("s", "", "b"), "ed1", keys.ed)
	mustSend(t, s, "r@example.com", msg)
	records.Add("ED1._domainkey.Example.org.", keys.edTXT)
	mustSend(t, s, "r@example.com", msg)
	msgs := s.Messages(Query{})
	if msgs[1].DKIM[0].Result != ResultPermError || msgs[0].DKIM[0].Result != ResultPass {
		t.Errorf("results before/after Add = %s/%s, want permerror/pass", msgs[1].DKIM[0].Result, msgs[0].DKIM[0].Result)
	}
}

func TestDKIMMalformedRecordIsPermError(t *testing.T) {
	keys := newTestKeys(t)
	records := &Keys{}
	records.Add("ed1._domainkey.example.org", "v=DKIM1; k=ed25519; p=not base64!")
	s := startSink(t, Config{Keys: records})
	mustSend(t, s, "r@example.com", sign(t, newMessage("s", "", "b"), "ed1", keys.ed))
	if got := s.Messages(Query{})[0].DKIM[0]; got.Result != ResultPermError {
		t.Errorf("DKIM with malformed key record = %+v, want permerror", got)
	}
}

func TestDKIMTooManySignatures(t *testing.T) {
	keys := newTestKeys(t)
	msg := newMessage("s", "", "b")
	for range maxSignatures + 1 {
		msg = sign(t, msg, "ed1", keys.ed)
	}
	got := verifyDKIM(msg, scanHeader(msg).dkim, keys.records)
	if len(got) != maxSignatures+1 {
		t.Fatalf("got %d results, want %d verified plus one permerror", len(got), maxSignatures+1)
	}
	for _, r := range got[:maxSignatures] {
		if r.Result != ResultPass {
			t.Errorf("result %+v, want pass", r)
		}
	}
	if last := got[maxSignatures]; last.Result != ResultPermError {
		t.Errorf("last result %+v, want permerror for the unverified rest", last)
	}
}

func TestParseKeys(t *testing.T) {
	keys := newTestKeys(t)
	edP := strings.TrimPrefix(keys.edTXT, "v=DKIM1; k=ed25519; p=")
	file := "# DKIM keys for the test domain\n" +
		"\n" +
		"rsa1._domainkey.example.org " + keys.rsaTXT + "\n" +
		"  ed1._domainkey.example.org.\t\"v=DKIM1; k=ed25519; \" \"p=" + edP + "\"\n" +
		"old._domainkey.example.org v=DKIM1; p=\n"
	k, err := ParseKeys(strings.NewReader(file))
	if err != nil {
		t.Fatalf("ParseKeys: %v", err)
	}
	if k.Len() != 3 {
		t.Errorf("Len() = %d, want 3", k.Len())
	}
	for name, want := range map[string]string{
		"rsa1._domainkey.example.org": keys.rsaTXT,
		"ED1._domainkey.example.org":  keys.edTXT,
		"old._domainkey.example.org":  "v=DKIM1; p=",
	} {
		got, err := k.lookupTXT(name)
		if err != nil || len(got) != 1 || got[0] != want {
			t.Errorf("lookupTXT(%q) = %q, %v; want %q", name, got, err, want)
		}
	}

	// The parsed records verify real signatures.
	s := startSink(t, Config{Keys: k})
	mustSend(t, s, "r@example.com", sign(t, sign(t, newMessage("s", "", "b"), "rsa1", keys.rsa), "ed1", keys.ed))
	for _, r := range s.Messages(Query{})[0].DKIM {
		if r.Result != ResultPass {
			t.Errorf("result with parsed keys: %+v, want pass", r)
		}
	}
}

func TestParseKeysErrors(t *testing.T) {
	tests := []struct {
		name, file, want string
	}{
		{"no value", "# c\ns._domainkey.example.org\n", "line 2: missing TXT value"},
		{"bad name", "example.org v=DKIM1; p=\n", `line 1: name "example.org" is not selector._domainkey.domain`},
		{"empty selector", "._domainkey.example.org v=DKIM1; p=\n", "line 1: name"},
		{"no p", "s._domainkey.example.org v=DKIM1; k=rsa\n", "line 1: record for s._domainkey.example.org: missing p= tag"},
		{"bad base64", "s._domainkey.example.org v=DKIM1; p=@@@\n", "line 1: record for s._domainkey.example.org: p= is not base64"},
		{"not rsa", "s._domainkey.example.org v=DKIM1; p=AAAA\n", "p= is not an RSA public key"},
		{"short ed25519", "s._domainkey.example.org v=DKIM1; k=ed25519; p=AAAA\n", "p= is 3 bytes, an Ed25519 key is 32"},
		{"unknown k", "s._domainkey.example.org v=DKIM1; k=dsa; p=AAAA\n", "unsupported key type k=dsa"},
		{"bad version", "s._domainkey.example.org v=DKIM2; p=\n", "v=DKIM2, want DKIM1"},
		{"v not first", "s._domainkey.example.org p=; v=DKIM1\n", "v= must be the first tag"},
		{"not a tag", "s._domainkey.example.org v=DKIM1; junk; p=\n", `tag "junk" is not name=value`},
		{"duplicate tag", "s._domainkey.example.org p=; p=\n", "duplicate tag p="},
		{"unterminated", "s._domainkey.example.org \"v=DKIM1; p=\n", "line 1: unterminated quoted string"},
		{"text after quote", "s._domainkey.example.org \"v=DKIM1; p=\" x\n", "text after quoted string"},
		{"duplicate name", "s._domainkey.example.org p=\n\nS._domainkey.example.org. p=\n", "line 3: S._domainkey.example.org. already defined on line 1"},
	}
	for _, tt := range tests {
		_, err := ParseKeys(strings.NewReader(tt.file))
		if !errors.Is(err, ErrBadKeys) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ParseKeys(%q) error = %v, want ErrBadKeys containing %q", tt.name, tt.file, err, tt.want)
		}
	}
}

func TestLoadKeys(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "keys.txt")
	if err := os.WriteFile(good, []byte("s._domainkey.example.org v=DKIM1; p=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, err := LoadKeys(good); err != nil || k.Len() != 1 {
		t.Errorf("LoadKeys(good) = %v, %v; want 1 key", k, err)
	}
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(bad, []byte("nonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeys(bad); !errors.Is(err, ErrBadKeys) || !strings.Contains(err.Error(), bad) {
		t.Errorf("LoadKeys(bad) error = %v, want ErrBadKeys naming the file", err)
	}
	if _, err := LoadKeys(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadKeys(missing) error = %v, want os.ErrNotExist", err)
	}
}

func TestNilKeysLookup(t *testing.T) {
	var k *Keys
	if _, err := k.lookupTXT("s._domainkey.example.org"); err == nil {
		t.Error("lookup in nil Keys succeeded")
	}
	if k.Len() != 0 {
		t.Errorf("nil Keys Len() = %d", k.Len())
	}
}
