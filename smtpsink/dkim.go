package smtpsink

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/emersion/go-msgauth/dkim"
)

// DKIM results, in the vocabulary of RFC 8601 section 2.7.1.
const (
	ResultPass      = "pass"
	ResultFail      = "fail"
	ResultTempError = "temperror"
	ResultPermError = "permerror"
	ResultNone      = "none"
)

// maxSignatures bounds the signatures verified per message, so a message
// stuffed with signatures cannot buy unbounded CPU.
const maxSignatures = 8

// DKIMResult is the outcome of verifying one DKIM-Signature.
type DKIMResult struct {
	// Domain is the signing domain (d=).
	Domain string `json:"domain"`
	// Selector is the key selector (s=).
	Selector string `json:"selector"`
	// Algorithm is the signing algorithm (a=), such as rsa-sha256 or ed25519-sha256.
	Algorithm string `json:"algorithm"`
	// Result is one of pass, fail, temperror, permerror or none.
	Result string `json:"result"`
	// Error says why the result is not pass; empty on pass and none.
	Error string `json:"error"`
}

// ErrBadKeys is wrapped by the errors of [ParseKeys] and [LoadKeys].
var ErrBadKeys = errors.New("smtpsink: bad DKIM keys")

// Keys holds DKIM public key records by DNS name
// (selector._domainkey.domain), standing in for DNS during verification.
// The zero value holds no keys and is ready to use. Keys is safe for
// concurrent use, so a test may publish a key while the server runs.
type Keys struct {
	mu  sync.RWMutex
	txt map[string]string
}

// Add publishes txt, a DKIM key record such as "v=DKIM1; k=ed25519; p=…",
// under name, replacing any earlier record for it. Names are compared
// case-insensitively and a trailing dot is ignored. Add does not check txt,
// so a test can publish a malformed record on purpose.
func (k *Keys) Add(name, txt string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.txt == nil {
		k.txt = make(map[string]string)
	}
	k.txt[normalizeKeyName(name)] = txt
}

// Len returns the number of names holding a record.
func (k *Keys) Len() int {
	if k == nil {
		return 0
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.txt)
}

// lookupTXT answers the verifier's TXT queries. A missing name is reported
// as a permanent DNS "not found", which go-msgauth turns into permerror
// ("no key for signature"), as a real resolver's NXDOMAIN would be.
func (k *Keys) lookupTXT(name string) ([]string, error) {
	if k != nil {
		k.mu.RLock()
		txt, ok := k.txt[normalizeKeyName(name)]
		k.mu.RUnlock()
		if ok {
			return []string{txt}, nil
		}
	}
	return nil, &net.DNSError{Err: "no such key in the sink's keys", Name: name, IsNotFound: true}
}

func normalizeKeyName(name string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
}

// LoadKeys reads a keys file; see [ParseKeys] for its format.
func LoadKeys(path string) (*Keys, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load DKIM keys: %w", err)
	}
	defer f.Close()
	k, err := ParseKeys(f)
	if err != nil {
		return nil, fmt.Errorf("load DKIM keys %s: %w", path, err)
	}
	return k, nil
}

// ParseKeys reads DKIM key records, one per line:
//
//	# comment
//	s1._domainkey.example.com v=DKIM1; k=rsa; p=MIIBIjANBgkq…
//	s2._domainkey.example.com "v=DKIM1; k=ed25519; " "p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
//
// The value is the rest of the line, or a sequence of double-quoted strings
// joined as DNS joins the strings of one TXT record. Blank lines and lines
// starting with '#' are skipped. Each record must carry a p= tag whose key
// parses for its k= type (rsa, the default, or ed25519); an empty p= is a
// revoked key and is accepted. A name may appear once. Errors wrap
// [ErrBadKeys] and give the line number.
func ParseKeys(r io.Reader) (*Keys, error) {
	k := &Keys{txt: make(map[string]string)}
	firstLine := make(map[string]int)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, err := parseKeyLine(line)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBadKeys, n, err)
		}
		norm := normalizeKeyName(name)
		if first, dup := firstLine[norm]; dup {
			return nil, fmt.Errorf("%w: line %d: %s already defined on line %d", ErrBadKeys, n, name, first)
		}
		firstLine[norm] = n
		k.txt[norm] = value
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: after line %d: %v", ErrBadKeys, n, err)
	}
	return k, nil
}

func parseKeyLine(line string) (name, value string, err error) {
	name, rest := line, ""
	if i := strings.IndexAny(line, " \t"); i >= 0 {
		name, rest = line[:i], strings.TrimSpace(line[i+1:])
	}
	sel, domain, ok := strings.Cut(strings.ToLower(strings.TrimSuffix(name, ".")), "._domainkey.")
	if !ok || sel == "" || domain == "" {
		return "", "", fmt.Errorf("name %q is not selector._domainkey.domain", name)
	}
	if rest == "" {
		return "", "", fmt.Errorf("missing TXT value after %s", name)
	}
	if rest[0] == '"' {
		if rest, err = unquoteTXT(rest); err != nil {
			return "", "", err
		}
	}
	if err := checkKeyRecord(rest); err != nil {
		return "", "", fmt.Errorf("record for %s: %v", name, err)
	}
	return name, rest, nil
}

// unquoteTXT joins a sequence of "…" strings separated by blanks, with \"
// and \\ escapes, as in a zone file.
func unquoteTXT(s string) (string, error) {
	var b strings.Builder
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		if s[0] != '"' {
			return "", fmt.Errorf("text after quoted string: %q", s)
		}
		i := 1
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
			}
			b.WriteByte(s[i])
		}
		if i == len(s) {
			return "", errors.New("unterminated quoted string")
		}
		s = s[i+1:]
	}
	return b.String(), nil
}

// checkKeyRecord checks a key record (RFC 6376 section 3.6.1) the way a
// verifier will read it, so a bad file fails at start-up and not as a
// permerror on every message.
func checkKeyRecord(txt string) error {
	tags := make(map[string]string)
	for i, part := range strings.Split(txt, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		name, value, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return fmt.Errorf("tag %q is not name=value", strings.TrimSpace(part))
		}
		if _, dup := tags[name]; dup {
			return fmt.Errorf("duplicate tag %s=", name)
		}
		if name == "v" && i != 0 {
			return errors.New("v= must be the first tag")
		}
		tags[name] = stripFWS(value)
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return fmt.Errorf("v=%s, want DKIM1", v)
	}
	p, ok := tags["p"]
	if !ok {
		return errors.New("missing p= tag")
	}
	if p == "" {
		return nil // revoked
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return fmt.Errorf("p= is not base64: %v", err)
	}
	switch kt := tags["k"]; kt {
	case "", "rsa":
		if _, err := x509.ParsePKIXPublicKey(der); err != nil {
			if _, err2 := x509.ParsePKCS1PublicKey(der); err2 != nil {
				return fmt.Errorf("p= is not an RSA public key: %v", err)
			}
		}
	case "ed25519":
		if len(der) != 32 {
			return fmt.Errorf("p= is %d bytes, an Ed25519 key is 32", len(der))
		}
	default:
		return fmt.Errorf("unsupported key type k=%s", kt)
	}
	return nil
}

// verifyDKIM checks every signature of raw against keys. sigs are the
// DKIM-Signature values found by scanHeader, in header order.
func verifyDKIM(raw []byte, sigs []string, keys *Keys) []DKIMResult {
	if len(sigs) == 0 {
		// go-msgauth would return no error and no results; skipping it
		// saves reading the header a second time.
		return []DKIMResult{{Result: ResultNone}}
	}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(raw), &dkim.VerifyOptions{
		LookupTXT:        keys.lookupTXT,
		MaxVerifications: maxSignatures,
	})
	if len(verifs) == 0 {
		// The header could not be read at all (no end of header, for one).
		msg := "no verification"
		if err != nil {
			msg = err.Error()
		}
		out := make([]DKIMResult, 0, min(len(sigs), maxSignatures))
		for _, s := range sigs[:min(len(sigs), maxSignatures)] {
			t := parseDKIMTags(s)
			out = append(out, DKIMResult{Domain: t.domain, Selector: t.selector, Algorithm: t.algorithm, Result: ResultPermError, Error: msg})
		}
		return out
	}

	out := make([]DKIMResult, 0, len(verifs)+1)
	for i, v := range verifs {
		var r DKIMResult
		if i < len(sigs) {
			t := parseDKIMTags(sigs[i])
			r = DKIMResult{Domain: t.domain, Selector: t.selector, Algorithm: t.algorithm}
		}
		if v.Domain != "" {
			r.Domain = v.Domain
		}
		switch {
		case v.Err == nil && err != nil && !errors.Is(err, dkim.ErrTooManySignatures):
			// go-msgauth clears the error of the signature whose check
			// broke and returns it separately; which one is unknown.
			r.Result, r.Error = ResultPermError, err.Error()
		case v.Err == nil:
			r.Result = ResultPass
		case dkim.IsTempFail(v.Err):
			r.Result, r.Error = ResultTempError, v.Err.Error()
		case dkim.IsPermFail(v.Err):
			r.Result, r.Error = ResultPermError, v.Err.Error()
		default:
			r.Result, r.Error = ResultFail, v.Err.Error()
		}
		out = append(out, r)
	}
	if errors.Is(err, dkim.ErrTooManySignatures) {
		out = append(out, DKIMResult{Result: ResultPermError, Error: fmt.Sprintf("more than %d signatures; the rest were not verified", maxSignatures)})
	}
	return out
}

// verifier runs DKIM verifications on a few long-lived goroutines, one per
// CPU. A connection's goroutine is new and small; the verifier's deep calls
// (RSA arithmetic, go-msgauth's regexps) would grow its stack for every
// message, which costs more than handing the work over. It also keeps
// verification from using more CPUs than there are.
type verifier struct {
	keys *Keys
	jobs chan verifyJob // nil until start: verify runs on the caller
	wg   sync.WaitGroup
}

type verifyJob struct {
	raw  []byte
	sigs []string
	out  chan<- []DKIMResult
}

func (v *verifier) start(workers int) {
	v.jobs = make(chan verifyJob)
	for range workers {
		v.wg.Go(func() {
			for j := range v.jobs {
				j.out <- verifyDKIM(j.raw, j.sigs, v.keys)
			}
		})
	}
}

// stop ends the workers once no verify call can start any more.
func (v *verifier) stop() {
	if v.jobs != nil {
		close(v.jobs)
		v.wg.Wait()
	}
}

func (v *verifier) verify(raw []byte, sigs []string) []DKIMResult {
	if len(sigs) == 0 || v.jobs == nil {
		return verifyDKIM(raw, sigs, v.keys)
	}
	out := make(chan []DKIMResult, 1)
	v.jobs <- verifyJob{raw: raw, sigs: sigs, out: out}
	return <-out
}
