package verp

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Defaults and limits of [Config].
const (
	DefaultPrefix   = "bounces"
	DefaultLifetime = 7 * 24 * time.Hour
	// MaxPrefix keeps prefix, '+' and token within the 64 octets RFC 5321
	// allows a local part.
	MaxPrefix = 7
	// MinSecret is the shortest secret accepted, in bytes.
	MinSecret = 16
	// TokenLen is the length of a token in characters.
	TokenLen = 56
)

const (
	version  = 1
	rawLen   = 35
	macStart = 27
	macLen   = 8
	rcptLen  = 5
)

// enc is lower-case base32 without padding.
var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Errors of [Codec.Parse]; each wraps [ErrInvalid] except [ErrNotVERP].
var (
	// ErrNotVERP: the address is not at the bounce domain or has no token
	// under the prefix.
	ErrNotVERP = errors.New("verp: not a bounce address")
	// ErrInvalid is wrapped by every error about a token itself.
	ErrInvalid = errors.New("verp: invalid token")
	// ErrMalformed: the token does not decode.
	ErrMalformed = fmt.Errorf("%w: malformed", ErrInvalid)
	// ErrForged: the MAC does not verify under any secret.
	ErrForged = fmt.Errorf("%w: bad signature", ErrInvalid)
	// ErrExpired: the token verified but its lifetime is over.
	ErrExpired = fmt.Errorf("%w: expired", ErrInvalid)
)

// Reason names err for logs and metric labels: "not_bounce_address",
// "malformed", "forged", "expired" or "invalid".
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrNotVERP):
		return "not_bounce_address"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrForged):
		return "forged"
	case errors.Is(err, ErrExpired):
		return "expired"
	}
	return "invalid"
}

// Config configures a [Codec].
type Config struct {
	// Domain is the bounce domain, the right-hand side of every return
	// path; its MX is the bounce receiver. Required.
	Domain string
	// Prefix is the local part before '+'; default "bounces", at most
	// [MaxPrefix] characters.
	Prefix string
	// Secrets sign and verify tokens, each at least [MinSecret] bytes: the
	// first signs, every one verifies. Required.
	Secrets [][]byte
	// Lifetime is how long after minting a token is accepted; default 7
	// days, long enough for a relay's retries and the DSN that ends them.
	// It is kept in whole hours, rounded up.
	Lifetime time.Duration
	// Kinds are the email kinds [Codec.Parse] recognises by their tag;
	// a token of another kind parses with Kind "".
	Kinds []string
}

// Codec mints and verifies return paths. It is safe for concurrent use.
type Codec struct {
	domain   string
	prefix   string // with the '+'
	secrets  [][]byte
	lifetime time.Duration
	kinds    []string
}

// New returns a codec for cfg.
func New(cfg Config) (*Codec, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = DefaultLifetime
	}
	d := strings.TrimSuffix(strings.ToLower(cfg.Domain), ".")
	switch {
	case d == "" || !validDomain(d):
		return nil, fmt.Errorf("verp: bounce domain %q is not a domain name", cfg.Domain)
	case len(cfg.Prefix) > MaxPrefix || !validLocal(cfg.Prefix):
		return nil, fmt.Errorf("verp: prefix %q must be 1 to %d lower-case letters, digits, '-' or '_'", cfg.Prefix, MaxPrefix)
	case len(cfg.Secrets) == 0:
		return nil, errors.New("verp: a secret is required")
	}
	c := &Codec{domain: d, prefix: cfg.Prefix + "+", lifetime: cfg.Lifetime, kinds: cfg.Kinds}
	for i, s := range cfg.Secrets {
		if len(s) < MinSecret {
			return nil, fmt.Errorf("verp: secret %d is %d bytes, want at least %d", i+1, len(s), MinSecret)
		}
		c.secrets = append(c.secrets, bytes.Clone(s))
	}
	for _, key := range c.secrets {
		seen := map[[2]byte]string{}
		for _, k := range cfg.Kinds {
			t := kindTag(key, k)
			if o, dup := seen[t]; dup && o != k {
				return nil, fmt.Errorf("verp: kinds %q and %q share a tag under one secret; rotate the secret", o, k)
			}
			seen[t] = k
		}
	}
	return c, nil
}

// Domain returns the bounce domain, lower case.
func (c *Codec) Domain() string { return c.domain }

// Lifetime returns how long a token is accepted.
func (c *Codec) Lifetime() time.Duration { return c.lifetime }

// Address returns the return path of the email id of kind sent to the
// canonical recipient at now. id must be 32 hexadecimal digits (the ids
// floodgate's queue makes); any other id is an error, and the caller sends
// with its plain envelope sender.
func (c *Codec) Address(id, kind, canonical string, now time.Time) (string, error) {
	var raw [rawLen]byte
	raw[0] = version
	if len(id) != 32 {
		return "", fmt.Errorf("verp: email id %q is not 32 hex digits", id)
	}
	if _, err := hex.Decode(raw[1:17], []byte(id)); err != nil {
		return "", fmt.Errorf("verp: email id %q is not 32 hex digits", id)
	}
	exp := now.Add(c.lifetime)
	hours := (exp.Unix() + 3599) / 3600
	raw[17], raw[18], raw[19] = byte(hours>>16), byte(hours>>8), byte(hours)
	key := c.secrets[0]
	kt := kindTag(key, kind)
	copy(raw[20:22], kt[:])
	rt := rcptTag(key, canonical)
	copy(raw[22:27], rt[:])
	copy(raw[macStart:], mac(key, raw[:macStart]))
	return c.prefix + enc.EncodeToString(raw[:]) + "@" + c.domain, nil
}

// Token is what a verified return path says about its email.
type Token struct {
	// ID is the email id, 32 lower-case hex digits.
	ID string
	// Kind is the email's kind, or "" when it is not one of Config.Kinds.
	Kind string
	// Expires is when the token stops being accepted.
	Expires time.Time

	key  []byte
	rcpt [rcptLen]byte
}

// MatchRecipient reports whether canonical is the recipient the token's
// email was sent to.
func (t Token) MatchRecipient(canonical string) bool {
	if t.key == nil {
		return false
	}
	rt := rcptTag(t.key, canonical)
	return hmac.Equal(rt[:], t.rcpt[:])
}

// Parse verifies addr, a bounce address as given in RCPT TO (with or
// without angle brackets), at now. Errors: [ErrNotVERP] for an address that
// is not a bounce address, or one wrapping [ErrInvalid].
func (c *Codec) Parse(addr string, now time.Time) (Token, error) {
	addr = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(addr), "<"), ">")
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || !strings.EqualFold(strings.TrimSuffix(addr[at+1:], "."), c.domain) {
		return Token{}, ErrNotVERP
	}
	local := strings.ToLower(addr[:at])
	tok, ok := strings.CutPrefix(local, c.prefix)
	if !ok {
		return Token{}, ErrNotVERP
	}
	if len(tok) != TokenLen {
		return Token{}, ErrMalformed
	}
	var raw [rawLen]byte
	if n, err := enc.Decode(raw[:], []byte(tok)); err != nil || n != rawLen {
		return Token{}, ErrMalformed
	}
	if raw[0] != version {
		return Token{}, ErrMalformed
	}
	var key []byte
	for _, k := range c.secrets {
		if hmac.Equal(mac(k, raw[:macStart]), raw[macStart:]) {
			key = k
			break
		}
	}
	if key == nil {
		return Token{}, ErrForged
	}
	hours := int64(raw[17])<<16 | int64(raw[18])<<8 | int64(raw[19])
	t := Token{ID: hex.EncodeToString(raw[1:17]), Expires: time.Unix(hours*3600, 0).UTC(), key: key}
	copy(t.rcpt[:], raw[22:27])
	if !now.Before(t.Expires) {
		return Token{}, ErrExpired
	}
	for _, k := range c.kinds {
		if kt := kindTag(key, k); kt[0] == raw[20] && kt[1] == raw[21] {
			t.Kind = k
			break
		}
	}
	return t, nil
}

func mac(key, msg []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("floodgate-verp-mac\x00"))
	h.Write(msg)
	return h.Sum(nil)[:macLen]
}

func kindTag(key []byte, kind string) [2]byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("floodgate-verp-kind\x00"))
	h.Write([]byte(kind))
	var t [2]byte
	copy(t[:], h.Sum(nil))
	return t
}

func rcptTag(key []byte, canonical string) [rcptLen]byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("floodgate-verp-rcpt\x00"))
	h.Write([]byte(canonical))
	var t [rcptLen]byte
	copy(t[:], h.Sum(nil))
	return t
}

// validLocal reports whether s is a short dot-free atom of safe characters.
func validLocal(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return s != ""
}

// validDomain reports whether d is an ASCII host name of dot-separated
// labels.
func validDomain(d string) bool {
	if len(d) > 253 {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			b := l[i]
			if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-') {
				return false
			}
		}
	}
	return true
}

// ParseSecrets reads secrets from text: one per line, blank lines and
// lines starting with '#' ignored, the first one signing. Each line is
// taken as bytes, surrounding space trimmed.
func ParseSecrets(text string) ([][]byte, error) {
	var out [][]byte
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if len(l) < MinSecret {
			return nil, fmt.Errorf("verp: secret %d is %d bytes, want at least %d", len(out)+1, len(l), MinSecret)
		}
		out = append(out, []byte(l))
	}
	if len(out) == 0 {
		return nil, errors.New("verp: no secret")
	}
	return out, nil
}
