package delivery

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// minRSABits is the smallest RSA key accepted (RFC 8301 section 3.2 requires
// verifiers to accept 1024 bits, but such keys are factorable today).
const minRSABits = 2048

// Key is a DKIM private key and the selector its public half is published
// under (selector._domainkey.domain). Signer is an *rsa.PrivateKey of at
// least 2048 bits or an ed25519.PrivateKey.
type Key struct {
	Selector string
	Signer   crypto.Signer
}

// LoadKey reads a PEM private key (PKCS#1 RSA, or PKCS#8 RSA or Ed25519) from
// pemPath. Errors name the file and never include key material.
func LoadKey(selector, pemPath string) (Key, error) {
	data, err := os.ReadFile(pemPath)
	if err != nil {
		return Key{}, fmt.Errorf("delivery: DKIM key %s: %w", pemPath, err)
	}
	k, err := parseKeyPEM(selector, data)
	if err != nil {
		return Key{}, fmt.Errorf("delivery: DKIM key %s: %w", pemPath, err)
	}
	return k, nil
}

// ParseKeyPEM is [LoadKey] for PEM bytes already in memory.
func ParseKeyPEM(selector string, pemBytes []byte) (Key, error) {
	k, err := parseKeyPEM(selector, pemBytes)
	if err != nil {
		return Key{}, fmt.Errorf("delivery: DKIM key for selector %q: %w", selector, err)
	}
	return k, nil
}

func parseKeyPEM(selector string, data []byte) (Key, error) {
	if !isHostname(selector) {
		return Key{}, fmt.Errorf("invalid selector %q: want DNS labels", selector)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return Key{}, errors.New("no PEM block found")
	}
	if block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
		return Key{}, errors.New("encrypted private keys are not supported; store the key unencrypted with restricted file permissions")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return Key{}, fmt.Errorf("parse PKCS#1 RSA key: %w", err)
		}
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return Key{}, fmt.Errorf("parse PKCS#8 key: %w", err)
		}
	default:
		return Key{}, fmt.Errorf("unsupported PEM block %q: want \"PRIVATE KEY\" or \"RSA PRIVATE KEY\"", block.Type)
	}
	return newKey(selector, key)
}

func newKey(selector string, key any) (Key, error) {
	signer, ok := key.(crypto.Signer)
	if !ok {
		return Key{}, fmt.Errorf("unsupported key type %T: want RSA or Ed25519", key)
	}
	if err := checkSigner(signer); err != nil {
		return Key{}, err
	}
	return Key{Selector: selector, Signer: signer}, nil
}

// checkSigner accepts RSA keys of at least minRSABits and Ed25519 keys. It
// looks at the public half only, so a signer backed by an HSM or KMS works.
func checkSigner(s crypto.Signer) error {
	switch pub := s.Public().(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < minRSABits {
			return fmt.Errorf("RSA key has %d bits, want at least %d", bits, minRSABits)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("unsupported key type %T: want RSA or Ed25519", pub)
	}
}

// GenerateKey returns a fresh key for development: alg is "rsa" (2048 bits)
// or "ed25519".
func GenerateKey(selector string, alg string) (Key, error) {
	if !isHostname(selector) {
		return Key{}, fmt.Errorf("delivery: generate DKIM key: invalid selector %q", selector)
	}
	var (
		key any
		err error
	)
	switch alg {
	case "rsa":
		key, err = rsa.GenerateKey(rand.Reader, minRSABits)
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return Key{}, fmt.Errorf("delivery: generate DKIM key: unknown algorithm %q: want rsa or ed25519", alg)
	}
	if err != nil {
		return Key{}, fmt.Errorf("delivery: generate DKIM key: %w", err)
	}
	return newKey(selector, key)
}

// DNSRecord returns the TXT record value to publish at
// selector._domainkey.domain: the SubjectPublicKeyInfo for RSA, the raw 32
// bytes for Ed25519 (RFC 8463 section 4.2). Long values must be split into
// several strings of at most 255 octets in the zone file.
func (k Key) DNSRecord() string {
	switch pub := k.Signer.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return ""
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	default:
		return ""
	}
}

// Algorithm returns the DKIM a= value for k: "rsa-sha256" or
// "ed25519-sha256" ("" for an unsupported key).
func (k Key) Algorithm() string {
	switch k.Signer.Public().(type) {
	case *rsa.PublicKey:
		return "rsa-sha256"
	case ed25519.PublicKey:
		return "ed25519-sha256"
	default:
		return ""
	}
}

// signedHeaders is the h= list. A name listed once more than it occurs is
// over-signed: a verifier then treats a field of that name added later as
// part of the signature, so adding one breaks it (RFC 6376 section 8.15).
// Fields Build never writes (Cc, Reply-To, ...) are listed once so that they
// cannot be added either. RFC 8058 section 4 requires List-Unsubscribe and
// List-Unsubscribe-Post to be signed.
func signedHeaders() []string {
	return []string{
		"From", "From", "To", "To", "Subject", "Subject", "Date", "Date",
		"Message-ID", "Message-ID", "Content-Type", "Content-Type",
		"MIME-Version", "MIME-Version", "Content-Transfer-Encoding", "Content-Transfer-Encoding",
		"Auto-Submitted", "Auto-Submitted",
		"List-Unsubscribe", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Unsubscribe-Post",
		"Reply-To", "Cc", "Sender", "In-Reply-To", "References",
	}
}

// Signer adds one DKIM-Signature per key to a message: relaxed/relaxed
// canonicalization, SHA-256, no body length limit (l=). It is immutable after
// [NewSigner] and safe for concurrent use.
type Signer struct {
	opts []*dkim.SignOptions
}

// NewSigner returns a Signer for domain (the d= tag). Each key adds its own
// signature, which allows dual RSA and Ed25519 signing (RFC 8463 section 6)
// and rotation (old and new selector side by side).
func NewSigner(domain string, keys []Key) (*Signer, error) {
	if !isHostname(domain) {
		return nil, fmt.Errorf("delivery: DKIM domain %q: want an ASCII host name", domain)
	}
	if len(keys) == 0 {
		return nil, errors.New("delivery: DKIM: no keys")
	}
	s := &Signer{}
	seen := make(map[string]bool, len(keys))
	hk := signedHeaders()
	for _, k := range keys {
		if k.Signer == nil {
			return nil, fmt.Errorf("delivery: DKIM selector %q: no key", k.Selector)
		}
		if err := checkSigner(k.Signer); err != nil {
			return nil, fmt.Errorf("delivery: DKIM selector %q: %w", k.Selector, err)
		}
		if !isHostname(k.Selector) {
			return nil, fmt.Errorf("delivery: DKIM selector %q: want DNS labels", k.Selector)
		}
		if seen[k.Selector] {
			return nil, fmt.Errorf("delivery: DKIM selector %q given twice", k.Selector)
		}
		seen[k.Selector] = true
		s.opts = append(s.opts, &dkim.SignOptions{
			Domain:                 domain,
			Selector:               k.Selector,
			Signer:                 k.Signer,
			Hash:                   crypto.SHA256,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             hk,
		})
	}
	return s, nil
}

// Sign returns msg with the DKIM-Signature fields prepended, one per key in
// the order the keys were given. msg must be a complete message with CRLF
// line endings, as [Build] returns.
func (s *Signer) Sign(msg []byte) ([]byte, error) {
	sigs := make([]string, len(s.opts))
	size := len(msg)
	for i, o := range s.opts {
		sig, err := signOne(o, msg)
		if err != nil {
			return nil, fmt.Errorf("delivery: DKIM sign (selector %s): %w", o.Selector, err)
		}
		sigs[i] = sig
		size += len(sig)
	}
	out := make([]byte, 0, size)
	for _, sig := range sigs {
		out = append(out, sig...)
	}
	return append(out, msg...), nil
}

func signOne(o *dkim.SignOptions, msg []byte) (string, error) {
	ds, err := dkim.NewSigner(o)
	if err != nil {
		return "", err
	}
	if _, err := ds.Write(msg); err != nil {
		_ = ds.Close()
		return "", err
	}
	if err := ds.Close(); err != nil {
		return "", err
	}
	return ds.Signature(), nil
}
